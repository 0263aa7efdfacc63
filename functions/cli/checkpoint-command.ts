/**
 * `ccexport history` and `ccexport checkpoint`: DET's `commcare-export-utils history` and
 * `set-checkpoint-key`, for every output that keeps checkpoints: a PostgreSQL database (a
 * `postgresql://` URL, DET's SQLAlchemy spellings included, or the folder of the embedded database), and a
 * folder or `s3://bucket/prefix` of files. The same flags and the same printout for each; the work is done
 * by functions/checkpoints/admin.ts.
 *
 * `history` lists our checkpoints (one per key, project and data source: the tables, the `indexed_on`
 * the next run starts from, when, which run), DET's rows where DET has written to the database
 * (`commcare_export_runs`, one per table and batch), and, for file outputs, the runs (their manifests).
 * `checkpoint` moves the checkpoints of a key to a new key (a query file edited on purpose keeps its
 * place) or removes them (`--reset`: the next run exports everything): ours and DET's rows alike unless
 * `--only` says which, so that "reset" means a full export for either tool. Removed DET rows are printed
 * in full, so they can be put back by hand.
 */
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type {
  CheckpointAdmin,
  CheckpointEntry,
  CheckpointOwners,
  DetRunEntry,
  HistoryFilter,
  RunEntry,
} from '../checkpoints/admin';
import {
  booleanFlag,
  commandFlags,
  type FlagSpec,
  integerFlag,
  type ParsedFlags,
  stringFlag,
  UsageError,
} from './args';
import type { CommandIO } from './io';

const COMMON: readonly FlagSpec[] = [
  { name: 'help', kind: 'boolean', help: 'print this help' },
  {
    name: 'output',
    kind: 'string',
    help: 'what the runs wrote to: postgresql://... (or a SQLAlchemy postgresql+driver:// URL), the folder of the embedded database, or a folder or s3://bucket/prefix of files',
  },
  {
    name: 'output-format',
    kind: 'string',
    help: '"sql" when --output is the folder of the embedded database (found by itself when it holds one)',
  },
  { name: 'project', kind: 'string', help: 'only this project', defaultText: 'every project' },
  { name: 'query', kind: 'string', help: "the query file: its MD5 is the checkpoint key (DET's rule)" },
  { name: 'checkpoint-key', kind: 'string', help: 'the checkpoint key (instead of --query)' },
  {
    name: 'commcare-hq',
    kind: 'string',
    help: "only DET's rows of this HQ (as DET was given it: prod, or a URL); ours do not record it",
    defaultText: 'every HQ',
  },
];

const HISTORY_FLAGS: readonly FlagSpec[] = [
  ...COMMON,
  {
    name: 'limit',
    kind: 'string',
    help: 'at most this many rows per list, newest first',
    defaultText: 'all',
  },
];

const CHECKPOINT_FLAGS: readonly FlagSpec[] = [
  ...COMMON,
  { name: 'to-key', kind: 'string', help: 'move the checkpoints to this key' },
  { name: 'reset', kind: 'boolean', help: 'remove the checkpoints: the next run exports everything' },
  {
    name: 'only',
    kind: 'string',
    help: '"ours" (commcare_export_checkpoints, or checkpoints/ of a file output) or "det" (DET\'s commcare_export_runs rows)',
    defaultText: 'both',
  },
];

async function checkpointKeyOf(flags: ParsedFlags): Promise<string | undefined> {
  const key = stringFlag(flags, 'checkpoint-key');
  const query = stringFlag(flags, 'query');
  if (key !== undefined && query !== undefined)
    throw new UsageError('give --query or --checkpoint-key, not both');
  if (query !== undefined)
    return createHash('md5')
      .update(await readFile(query))
      .digest('hex');
  return key;
}

/** File names that are one file of a format (`reports.zip`, `report.xlsx`, ...): DET's outputs. */
const SINGLE_FILE = /\.(zip|xlsx|xls|json|md|markdown)$/i;

/** Opens the checkpoints of `--output`, of whichever kind it is. */
async function openAdmin(flags: ParsedFlags, io: CommandIO): Promise<CheckpointAdmin> {
  const output = stringFlag(flags, 'output');
  if (!output) throw new UsageError('--output is required: what the runs wrote to');
  const format = stringFlag(flags, 'output-format');
  if (format !== undefined && format !== 'sql')
    throw new UsageError(
      `--output-format here only says "sql" (the folder of the embedded database); a ${format} output is found from --output`,
    );
  const { databaseUrl } = await import('./run-command');
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(output)?.[1]?.toLowerCase();
  const { exportLockId } = await import('../sinks/postgres/sink');
  const { ObjectCheckpointAdmin, SqlCheckpointAdmin } = await import('../checkpoints/admin');
  if (scheme !== undefined && scheme !== 's3') {
    const url = databaseUrl('sql', output);
    if (!/^postgres(ql)?:\/\//i.test(url))
      throw new UsageError(
        `--output ${scheme}://... is neither a PostgreSQL database nor an s3:// prefix: no checkpoints there`,
      );
    const { connectPostgres } = await import('../sinks/postgres/connection');
    return new SqlCheckpointAdmin(await connectPostgres(url), exportLockId);
  }
  const { objectStoreFor, readManifests, openEmbeddedDatabase } = await import('../sinks');
  if (scheme === 's3') {
    const { s3ClientFor } = await import('./run-command');
    return new ObjectCheckpointAdmin(await objectStoreFor(output, { s3Client: await s3ClientFor(io.env) }), {
      readManifests,
    });
  }
  const { resolve } = await import('node:path');
  const path = resolve(io.cwd, output);
  const { EMBEDDED_DATA_DIR } = await import('../sinks/embedded');
  const embedded = existsSync(join(path, EMBEDDED_DATA_DIR));
  if (format === 'sql' || embedded) {
    if (!embedded)
      throw new UsageError(`${output} holds no embedded database (no ${EMBEDDED_DATA_DIR}/ in it)`);
    return new SqlCheckpointAdmin(await openEmbeddedDatabase(path), exportLockId);
  }
  if (!existsSync(path)) throw new UsageError(`${output} does not exist`);
  if (!statSync(path).isDirectory() && SINGLE_FILE.test(path))
    throw new UsageError(
      `${output} is a single file: it keeps no checkpoints (every run writes the whole export, as in DET)`,
    );
  if (!statSync(path).isDirectory()) throw new UsageError(`${output} is a file, not an output folder`);
  return new ObjectCheckpointAdmin(await objectStoreFor(path), { readManifests });
}

function formatTable(headings: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headings.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return `${[line(headings), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')}\n`;
}

function oursTable(rows: readonly CheckpointEntry[]): string {
  return formatTable(
    ['checkpoint key', 'project', 'tables', 'data source', 'indexed_on', 'written at', 'run', 'config'],
    rows.map((r) => [
      r.checkpointKey,
      r.project,
      r.tables.join(', '),
      r.dataSource,
      r.indexedOn ?? '',
      r.writtenAt,
      r.runId,
      // An HQ export's config fingerprint at that commit; CLI and AWS runs record it alike.
      r.configFingerprint ?? '',
    ]),
  );
}

function detTable(rows: readonly DetRunEntry[]): string {
  return formatTable(
    [
      'checkpoint key',
      'project',
      'table',
      'query file',
      'since',
      'run at',
      'final',
      'mode',
      'commcare',
      'id',
    ],
    rows.map((r) => [
      r.checkpointKey,
      r.project ?? '',
      r.table ?? '',
      r.queryFileName ?? '',
      r.sinceParam ?? '',
      r.timeOfRun ?? '',
      r.final === null ? '' : String(r.final),
      r.paginationMode ?? '',
      r.commcare ?? '',
      r.id,
    ]),
  );
}

function runsTable(rows: readonly RunEntry[]): string {
  return formatTable(
    ['run', 'checkpoint key', 'project', 'kind', 'started at', 'complete', 'rows', 'config'],
    rows.map((r) => [
      r.runId,
      r.checkpointKey,
      r.project,
      r.kind,
      r.startedAt,
      String(r.complete),
      Object.entries(r.rows)
        .map(([table, n]) => `${table} ${n}`)
        .join(', '),
      r.configFingerprint ?? '',
    ]),
  );
}

function filterOf(flags: ParsedFlags, checkpointKey: string | undefined): HistoryFilter {
  const project = stringFlag(flags, 'project');
  const commcareHq = stringFlag(flags, 'commcare-hq');
  return {
    ...(checkpointKey !== undefined ? { checkpointKey } : {}),
    ...(project !== undefined ? { project } : {}),
    ...(commcareHq !== undefined ? { commcareHq } : {}),
  };
}

export async function runHistoryCommand(argv: string[], io: CommandIO): Promise<number> {
  const flags = commandFlags(
    argv,
    HISTORY_FLAGS,
    "ccexport history: the checkpoints (ours and DET's) and runs of an output (PostgreSQL, folder or S3)",
    io.stdout,
  );
  if (flags === null) return 0;
  const limit = integerFlag(flags, 'limit', 1, 1_000_000) ?? Number.POSITIVE_INFINITY;
  const filter = filterOf(flags, await checkpointKeyOf(flags));
  const admin = await openAdmin(flags, io);
  try {
    const ours = await admin.listOurs(filter);
    if (ours === null) io.stdout.write(`No checkpoints of ours (${admin.oursLocation} does not exist).\n`);
    else {
      io.stdout.write(`Checkpoints (${admin.oursLocation}):\n`);
      io.stdout.write(oursTable(ours.slice(0, limit)));
    }
    const det = await admin.listDet(filter);
    if (det !== null) {
      io.stdout.write("\nDET's checkpoints (commcare_export_runs, newest first):\n");
      io.stdout.write(detTable(det.slice(0, limit)));
    }
    const runs = await admin.listRuns(filter);
    if (runs !== null) {
      io.stdout.write('\nRuns (manifests/, newest first):\n');
      io.stdout.write(runsTable(runs.slice(0, limit)));
    }
  } finally {
    await admin.close();
  }
  return 0;
}

export async function runCheckpointCommand(argv: string[], io: CommandIO): Promise<number> {
  const flags = commandFlags(
    argv,
    CHECKPOINT_FLAGS,
    "ccexport checkpoint: move the checkpoints of a key (ours and DET's) to a new key, or reset them",
    io.stdout,
  );
  if (flags === null) return 0;
  const key = await checkpointKeyOf(flags);
  if (key === undefined) throw new UsageError('checkpoint needs --query FILE or --checkpoint-key KEY');
  const project = stringFlag(flags, 'project');
  if (project === undefined) throw new UsageError('checkpoint needs --project');
  const toKey = stringFlag(flags, 'to-key');
  const reset = booleanFlag(flags, 'reset');
  if ((toKey === undefined) === !reset) throw new UsageError('give one of --to-key KEY or --reset');
  if (toKey === key) throw new UsageError(`--to-key is the key the checkpoints already have (${key})`);
  const only = stringFlag(flags, 'only');
  if (only !== undefined && only !== 'ours' && only !== 'det')
    throw new UsageError(`--only expects "ours" or "det" (got "${only}")`);
  const owners: CheckpointOwners = (only as CheckpointOwners | undefined) ?? 'all';
  const commcareHq = stringFlag(flags, 'commcare-hq');
  const admin = await openAdmin(flags, io);
  const { CheckpointChangeError } = await import('../checkpoints/admin');
  const { ConcurrentRunError } = await import('../sinks/errors');
  try {
    const detKept = owners === 'ours' ? await admin.listDet({ checkpointKey: key, project }) : null;
    let result: Awaited<ReturnType<CheckpointAdmin['change']>>;
    try {
      result = await admin.change({
        checkpointKey: key,
        project,
        owners,
        ...(toKey !== undefined ? { toKey } : {}),
        ...(commcareHq !== undefined ? { commcareHq } : {}),
      });
    } catch (error) {
      if (!(error instanceof CheckpointChangeError) && !(error instanceof ConcurrentRunError)) throw error;
      io.stderr.write(`ccexport: ${(error as Error).message}\n`);
      return 1;
    }
    if (result.ours.length === 0 && result.det.length === 0) {
      const where =
        owners === 'det' ? "DET's rows" : owners === 'ours' ? 'checkpoints of ours' : 'checkpoint';
      io.stderr.write(`ccexport: no ${where} of key "${key}" for project ${project}\n`);
      return 1;
    }
    const verb = toKey !== undefined ? 'Moved' : 'Removed';
    const to = toKey !== undefined ? ` to key ${toKey}` : '';
    if (result.ours.length > 0) {
      io.stdout.write(
        `${verb} ${result.ours.length} checkpoint(s) of ours (${admin.oursLocation}) of project ${project}, key ${key}${to}:\n`,
      );
      io.stdout.write(oursTable(result.ours));
    }
    if (result.det.length > 0) {
      io.stdout.write(
        `${verb} ${result.det.length} of DET's rows (commcare_export_runs) of project ${project}, key ${key}${to}` +
          (toKey !== undefined ? ` (DET continues from them with --checkpoint-key ${toKey}):\n` : ':\n'),
      );
      io.stdout.write(detTable(result.det));
    }
    if (toKey === undefined) {
      io.stdout.write(
        detKept && detKept.length > 0
          ? `DET's rows of this key are kept (--only ours): the next run takes DET's checkpoint over (run it with --start-over to export everything).\n`
          : 'The next run exports everything.\n',
      );
    }
  } finally {
    await admin.close();
  }
  return 0;
}

/**
 * `ccexport history` and `ccexport checkpoint`: DET's `commcare-export-utils history` and
 * `set-checkpoint-key`, for PostgreSQL outputs. `history` lists the checkpoints of the database, ours
 * (`commcare_export_checkpoints`: one per checkpoint key, project and data source, the last committed
 * position) and DET's (`commcare_export_runs`: the latest row per key, project and table), so a DET
 * warehouse shows what a run would take over. `checkpoint` moves our checkpoints of one key to a new key
 * (a query file edited on purpose keeps its place) or removes them (`--reset`: the next run pulls
 * everything). DET's own rows are only read: DET keeps working on them, and `--reset` says when the next
 * run would take DET's checkpoint over again (`--start-over` pulls everything regardless).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { CHECKPOINT_TABLE } from '../checkpoints/postgres';
import type { SqlConnection } from '../sinks/postgres/connection';
import { qualified } from '../sinks/postgres/naming';
import { DET_CHECKPOINT_TABLE } from '../sinks/postgres/reserved';
import { booleanFlag, type FlagSpec, formatHelp, parseArgs, stringFlag, UsageError } from './args';
import type { CommandIO } from './io';

const SCHEMA = 'public';

const COMMON: readonly FlagSpec[] = [
  { name: 'help', kind: 'boolean', help: 'print this help' },
  { name: 'output', kind: 'string', help: 'the PostgreSQL database the runs wrote to (postgresql://...)' },
  { name: 'project', kind: 'string', help: 'only this project', defaultText: 'every project' },
  { name: 'query', kind: 'string', help: "the query file: its MD5 is the checkpoint key (DET's rule)" },
  { name: 'checkpoint-key', kind: 'string', help: 'the checkpoint key (instead of --query)' },
];

const CHECKPOINT_FLAGS: readonly FlagSpec[] = [
  ...COMMON,
  { name: 'to-key', kind: 'string', help: 'move the checkpoints to this key' },
  { name: 'reset', kind: 'boolean', help: 'remove the checkpoints: the next run exports everything' },
];

async function checkpointKeyOf(flags: ReturnType<typeof parseArgs>['flags']): Promise<string | undefined> {
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

async function openDatabase(output: string | undefined): Promise<SqlConnection> {
  if (!output || !/^postgres(ql)?(\+[a-z0-9]+)?:\/\//i.test(output)) {
    throw new UsageError('--output must be the PostgreSQL database the runs wrote to (postgresql://...)');
  }
  const { connectPostgres } = await import('../sinks/postgres/connection');
  return connectPostgres(output.replace(/^postgres(ql)?\+[a-z0-9]+:\/\//i, 'postgresql://'));
}

async function tableExists(db: SqlConnection, table: string): Promise<boolean> {
  const { rows } = await db.query<{ name: string | null }>('SELECT to_regclass($1) AS name', [
    qualified(SCHEMA, table),
  ]);
  return Boolean(rows[0]?.name);
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

export async function runHistoryCommand(argv: string[], io: CommandIO): Promise<number> {
  const { flags, positionals } = parseArgs(argv, COMMON);
  if (booleanFlag(flags, 'help')) {
    io.stdout.write(
      formatHelp("ccexport history: the checkpoints of a PostgreSQL output, ours and DET's", COMMON),
    );
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const key = await checkpointKeyOf(flags);
  const project = stringFlag(flags, 'project');
  const db = await openDatabase(stringFlag(flags, 'output'));
  try {
    if (await tableExists(db, CHECKPOINT_TABLE)) {
      const { rows } = await db.query<{
        checkpoint_key: string;
        project: string;
        data_source: string;
        tables: string[] | string;
        position: { indexedOn: string | null } | string;
        written_at: Date | string;
        run_id: string | null;
      }>(
        `SELECT checkpoint_key, project, data_source, tables, position, written_at, run_id
           FROM ${qualified(SCHEMA, CHECKPOINT_TABLE)}
          WHERE ($1::text IS NULL OR checkpoint_key = $1) AND ($2::text IS NULL OR project = $2)
          ORDER BY written_at DESC, checkpoint_key, project, data_source`,
        [key ?? null, project ?? null],
      );
      io.stdout.write(`Checkpoints (${CHECKPOINT_TABLE}):\n`);
      io.stdout.write(
        formatTable(
          ['checkpoint key', 'project', 'tables', 'data source', 'indexed_on', 'written at', 'run'],
          rows.map((r) => {
            const tables = typeof r.tables === 'string' ? (JSON.parse(r.tables) as string[]) : r.tables;
            const position = typeof r.position === 'string' ? JSON.parse(r.position) : r.position;
            const at = r.written_at instanceof Date ? r.written_at.toISOString() : String(r.written_at);
            return [
              r.checkpoint_key,
              r.project,
              tables.join(', '),
              r.data_source,
              position.indexedOn ?? '',
              at,
              r.run_id ?? '',
            ];
          }),
        ),
      );
    } else {
      io.stdout.write(`No checkpoints of ours (${CHECKPOINT_TABLE} does not exist).\n`);
    }
    if (await tableExists(db, DET_CHECKPOINT_TABLE)) {
      const { rows } = await db.query<Record<string, string | boolean | null>>(
        `SELECT DISTINCT ON (coalesce(key, query_file_md5), project, table_name)
                coalesce(key, query_file_md5) AS checkpoint_key, project, table_name, query_file_name,
                since_param, time_of_run, final, pagination_mode
           FROM ${qualified(SCHEMA, DET_CHECKPOINT_TABLE)}
          WHERE ($1::text IS NULL OR key = $1 OR (key IS NULL AND query_file_md5 = $1))
            AND ($2::text IS NULL OR project = $2)
          ORDER BY coalesce(key, query_file_md5), project, table_name, time_of_run DESC NULLS LAST`,
        [key ?? null, project ?? null],
      );
      io.stdout.write(
        `\nDET's checkpoints (${DET_CHECKPOINT_TABLE}, the latest per key, project and table):\n`,
      );
      io.stdout.write(
        formatTable(
          ['checkpoint key', 'project', 'table', 'query file', 'since', 'run at', 'final', 'mode'],
          rows.map((r) => [
            String(r.checkpoint_key ?? ''),
            String(r.project ?? ''),
            String(r.table_name ?? ''),
            String(r.query_file_name ?? ''),
            String(r.since_param ?? ''),
            String(r.time_of_run ?? ''),
            r.final === null ? '' : String(r.final),
            String(r.pagination_mode ?? ''),
          ]),
        ),
      );
    }
  } finally {
    await db.close();
  }
  return 0;
}

export async function runCheckpointCommand(argv: string[], io: CommandIO): Promise<number> {
  const { flags, positionals } = parseArgs(argv, CHECKPOINT_FLAGS);
  if (booleanFlag(flags, 'help')) {
    io.stdout.write(
      formatHelp(
        'ccexport checkpoint: move the checkpoints of a key to a new key, or reset them',
        CHECKPOINT_FLAGS,
      ),
    );
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const key = await checkpointKeyOf(flags);
  if (key === undefined) throw new UsageError('checkpoint needs --query FILE or --checkpoint-key KEY');
  const project = stringFlag(flags, 'project');
  if (project === undefined) throw new UsageError('checkpoint needs --project');
  const toKey = stringFlag(flags, 'to-key');
  const reset = booleanFlag(flags, 'reset');
  if ((toKey === undefined) === !reset) throw new UsageError('give one of --to-key KEY or --reset');
  const db = await openDatabase(stringFlag(flags, 'output'));
  try {
    if (!(await tableExists(db, CHECKPOINT_TABLE))) {
      io.stderr.write(
        `ccexport: no checkpoints of ours in this database (${CHECKPOINT_TABLE} does not exist)\n`,
      );
      return 1;
    }
    const table = qualified(SCHEMA, CHECKPOINT_TABLE);
    let changed: number;
    await db.query('BEGIN');
    try {
      if (toKey !== undefined) {
        const taken = await db.query(
          `SELECT 1 FROM ${table} WHERE checkpoint_key = $1 AND project = $2 LIMIT 1`,
          [toKey, project],
        );
        if (taken.rows.length > 0) {
          throw new UsageError(
            `key "${toKey}" already has checkpoints for project ${project}; reset it first`,
          );
        }
        changed =
          (
            await db.query(
              `UPDATE ${table} SET checkpoint_key = $1 WHERE checkpoint_key = $2 AND project = $3`,
              [toKey, key, project],
            )
          ).rowCount ?? 0;
      } else {
        changed =
          (await db.query(`DELETE FROM ${table} WHERE checkpoint_key = $1 AND project = $2`, [key, project]))
            .rowCount ?? 0;
      }
      await db.query('COMMIT');
      if (changed === 0) {
        io.stderr.write(`ccexport: no checkpoint of key "${key}" for project ${project}\n`);
        return 1;
      }
    } catch (error) {
      await db.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
    if (toKey !== undefined) {
      io.stdout.write(`Moved ${changed} checkpoint(s) of project ${project} from key ${key} to ${toKey}.\n`);
      return 0;
    }
    const det =
      (await tableExists(db, DET_CHECKPOINT_TABLE)) &&
      (
        await db.query(
          `SELECT 1 FROM ${qualified(SCHEMA, DET_CHECKPOINT_TABLE)}
            WHERE project = $1 AND (key = $2 OR (key IS NULL AND query_file_md5 = $2)) LIMIT 1`,
          [project, key],
        )
      ).rows.length > 0;
    io.stdout.write(
      `Removed ${changed} checkpoint(s) of project ${project}, key ${key}: ` +
        (det
          ? `the next run takes over DET's checkpoints of this key in ${DET_CHECKPOINT_TABLE} (run it with --start-over to export everything).\n`
          : 'the next run exports everything.\n'),
    );
  } finally {
    await db.close();
  }
  return 0;
}

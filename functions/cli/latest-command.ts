/**
 * `ccexport latest --output OUT`: the current state of every table of a folder or S3 output, one
 * consolidated file per table (`OUT/latest/<table>.<ext>`), so an xlsx or csv user gets "the current
 * table" without reassembling runs. The rule (newest version per id, deleted rows left out) is the
 * one the Athena `<table>_latest` views apply; see functions/sinks/latest.ts.
 */
import { commandFlags, type FlagSpec, stringFlag, UsageError } from './args';
import type { CommandIO } from './io';

const FORMATS = ['csv', 'xlsx', 'json', 'markdown', 'parquet'] as const;

const FLAGS: readonly FlagSpec[] = [
  { name: 'help', kind: 'boolean', help: 'print this help' },
  { name: 'output', kind: 'string', help: "the export's folder or s3://bucket/prefix (what runs wrote to)" },
  {
    name: 'output-format',
    kind: 'string',
    help: `format of the consolidated files: ${FORMATS.join(', ')}`,
    defaultText: 'the format the runs wrote',
  },
  {
    name: 'to',
    kind: 'string',
    help: 'write latest/<table>.<ext> under this folder or s3:// prefix instead',
    defaultText: 'the --output',
  },
  { name: 'table', kind: 'list', help: 'only this table (repeatable)', defaultText: 'every table' },
];

export async function runLatestCommand(argv: string[], io: CommandIO): Promise<number> {
  const flags = commandFlags(
    argv,
    FLAGS,
    'ccexport latest: one consolidated file per table of an export',
    io.stdout,
  );
  if (flags === null) return 0;
  const output = stringFlag(flags, 'output');
  if (!output) throw new UsageError('latest needs --output: the folder or s3:// prefix the runs wrote to');
  const formatName = stringFlag(flags, 'output-format');
  if (formatName !== undefined && !(FORMATS as readonly string[]).includes(formatName)) {
    throw new UsageError(`--output-format expects one of ${FORMATS.join(', ')} (got "${formatName}")`);
  }
  const to = stringFlag(flags, 'to');
  const tables = flags.table;
  const { fileFormat, objectStoreFor, writeLatestTables } = await import('../sinks');
  const needsS3 = output.startsWith('s3://') || to?.startsWith('s3://');
  const s3Client = needsS3 ? await (await import('./run-command')).s3ClientFor(io.env) : undefined;
  const source = await objectStoreFor(output, s3Client ? { s3Client } : {});
  const target = to ? await objectStoreFor(to, s3Client ? { s3Client } : {}) : source;
  const results = await writeLatestTables({
    source,
    target,
    ...(formatName ? { format: await fileFormat(formatName as (typeof FORMATS)[number]) } : {}),
    ...(Array.isArray(tables) ? { tables } : {}),
  });
  for (const r of results) {
    io.stdout.write(
      `${r.table}: ${r.rows} rows (of ${r.versions} versions; ${r.deleted} deleted) -> ${r.uri}\n`,
    );
  }
  return 0;
}

/**
 * Entry point of the sinks. The implementations are loaded when `createSink` needs them: the AWS
 * SDK, node-postgres and PGlite together add tens of MB to a process, and one run writes one output.
 */
import { sep } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { SinkConfigError } from './errors';
import type { RunManifest } from './file-sink';
import type { FileFormat } from './formats/types';
import type { SqlConnection } from './postgres/connection';
import type { ObjectStore } from './store/types';
import type { ExportSink, OutputFormat, SinkOptions } from './types';

export * from './errors';
export type { FileSink, ManifestObject, RunManifest } from './file-sink';
export type { SqlConnection } from './postgres/connection';
export { pgSettings, tlsOptions } from './postgres/connection';
export type { PostgresSink } from './postgres/sink';
export type { ObjectStore } from './store/types';
export * from './types';

const FORMATS = ['csv', 'xlsx', 'json', 'markdown', 'parquet', 'sql'] as const;

function isPostgresUrl(output: string): boolean {
  return /^postgres(ql)?:\/\//i.test(output);
}

/**
 * Opens (creating if needed) the embedded PostgreSQL (PGlite) kept in `folder`, for the `sql` output
 * with a folder path and for printing queries over it. Close it to release the folder.
 */
export async function openEmbeddedDatabase(folder: string): Promise<SqlConnection> {
  return (await import('./embedded')).openEmbeddedDatabase(folder);
}

/** Every run manifest under the output, oldest first (by `startedAt`, then run id). */
export async function readManifests(store: ObjectStore): Promise<RunManifest[]> {
  return (await import('./file-sink')).readManifests(store);
}

/** The folder or S3 prefix of a file output, for reading manifests and checkpoints outside a run. */
export async function objectStoreFor(
  output: string,
  options: Pick<SinkOptions, 's3Client' | 'partSizeBytes'> = {},
): Promise<ObjectStore> {
  if (output.startsWith('s3://')) {
    const [{ S3ObjectStore }, client] = await Promise.all([
      import('./store/s3'),
      options.s3Client ?? import('@aws-sdk/client-s3').then(({ S3Client: Client }) => new Client({})),
    ]);
    return new S3ObjectStore(client as S3Client, output, {
      ...(options.partSizeBytes ? { partSizeBytes: options.partSizeBytes } : {}),
    });
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(output)) {
    throw new SinkConfigError(
      `Expected a folder path or s3://bucket/prefix, received a URL starting with "${output.split('://')[0]}://"`,
    );
  }
  const { LocalObjectStore } = await import('./store/local');
  return new LocalObjectStore(output);
}

/** The file extensions that make `--output` one file of a format (DET's outputs) rather than a folder. */
const SINGLE_FILE_EXTENSIONS: Readonly<Record<FileFormat['name'], readonly string[]>> = {
  csv: ['.zip'],
  xlsx: ['.xlsx', '.xls'],
  json: ['.json'],
  markdown: ['.md', '.markdown'],
  // DET has no Parquet output, so no single-file form: a Parquet output is always a folder or prefix.
  parquet: [],
};

/**
 * True when `output` names one file rather than a folder or prefix: `-` (standard output), or a name
 * ending in the format's extension (`reports.zip` for csv, `.xlsx`/`.xls`, `.json`, `.md`), as DET
 * writes them. Such an output is a full export every run, as in DET.
 */
export function isSingleFileOutput(format: OutputFormat, output: string): boolean {
  if (format === 'sql') return false;
  if (output === '-') return true;
  const lower = output.toLowerCase();
  return SINGLE_FILE_EXTENSIONS[format].some((ext) => lower.endsWith(ext) && lower.length > ext.length);
}

async function singleFileSink(options: SinkOptions, format: FileFormat): Promise<ExportSink> {
  const { SingleFileSink } = await import('./single-file');
  const maxRows = options.xlsxMaxRowsPerSheet;
  const sinkOptions = maxRows !== undefined ? { maxRowsPerSheet: maxRows } : {};
  if (options.output === '-') {
    return new SingleFileSink(
      format,
      { kind: 'stream', stream: options.stdout ?? process.stdout },
      sinkOptions,
    );
  }
  const cut = options.output.replace(/\/+$/, '');
  const slash = Math.max(cut.lastIndexOf('/'), cut.lastIndexOf(sep));
  const folder = slash >= 0 ? cut.slice(0, slash) : '.';
  const key = cut.slice(slash + 1);
  // `s3://bucket/key.zip` is the object `key.zip` under the prefix `s3://bucket`.
  const store = await objectStoreFor(folder, options);
  return new SingleFileSink(format, { kind: 'object', store, key }, sinkOptions);
}

/**
 * Writes the current state of each table of a folder or S3 output (one row per id, the newest
 * version, deleted rows left out) as `latest/<table>.<ext>`; see `latest.ts`.
 */
export async function writeLatestTables(
  options: Omit<import('./latest').LatestOptions, 'loadFormat'>,
): Promise<import('./latest').LatestTable[]> {
  return (await import('./latest')).writeLatest({ ...options, loadFormat: fileFormat });
}

export async function fileFormat(name: FileFormat['name']): Promise<FileFormat> {
  switch (name) {
    case 'csv':
      return (await import('./formats/csv')).csvFormat;
    case 'xlsx':
      return (await import('./formats/xlsx')).xlsxFormat;
    case 'json':
      return (await import('./formats/json')).jsonFormat;
    case 'markdown':
      return (await import('./formats/markdown')).markdownFormat;
    case 'parquet':
      return (await import('./formats/parquet')).parquetFormat;
  }
}

/**
 * The target of `ccexport reconcile`: the PostgreSQL database (server or embedded folder) of a `sql`
 * output, or the folder or S3 prefix of a csv, json, xlsx or parquet output (deletion records, see
 * `file-reconcile.ts`). DET's single-file outputs and markdown cannot be read back, so not reconciled.
 */
export async function openReconcileTarget(
  options: Pick<SinkOptions, 'format' | 'output' | 'database' | 'schema' | 's3Client' | 'keepLatest'> & {
    readonly sortBudgetBytes?: number;
  },
): Promise<import('../export/reconcile').ReconcileTarget> {
  if (options.format !== 'sql') {
    if (
      options.format === 'markdown' ||
      isSingleFileOutput(options.format, options.output) ||
      isPostgresUrl(options.output)
    )
      throw new SinkConfigError(
        `reconcile compares ids with a PostgreSQL output or the runs of a csv, json, xlsx or parquet folder or s3:// prefix; "${options.output}" as ${options.format} is not one`,
      );
    const [store, { FileReconcileTarget }] = await Promise.all([
      objectStoreFor(options.output, options),
      import('./file-reconcile'),
    ]);
    return new FileReconcileTarget(store, {
      ...(options.sortBudgetBytes !== undefined ? { sortBudgetBytes: options.sortBudgetBytes } : {}),
      ...(options.keepLatest ? { keepLatest: true, loadFormat: fileFormat } : {}),
    });
  }
  const { PostgresReconcileTarget } = await import('./postgres/reconcile');
  const schema = options.schema !== undefined ? { schema: options.schema } : {};
  const server = options.database ?? (isPostgresUrl(options.output) ? options.output : undefined);
  if (server !== undefined) {
    const { connectPostgres, pgSettings } = await import('./postgres/connection');
    return new PostgresReconcileTarget(() => connectPostgres(server), {
      ...schema,
      description: pgSettings(server).description,
    });
  }
  return new PostgresReconcileTarget(() => openEmbeddedDatabase(options.output), {
    ...schema,
    description: `the embedded database in ${options.output}`,
  });
}

/**
 * The target of a reconcile in slices (the scheduled reconcile of an S3 export): the ids each slice lists
 * are staged as sorted runs under `_reconcile/` in the output itself (`file-reconcile-staging.ts`), and
 * the last slice compares them as `ccexport reconcile` does. csv, json, xlsx and parquet outputs.
 */
export async function openStagedFileReconcileTarget(
  options: Pick<SinkOptions, 'format' | 'output' | 's3Client' | 'keepLatest'> &
    Omit<import('./file-reconcile-staging').StagedFileReconcileOptions, 'keepLatest' | 'loadFormat'>,
): Promise<import('./file-reconcile-staging').StagedFileReconcileTarget> {
  if (options.format === 'markdown' || options.format === 'sql')
    throw new SinkConfigError(
      `reconcile in slices reads back csv, json, xlsx or parquet files; "${options.output}" is ${options.format}`,
    );
  const { format: _format, output, s3Client: _client, keepLatest, ...rest } = options;
  const [store, { StagedFileReconcileTarget }] = await Promise.all([
    objectStoreFor(output, options),
    import('./file-reconcile-staging'),
  ]);
  return new StagedFileReconcileTarget(store, {
    ...rest,
    ...(keepLatest ? { keepLatest: true, loadFormat: fileFormat } : {}),
  });
}

/**
 * Builds the sink for an output: files (csv, xlsx, json, markdown) in a folder or under
 * `s3://bucket/prefix`; `sql` to a PostgreSQL server (`postgresql://` URL or `database`) or, with a
 * folder path, to an embedded PostgreSQL (PGlite) in that folder.
 */
export async function createSink(options: SinkOptions): Promise<ExportSink> {
  if (!FORMATS.includes(options.format)) {
    throw new SinkConfigError(
      `output format must be one of ${FORMATS.join(', ')}, received "${options.format}"`,
    );
  }
  if (
    options.keepLatest &&
    (options.format === 'markdown' ||
      options.format === 'sql' ||
      isSingleFileOutput(options.format, options.output))
  ) {
    throw new SinkConfigError(
      'latest/ snapshots are kept for csv, xlsx, json and parquet outputs to a folder or s3:// prefix only',
    );
  }
  if (options.format === 'sql') {
    const pgOptions = {
      ...(options.schema !== undefined ? { schema: options.schema } : {}),
      ...(options.strictTypes !== undefined ? { strictTypes: options.strictTypes } : {}),
      ...(options.batchRows !== undefined ? { batchRows: options.batchRows } : {}),
    };
    const server = options.database ?? (isPostgresUrl(options.output) ? options.output : undefined);
    if (server !== undefined) {
      const { connectPostgres, pgSettings } = await import('./postgres/connection');
      const description = pgSettings(server).description;
      const { PostgresSink } = await import('./postgres/sink');
      return new PostgresSink(() => connectPostgres(server), { ...pgOptions, description });
    }
    if (options.output.startsWith('s3://') || /^[a-z][a-z0-9+.-]*:\/\//i.test(options.output)) {
      throw new SinkConfigError(
        `sql output needs a postgresql:// URL, a database connection, or a folder for the embedded database; received "${options.output.split('://')[0]}://..."`,
      );
    }
    const { PostgresSink } = await import('./postgres/sink');
    return new PostgresSink(() => openEmbeddedDatabase(options.output), {
      ...pgOptions,
      description: `the embedded database in ${options.output}`,
    });
  }
  if (isPostgresUrl(options.output)) {
    throw new SinkConfigError(
      `A postgresql:// output needs --output-format sql, received "${options.format}"`,
    );
  }
  if (isSingleFileOutput(options.format, options.output)) {
    return singleFileSink(options, await fileFormat(options.format));
  }
  const [store, format, { FileSink }] = await Promise.all([
    objectStoreFor(options.output, options),
    fileFormat(options.format),
    import('./file-sink'),
  ]);
  return new FileSink(store, format, {
    ...(options.xlsxMaxRowsPerSheet !== undefined ? { maxRowsPerSheet: options.xlsxMaxRowsPerSheet } : {}),
    ...(options.leaseSeconds !== undefined ? { leaseSeconds: options.leaseSeconds } : {}),
    ...(options.abandonedAfterMs !== undefined ? { abandonedAfterMs: options.abandonedAfterMs } : {}),
    ...(options.parquetRowGroupRows !== undefined
      ? { parquetRowGroupRows: options.parquetRowGroupRows }
      : {}),
    ...(options.keepLatest ? { keepLatest: true } : {}),
  });
}

import { S3Client } from '@aws-sdk/client-s3';
import { openEmbeddedDatabase } from './embedded';
import { SinkConfigError } from './errors';
import { FileSink } from './file-sink';
import { fileFormats } from './formats';
import { connectPostgres, pgSettings } from './postgres/connection';
import { PostgresSink } from './postgres/sink';
import { LocalObjectStore } from './store/local';
import { S3ObjectStore } from './store/s3';
import type { ObjectStore } from './store/types';
import type { ExportSink, SinkOptions } from './types';

export { openEmbeddedDatabase } from './embedded';
export * from './errors';
export { FileSink, type ManifestObject, type RunManifest, readManifests } from './file-sink';
export type { SqlConnection } from './postgres/connection';
export { connectPostgres, pgSettings, tlsOptions } from './postgres/connection';
export { PostgresSink } from './postgres/sink';
export type { ObjectStore } from './store/types';
export * from './types';

const FORMATS = ['csv', 'xlsx', 'json', 'markdown', 'sql'] as const;

function isPostgresUrl(output: string): boolean {
  return /^postgres(ql)?:\/\//i.test(output);
}

/** The folder or S3 prefix of a file output, for reading manifests and checkpoints outside a run. */
export function objectStoreFor(
  output: string,
  options: Pick<SinkOptions, 's3Client' | 'partSizeBytes'> = {},
): ObjectStore {
  if (output.startsWith('s3://')) {
    return new S3ObjectStore(options.s3Client ?? new S3Client({}), output, {
      ...(options.partSizeBytes ? { partSizeBytes: options.partSizeBytes } : {}),
    });
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(output)) {
    throw new SinkConfigError(
      `Expected a folder path or s3://bucket/prefix, received a URL starting with "${output.split('://')[0]}://"`,
    );
  }
  return new LocalObjectStore(output);
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
  if (options.format === 'sql') {
    const pgOptions = {
      ...(options.schema !== undefined ? { schema: options.schema } : {}),
      ...(options.strictTypes !== undefined ? { strictTypes: options.strictTypes } : {}),
      ...(options.batchRows !== undefined ? { batchRows: options.batchRows } : {}),
    };
    const server = options.database ?? (isPostgresUrl(options.output) ? options.output : undefined);
    if (server !== undefined) {
      const description = pgSettings(server).description;
      return new PostgresSink(() => connectPostgres(server), { ...pgOptions, description });
    }
    if (options.output.startsWith('s3://') || /^[a-z][a-z0-9+.-]*:\/\//i.test(options.output)) {
      throw new SinkConfigError(
        `sql output needs a postgresql:// URL, a database connection, or a folder for the embedded database; received "${options.output.split('://')[0]}://..."`,
      );
    }
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
  return new FileSink(objectStoreFor(options.output, options), fileFormats[options.format], {
    ...(options.xlsxMaxRowsPerSheet !== undefined ? { maxRowsPerSheet: options.xlsxMaxRowsPerSheet } : {}),
    ...(options.leaseSeconds !== undefined ? { leaseSeconds: options.leaseSeconds } : {}),
  });
}

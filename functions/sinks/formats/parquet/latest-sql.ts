/**
 * The `<table>_latest` SQL: one row per id, the newest run's version, deleted rows left out. Written
 * in the SQL that Athena (Trino) and DuckDB both speak, so the statement the CDK app puts in the Glue
 * view is the one the tests run on DuckDB over the same files. Same rule as `ccexport latest`
 * (functions/sinks/latest.ts):
 *
 * - the newest version of an id is the one with the latest `_exported_at` (run start), then `_run_id`,
 *   then `_seq` (the row's position in its run);
 * - `_deleted` true (deletions marked) hides the id;
 * - a deletion record (`<table>/deletions/<run-id>.csv`: id, deleted_at, reason) hides a version of
 *   that id, or of a child row whose id starts with `<id>.`, exported at or before `deleted_at`;
 * - only records of deletions objects a manifest lists count (the manifest is their commit: a
 *   reconcile killed before its manifest leaves objects no reader applies). The record's object is
 *   its `"$path"` (Athena's hidden column: `s3://bucket/<prefix>/<key>`), matched on the `key` the
 *   manifest gives, relative to the export's prefix.
 */
import type { TableSpec } from '../../../query/types';
import {
  DELETED_COLUMN,
  EXPORTED_AT_COLUMN,
  type ParquetColumn,
  parquetColumns,
  RUN_ID_COLUMN,
  SEQUENCE_COLUMN,
} from './columns';

export interface LatestSqlOptions {
  /** The table's rows: `"db"."forms"` in Athena, `read_parquet('…', union_by_name = true)` in DuckDB. */
  readonly source: string;
  /** The deletion records and the deletions objects that count. @default - deletion records are not applied */
  readonly deletions?: {
    /**
     * The records: `id`, `deleted_at` (text) and `"$path"`, the object each was read from. Athena: the
     * Glue table over `<table>/deletions/`, whose hidden `"$path"` column is that; DuckDB: `read_csv(…,
     * all_varchar = true, filename = true)` with `filename` renamed.
     */
    readonly records: string;
    /**
     * The keys (relative to the export's prefix) of the deletions objects the manifests list, as a
     * column `key`: Athena, `deletions` of the manifests table unnested (`committedDeletionKeys`).
     */
    readonly committed: string;
  };
}

/** The keys of the deletions objects that the manifests (a Glue table over `manifests/`, see glue-tables.ts) list. */
export function committedDeletionKeys(manifests: string): string {
  return `(SELECT u.${quoteIdentifier('key')} FROM ${manifests} m CROSS JOIN UNNEST(m.${quoteIdentifier('deletions')}) AS u(${quoteIdentifier('key')}))`;
}

/** A double-quoted SQL identifier. */
export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** The columns the view returns: the query's, then `_run_id` and `_exported_at`. */
export function latestColumns(
  table: Pick<TableSpec, 'headings' | 'dataTypes' | 'valueKinds'>,
): ParquetColumn[] {
  return parquetColumns(table).filter((c) => c.name !== SEQUENCE_COLUMN);
}

/** The SELECT of the latest state. A table without an `id` column has no latest state: null. */
export function latestStateSql(
  table: Pick<TableSpec, 'headings' | 'dataTypes' | 'valueKinds'>,
  options: LatestSqlOptions,
): string | null {
  const columns = latestColumns(table);
  const id = columns.find((c) => c.heading === 'id');
  if (!id) return null;
  const q = quoteIdentifier;
  const list = columns.map((c) => `v.${q(c.name)}`).join(', ');
  const conditions = ['v._version = 1'];
  if (columns.some((c) => c.name === DELETED_COLUMN)) {
    conditions.push(`NOT coalesce(v.${q(DELETED_COLUMN)}, false)`);
  }
  if (options.deletions) {
    // deleted_at is text (ISO 8601 with T and Z, or with a space): both engines cast the space form.
    // "$path" ends with "/<key>" for a listed object: compare its tail (no ends_with in Trino).
    const path = `d.${q('$path')}`;
    const key = `c.${q('key')}`;
    conditions.push(
      `NOT EXISTS (SELECT 1 FROM ${options.deletions.records} d JOIN ${options.deletions.committed} c ` +
        `ON substr(${path}, greatest(1, length(${path}) - length(${key}))) = '/' || ${key} WHERE ` +
        `(d.${q('id')} = v.${q(id.name)} OR starts_with(v.${q(id.name)}, d.${q('id')} || '.')) AND ` +
        `CAST(replace(replace(d.${q('deleted_at')}, 'T', ' '), 'Z', '') AS timestamp) >= v.${q(EXPORTED_AT_COLUMN)})`,
    );
  }
  return [
    `SELECT ${list}`,
    'FROM (',
    `  SELECT t.*, row_number() OVER (PARTITION BY t.${q(id.name)} ORDER BY t.${q(EXPORTED_AT_COLUMN)} DESC, t.${q(RUN_ID_COLUMN)} DESC, t.${q(SEQUENCE_COLUMN)} DESC) AS _version`,
    `  FROM ${options.source} t`,
    `  WHERE t.${q(id.name)} IS NOT NULL`,
    ') v',
    `WHERE ${conditions.join('\n  AND ')}`,
  ].join('\n');
}

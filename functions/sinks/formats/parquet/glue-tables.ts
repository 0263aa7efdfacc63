/**
 * The Glue catalog entries of a Parquet export, per query table: the data table (typed columns,
 * partition projection on `run_date`), the deletion records table and the `<table>_latest` view; and
 * one per export, the manifests table the views read (`glueManifestsTable`). One
 * implementation for both places that create them: the CDK app (lib/analytics.ts, at synth, for an
 * export whose query file it reads) and the export function (./glue-catalog.ts, at run time, for an
 * export defined in HQ, whose config only exists at run time). Pure: plain objects in the CDK's
 * (camelCase) spelling; `toGlueSdkTableInput` spells one the way the Glue API takes it.
 */
import type { TableSpec } from '../../../query/types';
import { tableFolder } from '../../file-sink';
import {
  athenaName,
  athenaSqlType,
  catalogTableName,
  DELETED_AT_COLUMN,
  DELETED_COLUMN,
  glueType,
  PARTITION_COLUMN,
  parquetColumns,
} from './columns';
import { committedDeletionKeys, latestColumns, latestStateSql, quoteIdentifier } from './latest-sql';

/** First `run_date` partition projection enumerates; Athena stops at today (`NOW`). */
export const PROJECTION_START = '2020-01-01';

export interface GlueColumnInput {
  readonly name: string;
  readonly type: string;
  readonly comment?: string;
}

/** A Glue `TableInput` in the CDK's spelling (`glue.CfnTable.TableInputProperty`), the fields used here. */
export interface GlueTableInput {
  readonly name: string;
  readonly description: string;
  readonly tableType: 'EXTERNAL_TABLE' | 'VIRTUAL_VIEW';
  readonly parameters: Record<string, string>;
  readonly partitionKeys?: readonly GlueColumnInput[];
  readonly viewOriginalText?: string;
  readonly viewExpandedText?: string;
  readonly storageDescriptor: {
    readonly location?: string;
    readonly inputFormat?: string;
    readonly outputFormat?: string;
    readonly serdeInfo: {
      readonly serializationLibrary?: string;
      readonly parameters?: Record<string, string>;
    };
    readonly columns: readonly GlueColumnInput[];
  };
}

/** The catalog entries of one query table; `deletions` and `latest` only for a table with an `id`. */
export interface GlueTableSet {
  /** The query's table name. */
  readonly table: string;
  readonly data: GlueTableInput;
  readonly deletions: GlueTableInput | null;
  readonly latest: GlueTableInput | null;
  /** The `<table>_latest` SQL (Athena), or null without an `id` column. */
  readonly latestSql: string | null;
}

export interface GlueTablesOptions {
  /** The Glue database (Athena schema). */
  readonly database: string;
  /** The exports bucket's name (a CloudFormation token at synth). */
  readonly bucketName: string;
  /** The export's key prefix in the bucket, ending with "/". */
  readonly prefix: string;
  /** `deletions: mark`: every table has `_deleted` and `_deleted_at` after the query's columns. */
  readonly deletionColumns?: boolean;
  /** Named in the error about two tables with one Athena name. */
  readonly exportName: string;
}

/** The Glue table over the export's `manifests/`, which the `<table>_latest` views read. */
export const MANIFESTS_TABLE = 'ccexport_manifests';

/**
 * The export's run and reconcile manifests (`<prefix>/manifests/<run-id>.json`) as a table, for the
 * one thing the views need of them: the keys of the deletions objects each lists (`deletions`, an array
 * of structs of which only `key` is declared). A deletions object counts only once a manifest lists it
 * (a reconcile commits every table's deletion records with its one manifest write), so the views
 * apply only those. The manifests are pretty-printed JSON: Athena's JSON SerDes want one record per
 * line, the Amazon Ion SerDe does not (Ion is a superset of JSON), hence Ion. Field names are matched
 * without case, as the Ion SerDe does by default.
 */
export function glueManifestsTable(
  options: Pick<GlueTablesOptions, 'bucketName' | 'prefix'>,
): GlueTableInput {
  return {
    name: MANIFESTS_TABLE,
    description:
      'Run and reconcile manifests of the export: the deletions objects each one lists (only those count)',
    tableType: 'EXTERNAL_TABLE',
    parameters: { classification: 'ion', EXTERNAL: 'TRUE' },
    storageDescriptor: {
      location: `s3://${options.bucketName}/${options.prefix}manifests/`,
      inputFormat: 'com.amazon.ionhiveserde.formats.IonInputFormat',
      outputFormat: 'com.amazon.ionhiveserde.formats.IonOutputFormat',
      serdeInfo: { serializationLibrary: 'com.amazon.ionhiveserde.IonHiveSerDe' },
      columns: [{ name: 'deletions', type: 'array<struct<key:string>>' }],
    },
  };
}

/** A table as the `mark` deletion mode writes it (functions/export/run.ts `withDeletionColumns`). */
export function withDeletionColumns(table: TableSpec): TableSpec {
  if (table.headings.includes(DELETED_COLUMN)) return table;
  return {
    name: table.name,
    headings: [...table.headings, DELETED_COLUMN, DELETED_AT_COLUMN],
    dataTypes: [...table.dataTypes, 'boolean', 'datetime'],
    ...(table.valueKinds ? { valueKinds: [...table.valueKinds, null, null] } : {}),
  };
}

/** Athena's stored form of a view: the SQL and its output columns, base64 JSON in a comment. */
export function prestoView(
  sql: string,
  schema: string,
  columns: readonly { name: string; type: string }[],
): string {
  const view = { originalSql: sql, catalog: 'awsdatacatalog', schema, columns };
  return `/* Presto View: ${Buffer.from(JSON.stringify(view), 'utf8').toString('base64')} */`;
}

/**
 * The catalog entries of every table, in the order given. Throws when two tables would have the same
 * name in Athena (or one's name is another's `_latest` or `_deletions`).
 */
export function glueTableSets(tables: readonly TableSpec[], options: GlueTablesOptions): GlueTableSet[] {
  const names = new Map<string, string>([[MANIFESTS_TABLE, `the export's manifests (${MANIFESTS_TABLE})`]]);
  const specs = tables.map((t) => (options.deletionColumns ? withDeletionColumns(t) : t));
  const db = options.database;
  return specs.map((table): GlueTableSet => {
    const name = catalogTableName(table.name);
    const other = names.get(name) ?? names.get(`${name}_latest`) ?? names.get(`${name}_deletions`);
    if (other !== undefined) {
      throw new Error(
        `ExportAnalytics ${options.exportName}: tables "${other}" and "${table.name}" would both be "${name}" in Athena; rename one of them`,
      );
    }
    for (const n of [name, `${name}_latest`, `${name}_deletions`]) names.set(n, table.name);
    const location = `s3://${options.bucketName}/${options.prefix}${tableFolder(table.name)}/`;

    const data: GlueTableInput = {
      name,
      description: `Query table "${table.name}" (one Parquet file per run and part)`,
      tableType: 'EXTERNAL_TABLE',
      parameters: {
        classification: 'parquet',
        EXTERNAL: 'TRUE',
        'parquet.compression': 'SNAPPY',
        'projection.enabled': 'true',
        [`projection.${PARTITION_COLUMN}.type`]: 'date',
        [`projection.${PARTITION_COLUMN}.format`]: 'yyyy-MM-dd',
        [`projection.${PARTITION_COLUMN}.range`]: `${PROJECTION_START},NOW`,
        [`projection.${PARTITION_COLUMN}.interval`]: '1',
        [`projection.${PARTITION_COLUMN}.interval.unit`]: 'DAYS',
        'storage.location.template': `${location}${PARTITION_COLUMN}=\${${PARTITION_COLUMN}}/`,
      },
      partitionKeys: [{ name: PARTITION_COLUMN, type: 'string', comment: 'UTC date the run started' }],
      storageDescriptor: {
        location,
        inputFormat: 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat',
        outputFormat: 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat',
        serdeInfo: {
          serializationLibrary: 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe',
        },
        columns: parquetColumns(table).map((c) => ({
          name: c.name,
          type: glueType(c.type),
          ...(c.heading !== null && c.heading !== c.name ? { comment: `query column "${c.heading}"` } : {}),
        })),
      },
    };

    const sql = latestStateSql(table, {
      source: `${quoteIdentifier(db)}.${quoteIdentifier(name)}`,
      deletions: {
        records: `${quoteIdentifier(db)}.${quoteIdentifier(`${name}_deletions`)}`,
        committed: committedDeletionKeys(`${quoteIdentifier(db)}.${quoteIdentifier(MANIFESTS_TABLE)}`),
      },
    });
    if (sql === null) return { table: table.name, data, deletions: null, latest: null, latestSql: null };

    // Deletion records (`<table>/deletions/<run-id>.csv`), read as text. Partition projection keeps
    // the Parquet table from reading this folder, which lies inside its location.
    const deletions: GlueTableInput = {
      name: `${name}_deletions`,
      description: `Deletion records of "${table.name}" (id, deleted_at, reason)`,
      tableType: 'EXTERNAL_TABLE',
      parameters: { classification: 'csv', EXTERNAL: 'TRUE', 'skip.header.line.count': '1' },
      storageDescriptor: {
        location: `${location}deletions/`,
        inputFormat: 'org.apache.hadoop.mapred.TextInputFormat',
        outputFormat: 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat',
        serdeInfo: {
          serializationLibrary: 'org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe',
          parameters: { 'field.delim': ',' },
        },
        columns: [
          { name: 'id', type: 'string' },
          { name: 'deleted_at', type: 'string' },
          { name: 'reason', type: 'string' },
        ],
      },
    };

    // An Athena view stored in Glue: the SQL and its columns in the `/* Presto View: base64 */` form
    // Athena writes for CREATE VIEW.
    const columns = latestColumns(table);
    const latest: GlueTableInput = {
      name: `${name}_latest`,
      description: `Current state of "${table.name}": one row per id, the newest run's version, deleted rows left out`,
      tableType: 'VIRTUAL_VIEW',
      parameters: { presto_view: 'true', comment: 'Presto View' },
      viewOriginalText: prestoView(
        sql,
        db,
        columns.map((c) => ({ name: c.name, type: athenaSqlType(c.type) })),
      ),
      viewExpandedText: '/* Presto View */',
      storageDescriptor: {
        columns: columns.map((c) => ({ name: c.name, type: glueType(c.type) })),
        serdeInfo: {},
      },
    };
    return { table: table.name, data, deletions, latest, latestSql: sql };
  });
}

/** The CloudFormation logical id part of a table (`Table-<this>`). */
export function glueLogicalName(table: string): string {
  return athenaName(table);
}

function sdkColumn(c: GlueColumnInput): { Name: string; Type: string; Comment?: string } {
  return { Name: c.name, Type: c.type, ...(c.comment !== undefined ? { Comment: c.comment } : {}) };
}

/** A table input in the Glue API's spelling (`@aws-sdk/client-glue` `TableInput`). */
export function toGlueSdkTableInput(input: GlueTableInput) {
  const sd = input.storageDescriptor;
  return {
    Name: input.name,
    Description: input.description,
    TableType: input.tableType,
    Parameters: { ...input.parameters },
    ...(input.partitionKeys ? { PartitionKeys: input.partitionKeys.map(sdkColumn) } : {}),
    ...(input.viewOriginalText !== undefined ? { ViewOriginalText: input.viewOriginalText } : {}),
    ...(input.viewExpandedText !== undefined ? { ViewExpandedText: input.viewExpandedText } : {}),
    StorageDescriptor: {
      ...(sd.location !== undefined ? { Location: sd.location } : {}),
      ...(sd.inputFormat !== undefined ? { InputFormat: sd.inputFormat } : {}),
      ...(sd.outputFormat !== undefined ? { OutputFormat: sd.outputFormat } : {}),
      SerdeInfo: {
        ...(sd.serdeInfo.serializationLibrary !== undefined
          ? { SerializationLibrary: sd.serdeInfo.serializationLibrary }
          : {}),
        ...(sd.serdeInfo.parameters ? { Parameters: { ...sd.serdeInfo.parameters } } : {}),
      },
      Columns: sd.columns.map(sdkColumn),
    },
  };
}

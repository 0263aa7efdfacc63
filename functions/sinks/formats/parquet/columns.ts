/**
 * The typed columns of a table in Parquet, and the names Athena and the Glue catalog see. The writer
 * (at run time) and the CDK app (at synth, from the query file) both call `parquetColumns`, so the
 * files and the catalog cannot disagree.
 */
import type { DataType, TableSpec } from '../../../query/types';
import type { ValueKind } from '../../../query/value-kinds';
import { shortHash } from '../../cells';

/** Column types written. Each maps to one Parquet physical/converted type and one Athena type. */
export type ParquetColumnType = 'string' | 'json' | 'boolean' | 'bigint' | 'double' | 'date' | 'timestamp';

export interface ParquetColumn {
  /** Name in the file and in the catalog: lower-case ASCII letters, digits and `_`. */
  readonly name: string;
  /** The query file's heading, or null for a column the export adds (`_run_id`, ...). */
  readonly heading: string | null;
  readonly type: ParquetColumnType;
}

/** Columns every Parquet row carries after the query's own. */
export const RUN_ID_COLUMN = '_run_id';
export const EXPORTED_AT_COLUMN = '_exported_at';
/** Position of the row in its table within the run (0, 1, ...): orders two versions of an id written by one run. */
export const SEQUENCE_COLUMN = '_seq';
/** Deletion-tracking columns (`--deletions mark`); typed by name when a table has them. */
export const DELETED_COLUMN = '_deleted';
export const DELETED_AT_COLUMN = '_deleted_at';
/** The Hive-style partition folder of every Parquet object: `<table>/run_date=YYYY-MM-DD/<run-id>.parquet`. */
export const PARTITION_COLUMN = 'run_date';

const ADDED_COLUMNS: readonly ParquetColumn[] = [
  { name: RUN_ID_COLUMN, heading: null, type: 'string' },
  { name: EXPORTED_AT_COLUMN, heading: null, type: 'timestamp' },
  { name: SEQUENCE_COLUMN, heading: null, type: 'bigint' },
];

/**
 * The Parquet type of a query column. A declared Data Type decides (`integer` → bigint, `datetime` →
 * timestamp, `json` → text holding the value as JSON, as the PostgreSQL output's jsonb holds it).
 * Without one, the type is inferred the way the PostgreSQL output infers it, from the kind of value
 * (`value-kinds.ts`: boolean → boolean, date-time → timestamp, integer → bigint, anything else → text),
 * except that the kind comes from the query file (what the column's Map Via always returns: `str2date`,
 * `str2bool`, `str2num`, ...), not from the first value: the Glue table is created at deploy, before
 * any value, and every file under it must have the same types, or Athena refuses to read them ("type
 * INT64 in parquet is incompatible with type string"). `str2num` gives whole numbers and fractions, so
 * its kind `number` is a double here (where the PostgreSQL output starts with integer and widens to
 * text at the first fraction, which a Parquet column cannot do). A plain field is text: HQ sends form
 * answers and case properties as strings, which the PostgreSQL output types as text too.
 */
export function parquetType(
  dataType: DataType | null,
  name: string,
  kind: ValueKind | null = null,
): ParquetColumnType {
  if (name === DELETED_COLUMN) return 'boolean';
  if (name === DELETED_AT_COLUMN) return 'timestamp';
  switch (dataType) {
    case 'boolean':
      return 'boolean';
    case 'integer':
      return 'bigint';
    case 'date':
      return 'date';
    case 'datetime':
      return 'timestamp';
    case 'json':
      return 'json';
    case 'text':
      return 'string';
    default:
      return kind === null ? 'string' : parquetTypeOfKind(kind);
  }
}

/** The Parquet type of a column all of whose values are of one kind. */
export function parquetTypeOfKind(kind: ValueKind): ParquetColumnType {
  switch (kind) {
    case 'boolean':
      return 'boolean';
    case 'datetime':
      return 'timestamp';
    case 'integer':
      return 'bigint';
    case 'number':
      return 'double';
    case 'text':
      return 'string';
  }
}

/**
 * An identifier Athena accepts without quoting: accents dropped (`é` → `e`), lower case, anything
 * outside `a-z 0-9 _` becomes `_`. Athena lower-cases names itself and allows no other characters in
 * table and column names.
 */
export function athenaName(text: string): string {
  const ascii = text.normalize('NFKD').replace(/[\u0300-\u036f]/g, '');
  const name = ascii.toLowerCase().replace(/[^a-z0-9_]/g, '_');
  return name === '' ? '_' : name;
}

/**
 * The table's columns in file order: the query's headings (named by `athenaName`), then `_run_id`,
 * `_exported_at` and `_seq`. Headings whose names collide (`Form ID` and `form_id`, or a heading named
 * like an added column) all get 8 hex of a hash of the heading appended, so a name depends only on the
 * set of headings, not on their order.
 */
export function parquetColumns(
  table: Pick<TableSpec, 'headings' | 'dataTypes' | 'valueKinds'>,
): ParquetColumn[] {
  const base = table.headings.map((h) => athenaName(h));
  const counts = new Map<string, number>();
  for (const name of [...base, ...ADDED_COLUMNS.map((c) => c.name), PARTITION_COLUMN]) {
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  const columns = table.headings.map((heading, i): ParquetColumn => {
    const plain = base[i] as string;
    const name = (counts.get(plain) ?? 0) > 1 ? `${plain}_${shortHash(heading)}` : plain;
    return {
      name,
      heading,
      type: parquetType(table.dataTypes[i] ?? null, plain, table.valueKinds?.[i] ?? null),
    };
  });
  return [...columns, ...ADDED_COLUMNS];
}

/** The table's name in the Glue catalog and in Athena SQL. */
export function catalogTableName(table: string): string {
  return athenaName(table);
}

/** Athena (Hive DDL) type of a column, as the Glue table declares it. */
export function glueType(type: ParquetColumnType): string {
  return type === 'json' ? 'string' : type;
}

/** Athena's SQL type name of a column as a query or view sees it (Trino's names). */
export function athenaSqlType(type: ParquetColumnType): string {
  switch (type) {
    case 'string':
    case 'json':
      return 'varchar';
    case 'timestamp':
      // Athena reads Hive timestamps with millisecond precision.
      return 'timestamp(3)';
    default:
      return type;
  }
}

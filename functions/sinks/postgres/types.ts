import type { Cell, DataType } from '../../query/types';
import { kindOfCell } from '../../query/value-kinds';
import { cellToJson, formatDetDateTime, formatIsoDate } from '../cells';

/** Column types we create. Existing columns of other types are read as `other` and treated like text. */
export type PgType = 'text' | 'boolean' | 'integer' | 'bigint' | 'timestamp' | 'date' | 'jsonb';

const INT32_MIN = -2_147_483_648;
const INT32_MAX = 2_147_483_647;

/** Maps `information_schema.columns.data_type` to our names. */
export function pgTypeFromCatalog(dataType: string): PgType | 'other' {
  switch (dataType) {
    case 'text':
    case 'character varying':
    case 'character':
      return 'text';
    case 'boolean':
      return 'boolean';
    case 'integer':
    case 'smallint':
      return 'integer';
    case 'bigint':
      return 'bigint';
    case 'timestamp without time zone':
    case 'timestamp with time zone':
      return 'timestamp';
    case 'date':
      return 'date';
    case 'jsonb':
    case 'json':
      return 'jsonb';
    default:
      return 'other';
  }
}

/** DET's Data Type column → our column type. */
export function pgTypeForDataType(dataType: DataType): PgType {
  switch (dataType) {
    case 'text':
      return 'text';
    case 'boolean':
      return 'boolean';
    case 'date':
      return 'date';
    case 'datetime':
      return 'timestamp';
    case 'integer':
      return 'integer';
    case 'json':
      return 'jsonb';
  }
}

/**
 * The column type DET would create for a first value (`best_type_for`), by the value's kind
 * (`kindOfCell`, shared with the Parquet output): boolean → boolean, date-time → timestamp, integer →
 * integer (bigint beyond 32 bits: DET would overflow), everything else (strings, fractions, dicts,
 * lists) → text.
 */
export function inferPgType(cell: Exclude<Cell, null>): PgType {
  switch (kindOfCell(cell)) {
    case 'boolean':
      return 'boolean';
    case 'datetime':
      return 'timestamp';
    case 'integer': {
      const n = cell as number;
      return n >= INT32_MIN && n <= INT32_MAX ? 'integer' : Number.isSafeInteger(n) ? 'bigint' : 'text';
    }
    default:
      return 'text';
  }
}

const ISO_DATE = /^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$/;

/**
 * Whether a value can go into a column of this type. When it cannot, the column is widened:
 * integer → bigint for a big integer, anything else → text (DET's least upper bound).
 */
export function fits(cell: Exclude<Cell, null>, column: PgType | 'other'): boolean {
  switch (column) {
    case 'text':
    case 'jsonb':
    case 'other':
      return true;
    case 'boolean':
      return typeof cell === 'boolean';
    case 'integer':
      return typeof cell === 'number' && Number.isInteger(cell) && cell >= INT32_MIN && cell <= INT32_MAX;
    case 'bigint':
      return typeof cell === 'number' && Number.isSafeInteger(cell);
    case 'timestamp':
    case 'date':
      return (
        cell instanceof Date ||
        (typeof cell === 'string' && ISO_DATE.test(cell) && !Number.isNaN(Date.parse(cell)))
      );
  }
}

/** Strings PostgreSQL's boolean input accepts (after trimming, any case), and what they mean. */
export const PG_BOOLEAN_WORDS: Readonly<Record<string, boolean>> = {
  t: true,
  true: true,
  y: true,
  yes: true,
  on: true,
  '1': true,
  f: false,
  false: false,
  n: false,
  no: false,
  off: false,
  '0': false,
};

/**
 * A value converted for a column whose type is fixed (a declared Data Type, or a column DET created):
 * what PostgreSQL's own input conversion would make of it, or `undefined` when it cannot be converted.
 * HQ sends case properties and form answers as strings, so `'12'` becomes 12 for an integer column and
 * `'true'`/`'false'` become booleans, as PostgreSQL converts them for DET's INSERTs. A number with a
 * fraction is not rounded into an integer column: that would change the value.
 */
export function convertForColumn(cell: Exclude<Cell, null>, column: PgType | 'other'): Cell | undefined {
  switch (column) {
    case 'text':
    case 'jsonb':
    case 'other':
      return cell;
    case 'integer':
    case 'bigint': {
      const value = typeof cell === 'string' && /^\s*[+-]?\d+\s*$/.test(cell) ? Number(cell) : cell;
      return fits(value, column) ? value : undefined;
    }
    case 'boolean':
      if (typeof cell === 'boolean') return cell;
      return typeof cell === 'string' ? PG_BOOLEAN_WORDS[cell.trim().toLowerCase()] : undefined;
    case 'timestamp':
    case 'date':
      return fits(cell, column) ? cell : undefined;
  }
}

/** The type to widen `column` to so that `cell` fits. */
export function widen(column: PgType, cell: Exclude<Cell, null>): PgType {
  if (column === 'integer' && typeof cell === 'number' && Number.isSafeInteger(cell)) return 'bigint';
  return 'text';
}

/**
 * A value as COPY CSV text for a column of this type, or null for SQL NULL. NUL characters are
 * dropped (PostgreSQL text cannot hold them).
 */
export function copyText(cell: Cell, column: PgType | 'other'): string | null {
  if (cell === null) return null;
  if (column === 'jsonb') return cellToJson(cell);
  if (typeof cell === 'string') return cell.includes('\0') ? cell.replaceAll('\0', '') : cell;
  // 'true'/'false' in text columns: what PostgreSQL's boolean::text gives when a column is widened.
  if (typeof cell === 'boolean') return column === 'text' ? String(cell) : cell ? 't' : 'f';
  if (typeof cell === 'number') return String(cell);
  if (cell instanceof Date) {
    if (column === 'date') return formatIsoDate(cell);
    if (column === 'timestamp') return cell.toISOString().replace('T', ' ').replace('Z', '');
    return formatDetDateTime(cell);
  }
  return cellToJson(cell);
}

/** SQL spelling of a type. */
export function sqlType(type: PgType): string {
  return type === 'timestamp' ? 'timestamp without time zone' : type;
}

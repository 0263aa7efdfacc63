import type { QueryParams, RecordKeyPath, ResourceName } from '../commcare/types';
import type { JsonObject } from '../common/json';
import type { ValueKind } from './value-kinds';

/** DET's `Data Type` column values (`commcare_export/data_types.py`). */
export type DataType = 'text' | 'boolean' | 'date' | 'datetime' | 'integer' | 'json';

/** One output cell after Map Via / Format Via and DET's cell coercion. */
export type Cell = string | number | boolean | Date | null | JsonObject | Cell[];

/** An output table's declared shape. */
export interface TableSpec {
  readonly name: string;
  readonly headings: readonly string[];
  /** One entry per heading; null where the sheet gave no Data Type. */
  readonly dataTypes: readonly (DataType | null)[];
  /**
   * Per heading, the kind of value the column's expression always gives (a Map Via such as
   * `str2date` or `str2num`; `value-kinds.ts`), null where the query file does not say. Typed outputs
   * whose schema is fixed before any data (Parquet with its Glue table) type those columns by it.
   * @default - null for every heading
   */
  readonly valueKinds?: readonly (ValueKind | null)[];
  /**
   * The text the query writes for an absent value (DET's `missing_value`, `--missing-value`). Typed
   * outputs write it as null in a typed column rather than refuse it.
   * @default - none: an absent value is null
   */
  readonly missingValue?: string | null;
}

/** One table fed by a source: turns one HQ record into zero or more rows (child tables give many). */
export interface TablePlan extends TableSpec {
  rowsFor(record: JsonObject): Cell[][];
  /**
   * The only parts of a record `rowsFor` may read, as key paths (record-keys.ts): a record handed to it
   * may lack everything else. Absent or null: it may read any key, and gets whole records.
   */
  readonly recordKeys?: readonly RecordKeyPath[] | null;
}

/** One API pass: every table whose sheet has the same resource, filters and referenced items. */
export interface SourcePlan {
  readonly resource: ResourceName;
  readonly params: QueryParams;
  readonly tables: readonly TablePlan[];
}

/** A compiled query file, ready to run. */
export interface CompiledQuery {
  readonly sources: readonly SourcePlan[];
  /** DET's default checkpoint key: MD5 of the query file's bytes (hex). */
  readonly queryFileMd5: string;
  readonly warnings: readonly string[];
}

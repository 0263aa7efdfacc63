import type { Cell, TableSpec } from '../../query/types';
import type { ObjectUpload } from '../store/types';

/** Writes one table into one object. */
export interface TableEncoder {
  writeRows(rows: readonly Cell[][]): Promise<void>;
  /** Writes the trailer; the caller then completes the object. */
  end(): Promise<void>;
}

export interface FileFormatOptions {
  /** xlsx: rows per sheet including the heading row. */
  readonly maxRowsPerSheet?: number;
  /** parquet: rows per row group (memory holds one row group). @default 10000 */
  readonly parquetRowGroupRows?: number;
  /** The run writing the object: formats that store it per row (parquet's `_run_id`, `_exported_at`, `_seq`). */
  readonly run?: {
    readonly runId: string;
    /** When the run started; the same for every row of the run. */
    readonly exportedAt: Date;
    /** Rows of this table the run wrote in earlier parts. */
    readonly firstSequence: number;
  };
}

export interface FileFormat {
  readonly name: 'csv' | 'xlsx' | 'json' | 'markdown' | 'parquet';
  readonly extension: string;
  readonly contentType: string;
  /** Objects go under a Hive-style partition folder: `<table>/run_date=YYYY-MM-DD/<run-id>.<ext>`. */
  readonly partitionByRunDate?: boolean;
  open(table: TableSpec, out: ObjectUpload, options?: FileFormatOptions): TableEncoder;
}

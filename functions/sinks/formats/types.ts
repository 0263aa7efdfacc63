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
}

export interface FileFormat {
  readonly name: 'csv' | 'xlsx' | 'json' | 'markdown';
  readonly extension: string;
  readonly contentType: string;
  open(table: TableSpec, out: ObjectUpload, options?: FileFormatOptions): TableEncoder;
}

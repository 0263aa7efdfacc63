/**
 * Parquet files: one per table and part, typed columns (see `columns.ts`), Snappy-compressed, written
 * with hyparquet-writer (see the sinks README for why this writer). Rows are gathered into row groups
 * of `rowGroupRows` rows (or ~`ROW_GROUP_CHARS` of text, whichever comes first); each full row group is
 * encoded and handed to the object stream with backpressure, so memory holds at most one row group.
 */
import type { SchemaElement } from 'hyparquet-writer';
import { ByteWriter, ParquetWriter } from 'hyparquet-writer';
import type { Cell, TableSpec } from '../../../query/types';
import { cellToJson, cellToText, describeValue } from '../../cells';
import { DeclaredTypeError } from '../../errors';
import { PG_BOOLEAN_WORDS } from '../../postgres/types';
import type { ObjectUpload } from '../../store/types';
import type { FileFormat, FileFormatOptions, TableEncoder } from '../types';
import { type ParquetColumn, type ParquetColumnType, parquetColumns } from './columns';

export const DEFAULT_ROW_GROUP_ROWS = 10_000;
/** A row group is also closed after about this much text (UTF-16 code units), so wide rows stay bounded. */
const ROW_GROUP_CHARS = 8 * 1024 * 1024;
const DAY_MS = 86_400_000;

/** hyparquet-writer's schema element for one of our column types (all columns nullable). */
function schemaElement(column: ParquetColumn): SchemaElement {
  const base = { name: column.name, repetition_type: 'OPTIONAL' } as const;
  switch (column.type) {
    case 'string':
    case 'json':
      return { ...base, type: 'BYTE_ARRAY', converted_type: 'UTF8' };
    case 'boolean':
      return { ...base, type: 'BOOLEAN' };
    case 'bigint':
      return { ...base, type: 'INT64' };
    case 'double':
      return { ...base, type: 'DOUBLE' };
    case 'date':
      return { ...base, type: 'INT32', converted_type: 'DATE' };
    case 'timestamp':
      return { ...base, type: 'INT64', converted_type: 'TIMESTAMP_MILLIS' };
  }
}

const INTEGER_TEXT = /^[+-]?\d{1,19}$/;
const NUMBER_TEXT = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const DATE_TEXT = /^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$/;

/** Epoch milliseconds of a date cell or ISO-looking text (a zone-less time is UTC), else null. */
function epochMillis(cell: Cell): number | null {
  if (cell instanceof Date) return Number.isNaN(cell.getTime()) ? null : cell.getTime();
  if (typeof cell !== 'string' || !DATE_TEXT.test(cell)) return null;
  const zoned = /(Z|[+-]\d{2}(:?\d{2})?)$/.test(cell.slice(10)) ? cell : `${cell.replace(' ', 'T')}Z`;
  const ms = Date.parse(cell.length === 10 ? `${cell}T00:00:00Z` : zoned);
  return Number.isNaN(ms) ? null : ms;
}

type Stored = string | boolean | bigint | number | null;

/**
 * A cell as the value of a typed column, or `undefined` when it does not read as the column's type
 * (text "n/a" in a `bigint` column): the encoder then stops the run (see `ParquetTableEncoder`). Blank
 * text is null in a typed column (HQ sends an unanswered question as ""), and so is the query's
 * missing-value text (`missingValue`): both stand for no value, so nothing is lost.
 */
export function storedValue(
  cell: Cell,
  type: ParquetColumnType,
  missingValue: string | null = null,
): Stored | undefined {
  if (cell === null) return null;
  if (typeof cell === 'string' && type !== 'string' && type !== 'json') {
    if (cell === missingValue || cell.trim() === '') return null;
  }
  switch (type) {
    case 'json':
      return cellToJson(cell);
    case 'string':
      return typeof cell === 'string'
        ? cell
        : typeof cell === 'object' && !(cell instanceof Date)
          ? cellToJson(cell)
          : cellToText(cell);
    case 'boolean':
      if (typeof cell === 'boolean') return cell;
      // The words PostgreSQL's boolean input accepts, so both typed outputs take the same values.
      if (typeof cell === 'string') return PG_BOOLEAN_WORDS[cell.trim().toLowerCase()];
      if (typeof cell === 'number' && (cell === 0 || cell === 1)) return cell === 1;
      return undefined;
    case 'bigint':
      // Beyond 2^53 a JavaScript number is not exact: refused rather than written as a wrong count.
      if (typeof cell === 'number') return Number.isSafeInteger(cell) ? BigInt(cell) : undefined;
      if (typeof cell === 'string' && INTEGER_TEXT.test(cell.trim())) {
        const value = BigInt(cell.trim());
        return value >= -(2n ** 63n) && value < 2n ** 63n ? value : undefined;
      }
      if (typeof cell === 'boolean') return cell ? 1n : 0n;
      return undefined;
    case 'double':
      if (typeof cell === 'number') return cell;
      if (typeof cell === 'string' && NUMBER_TEXT.test(cell.trim())) return Number(cell.trim());
      return undefined;
    case 'date': {
      const ms = epochMillis(cell);
      return ms === null ? undefined : Math.floor(ms / DAY_MS);
    }
    case 'timestamp': {
      const ms = epochMillis(cell);
      return ms === null ? undefined : BigInt(ms);
    }
  }
}

/** The Parquet type as an error message names it (the Athena type the Glue table declares). */
function typeName(type: ParquetColumnType): string {
  return type === 'json' ? 'json text' : type;
}

/** A ByteWriter that hands each finished row group to the object stream and starts over. */
class UploadWriter extends ByteWriter {
  constructor(private readonly out: ObjectUpload) {
    super(1024 * 1024);
  }

  flush(): Promise<void> {
    if (this.index === 0) return Promise.resolve();
    const chunk = new Uint8Array(this.buffer.slice(0, this.index));
    this.index = 0;
    return this.out.write(chunk);
  }

  override finish(): Promise<void> {
    return this.flush();
  }
}

class ParquetTableEncoder implements TableEncoder {
  private readonly columns: ParquetColumn[];
  private readonly writer: ParquetWriter;
  private readonly uploadWriter: UploadWriter;
  private buffers: Stored[][];
  private rows = 0;
  private chars = 0;
  private sequence: number;
  private readonly runId: string;
  private readonly exportedAt: bigint;
  private readonly queryColumns: number;
  private readonly tableName: string;
  private readonly idIndex: number;
  private readonly missingValue: string | null;

  constructor(
    table: TableSpec,
    out: ObjectUpload,
    private readonly rowGroupRows: number,
    run: NonNullable<FileFormatOptions['run']>,
  ) {
    this.columns = parquetColumns(table);
    this.queryColumns = table.headings.length;
    this.tableName = table.name;
    this.idIndex = table.headings.indexOf('id');
    this.missingValue = table.missingValue ?? null;
    this.buffers = this.columns.map(() => []);
    this.runId = run.runId;
    this.exportedAt = BigInt(run.exportedAt.getTime());
    this.sequence = run.firstSequence;
    this.uploadWriter = new UploadWriter(out);
    this.writer = new ParquetWriter({
      writer: this.uploadWriter,
      schema: [{ name: 'root', num_children: this.columns.length }, ...this.columns.map(schemaElement)],
      codec: 'SNAPPY',
      createdBy: 'ccexport (hyparquet-writer)',
      kvMetadata: [
        { key: 'ccexport.table', value: table.name },
        { key: 'ccexport.headings', value: JSON.stringify(table.headings) },
      ],
    });
  }

  async writeRows(rows: readonly Cell[][]): Promise<void> {
    const n = this.queryColumns;
    for (const row of rows) {
      for (let c = 0; c < n; c++) {
        const cell = row[c] ?? null;
        const value = storedValue(cell, (this.columns[c] as ParquetColumn).type, this.missingValue);
        if (value === undefined) throw this.refusal(row, c);
        if (typeof value === 'string') this.chars += value.length;
        (this.buffers[c] as Stored[]).push(value);
      }
      (this.buffers[n] as Stored[]).push(this.runId);
      (this.buffers[n + 1] as Stored[]).push(this.exportedAt);
      (this.buffers[n + 2] as Stored[]).push(BigInt(this.sequence++));
      this.rows++;
      if (this.rows >= this.rowGroupRows || this.chars >= ROW_GROUP_CHARS) await this.writeRowGroup();
    }
  }

  /**
   * The error for a value its column cannot take. The run stops, as the PostgreSQL output stops for a
   * value that does not fit a declared Data Type: a null would be read as an unanswered question, and
   * the column cannot be widened (its type is the Glue table's). The open parts are aborted, so the
   * checkpoint stays where the last commit left it.
   */
  private refusal(row: readonly Cell[], c: number): DeclaredTypeError {
    const column = this.columns[c] as ParquetColumn;
    const id = this.idIndex >= 0 ? row[this.idIndex] : null;
    const where =
      id === null || id === undefined ? `row ${this.sequence} of the run` : `row id "${cellToText(id)}"`;
    return new DeclaredTypeError(
      `Table "${this.tableName}", column "${column.heading}" (${typeName(column.type)}), ${where}: ` +
        `${describeValue(row[c] as Exclude<Cell, null>)} cannot be read as ${typeName(column.type)}; ` +
        "correct the value in CommCare, or the column's Data Type or Map Via (a Parquet column keeps one type in every file)",
    );
  }

  private async writeRowGroup(): Promise<void> {
    if (this.rows === 0) return;
    const columnData = this.columns.map((column, i) => ({
      name: column.name,
      data: this.buffers[i] as Stored[],
      // Text columns are written without min/max statistics: hyparquet-writer compares strings code
      // point by code point (~10% of the CPU time in profiles), and the min/max of ids, names and
      // answers rarely let a reader skip a row group, unlike those of dates and numbers.
      statistics: column.type !== 'string' && column.type !== 'json',
    }));
    const rows = this.rows;
    this.buffers = this.columns.map(() => []);
    this.rows = 0;
    this.chars = 0;
    await this.writer.write({ columnData, rowGroupSize: rows });
    // write() flushes after each row group; a group written without awaiting it still needs one.
    await this.uploadWriter.flush();
  }

  async end(): Promise<void> {
    await this.writeRowGroup();
    await this.writer.finish();
  }
}

export const parquetFormat: FileFormat = {
  name: 'parquet',
  extension: 'parquet',
  contentType: 'application/vnd.apache.parquet',
  partitionByRunDate: true,
  open(table, out, options = {}) {
    return new ParquetTableEncoder(
      table,
      out,
      options.parquetRowGroupRows ?? DEFAULT_ROW_GROUP_ROWS,
      options.run ?? { runId: '', exportedAt: new Date(), firstSequence: 0 },
    );
  },
};

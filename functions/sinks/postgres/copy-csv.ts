import type { Cell } from '../../query/types';
import { cellToJson, formatIsoDate, formatUtcDateTime } from '../cells';
import { fits, type PgType } from './types';

/** A column's type as the sink knows it; `other` is a type we did not create (read as text). */
export type ColumnType = PgType | 'other';

/**
 * Characters that force quoting in COPY CSV: the delimiter, quote, line ends, backslash (a lone `\.`
 * would end the data) and NUL (dropped, PostgreSQL text cannot hold it).
 */
const NEEDS_QUOTES = /[",\r\n\\\0]/;

function quoted(text: string): string {
  const clean = text.includes('\0') ? text.replaceAll('\0', '') : text;
  return clean.includes('"') ? `"${clean.replaceAll('"', '""')}"` : `"${clean}"`;
}

/**
 * One value as a COPY CSV field for a column of this type; the caller has checked that it fits. An
 * unquoted empty field is NULL, so an empty string is written `""`.
 *
 * Apart from `jsonb` (every value as JSON) and `date` columns, the text does not depend on the column
 * type, and it is what PostgreSQL's `::text` of the typed value gives (`true`/`false`,
 * `YYYY-MM-DD HH:MM:SS[.mmm]`): a line encoded before its column is widened to text loads the same
 * as the rows the widening converted.
 */
export function copyField(cell: Cell | undefined, column: ColumnType): string {
  if (cell === null || cell === undefined) return '';
  if (column === 'jsonb') return quoted(cellToJson(cell));
  switch (typeof cell) {
    case 'string':
      if (cell === '') return '""';
      return NEEDS_QUOTES.test(cell) ? quoted(cell) : cell;
    case 'number':
      // Digits, sign, point, exponent, Infinity, NaN: never needs quoting.
      return String(cell);
    case 'boolean':
      return cell ? 'true' : 'false';
    default:
      if (cell instanceof Date) {
        // An invalid date has no text: formatUtcDateTime gives NaN parts, which PostgreSQL refuses.
        return column === 'date' ? formatIsoDate(cell) : formatUtcDateTime(cell.getTime(), true);
      }
      return quoted(cellToJson(cell));
  }
}

/**
 * The COPY CSV line (without line end) of a row for the columns the table has (`types[i]` undefined:
 * no such column yet), or null when a value has no column yet or does not fit its column's type (the
 * table must change first). `fields` is scratch space, reused between rows.
 */
export function encodeRow(
  row: readonly Cell[],
  id: string,
  idIndex: number,
  types: readonly (ColumnType | undefined)[],
  fields: string[],
): string | null {
  let k = 0;
  for (let i = 0; i < types.length; i++) {
    const type = types[i];
    const cell = row[i];
    if (type === undefined) {
      if (cell === null || cell === undefined) continue;
      return null;
    }
    if (i === idIndex) fields[k++] = copyField(id, 'text');
    else if (cell === null || cell === undefined) fields[k++] = '';
    else if (type === 'text' || type === 'other' || type === 'jsonb' || fits(cell, type))
      fields[k++] = copyField(cell, type);
    else return null;
  }
  fields.length = k;
  return fields.join(',');
}

/** Lines per chunk: big enough that a chunk is one socket write, small enough that lines die young. */
const CHUNK_LINES = 256;

/**
 * Encoded COPY lines with their ids, kept as chunks of joined lines: holding every line as its own
 * string (and joining them all at the end) doubles the memory of a batch and the work of the garbage
 * collector. Line lengths are kept so that the chunks can still be split by id.
 */
export class CopyLines {
  readonly ids: string[] = [];
  private readonly chunks: string[] = [];
  private readonly lengths: number[] = [];
  private tail: string[] = [];

  get size(): number {
    return this.ids.length;
  }

  push(line: string, id: string): void {
    this.tail.push(line);
    this.ids.push(id);
    this.lengths.push(line.length + 1);
    if (this.tail.length >= CHUNK_LINES) this.seal();
  }

  private seal(): void {
    if (this.tail.length === 0) return;
    this.chunks.push(`${this.tail.join('\n')}\n`);
    this.tail = [];
  }

  /** The COPY body: every line followed by `\n`, in chunks. */
  body(): string[] {
    this.seal();
    return this.chunks;
  }

  /** The lines whose id passes `test`, and the others, as two COPY bodies. */
  split(test: (id: string) => boolean): { yes: string[]; no: string[] } {
    const yes = new CopyLines();
    const no = new CopyLines();
    let r = 0;
    for (const chunk of this.body()) {
      for (let at = 0; at < chunk.length; r++) {
        const end = at + this.lengths[r]!;
        // push adds the line end back.
        (test(this.ids[r]!) ? yes : no).push(chunk.slice(at, end - 1), this.ids[r]!);
        at = end;
      }
    }
    return { yes: yes.body(), no: no.body() };
  }
}

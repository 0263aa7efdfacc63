import type { Cell } from '../../query/types';
import {
  cellToJson,
  civilFromDays,
  FOUR_DIGIT_YEARS_FROM,
  FOUR_DIGIT_YEARS_UNTIL,
  formatIsoDate,
  formatUtcDateTime,
} from '../cells';
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

/** Bytes of a chunk: big enough that a chunk is one socket write, small enough that chunks die young. */
const CHUNK_BYTES = 64 * 1024;

/** ASCII codes that force quoting (see NEEDS_QUOTES). */
const SPECIAL = new Uint8Array(128);
for (const c of '",\r\n\\\0') SPECIAL[c.charCodeAt(0)] = 1;

/** Strings up to this length are scanned and copied byte by byte; longer ones go through the regex and `Buffer.write`. */
const SCAN_CHARS = 256;

const COMMA = 0x2c;
const QUOTE = 0x22;
const NEWLINE = 0x0a;

/**
 * Encoded COPY lines with their ids. Rows are encoded straight into bytes, in chunks of about 64 KiB
 * that go to the socket as they are: building a string per cell and per line (and converting them to
 * bytes at the end) was most of the client's work and garbage. A line never spans two chunks, and
 * line lengths are kept, so that the chunks can still be split by id.
 *
 * Each field is what `copyField` returns for it; `copyField` stays as the readable definition.
 */
export class CopyLines {
  readonly ids: string[] = [];
  private readonly chunks: Buffer[] = [];
  /** Byte length of each line, its line end included. */
  private readonly lengths: number[] = [];
  private buf: Buffer = Buffer.allocUnsafe(CHUNK_BYTES);
  /** Where the line being written starts in `buf`. */
  private start = 0;
  /** Where the next byte goes in `buf`. */
  private pos = 0;

  get size(): number {
    return this.ids.length;
  }

  /**
   * Appends the COPY CSV line of a row for the columns the table has (`types[i]` undefined: no such
   * column yet) and returns true, or returns false and appends nothing when a value has no column
   * yet or does not fit its column's type (the table must change first).
   */
  row(
    row: readonly Cell[],
    id: string,
    idIndex: number,
    types: readonly (ColumnType | undefined)[],
  ): boolean {
    let first = true;
    for (let i = 0; i < types.length; i++) {
      const type = types[i];
      const cell = row[i];
      if (type === undefined) {
        if (cell === null || cell === undefined) continue;
        this.pos = this.start;
        return false;
      }
      if (first) first = false;
      else {
        this.ensure(1);
        this.buf[this.pos++] = COMMA;
      }
      if (i === idIndex) this.text(id);
      else if (cell === null || cell === undefined) continue;
      else if (type === 'text' || type === 'other') this.value(cell, false);
      else if (type === 'jsonb') this.quotedText(cellToJson(cell));
      else if (fits(cell, type)) this.value(cell, type === 'date');
      else {
        this.pos = this.start;
        return false;
      }
    }
    this.endLine(id);
    return true;
  }

  /** The COPY body: every line followed by `\n`, in chunks. */
  body(): Buffer[] {
    this.seal();
    return this.chunks;
  }

  /** The lines whose id passes `test`, and the others, as two COPY bodies. */
  split(test: (id: string) => boolean): { yes: Buffer[]; no: Buffer[] } {
    const yes = new CopyLines();
    const no = new CopyLines();
    let r = 0;
    for (const chunk of this.body()) {
      for (let at = 0; at < chunk.length; r++) {
        const end = at + this.lengths[r]!;
        (test(this.ids[r]!) ? yes : no).copyLine(chunk, at, end, this.ids[r]!);
        at = end;
      }
    }
    return { yes: yes.body(), no: no.body() };
  }

  private copyLine(source: Buffer, from: number, to: number, id: string): void {
    this.ensure(to - from);
    source.copy(this.buf, this.pos, from, to);
    this.pos += to - from;
    this.lengths.push(this.pos - this.start);
    this.ids.push(id);
    this.start = this.pos;
  }

  private endLine(id: string): void {
    this.ensure(1);
    this.buf[this.pos++] = NEWLINE;
    this.lengths.push(this.pos - this.start);
    this.ids.push(id);
    this.start = this.pos;
  }

  /** Hands the complete lines over as a chunk; the rest of the buffer takes the next ones. */
  private seal(): void {
    if (this.start === 0) return;
    this.chunks.push(this.buf.subarray(0, this.start));
    this.buf = this.buf.subarray(this.start);
    this.pos -= this.start;
    this.start = 0;
  }

  /** Room for `bytes` more bytes; a new buffer takes the line begun so far, so lines stay whole. */
  private ensure(bytes: number): void {
    if (this.pos + bytes <= this.buf.length) return;
    const begun = this.pos - this.start;
    const next = Buffer.allocUnsafe(Math.max(CHUNK_BYTES, 2 * (begun + bytes)));
    this.buf.copy(next, 0, this.start, this.pos);
    if (this.start > 0) this.chunks.push(this.buf.subarray(0, this.start));
    this.buf = next;
    this.start = 0;
    this.pos = begun;
  }

  /** A non-null value as `copyField` writes it for a text column (`date`: as a date). */
  private value(cell: Exclude<Cell, null>, date: boolean): void {
    switch (typeof cell) {
      case 'string':
        this.text(cell);
        return;
      case 'number':
        this.number(cell);
        return;
      case 'boolean':
        this.ascii(cell ? 'true' : 'false');
        return;
      default:
        if (cell instanceof Date) {
          if (date) this.ascii(formatIsoDate(cell));
          else this.dateTime(cell.getTime());
        } else this.quotedText(cellToJson(cell));
    }
  }

  private text(text: string): void {
    const n = text.length;
    // A UTF-16 unit is at most 3 UTF-8 bytes, a doubled quote 2, and quoting adds 2.
    this.ensure(3 * n + 2);
    if (n === 0) {
      this.buf[this.pos++] = QUOTE;
      this.buf[this.pos++] = QUOTE;
      return;
    }
    if (n <= SCAN_CHARS) {
      // Most values are short ASCII: copied as they are scanned. At the first character that needs
      // quoting (a comma in free text is common), the bytes so far move right for the opening quote
      // and the rest is copied quoting inline; non-ASCII text leaves for the general path below.
      const buf = this.buf;
      const start = this.pos;
      let i = 0;
      for (; i < n; i++) {
        const c = text.charCodeAt(i);
        if (c >= 0x80 || SPECIAL[c] === 1) break;
        buf[start + i] = c;
      }
      if (i === n) {
        this.pos = start + n;
        return;
      }
      if (text.charCodeAt(i) < 0x80) {
        for (let k = start + i; k > start; k--) buf[k] = buf[k - 1]!;
        buf[start] = QUOTE;
        let pos = start + i + 1;
        for (; i < n; i++) {
          const c = text.charCodeAt(i);
          if (c >= 0x80) break;
          if (c === QUOTE) buf[pos++] = QUOTE;
          else if (c === 0) continue;
          buf[pos++] = c;
        }
        if (i === n) {
          buf[pos++] = QUOTE;
          this.pos = pos;
          return;
        }
      }
    }
    if (NEEDS_QUOTES.test(text)) this.quotedText(text);
    else this.pos += this.buf.write(text, this.pos, 'utf8');
  }

  private quotedText(text: string): void {
    const field = quoted(text);
    this.ensure(3 * field.length);
    this.pos += this.buf.write(field, this.pos, 'utf8');
  }

  /** Text known to be ASCII with nothing to escape. */
  private ascii(text: string): void {
    const n = text.length;
    this.ensure(n);
    const buf = this.buf;
    const pos = this.pos;
    for (let i = 0; i < n; i++) buf[pos + i] = text.charCodeAt(i);
    this.pos = pos + n;
  }

  private number(value: number): void {
    // Digits, sign, point, exponent, Infinity, NaN: never needs quoting.
    if (!(Number.isInteger(value) && value >= -2_147_483_648 && value <= 2_147_483_647)) {
      this.ascii(String(value));
      return;
    }
    this.ensure(11);
    const buf = this.buf;
    let x = value;
    if (x < 0) {
      buf[this.pos++] = 0x2d;
      x = -x;
    }
    let digits = 1;
    for (let t = x; t >= 10; t = Math.floor(t / 10)) digits++;
    const end = this.pos + digits;
    for (let at = end - 1; at >= this.pos; at--) {
      buf[at] = 48 + (x % 10);
      x = Math.floor(x / 10);
    }
    this.pos = end;
  }

  /** The last day `dateTime` converted (days since 1970-01-01) and its civil date. */
  private day = Number.NaN;
  private year = 0;
  private month = 0;
  private dayOfMonth = 0;

  /** Days since 1970-01-01 to year, month, day, kept for the next date of the same day. */
  private civilDay(days: number): void {
    const civil = civilFromDays(days);
    this.dayOfMonth = civil.day;
    this.month = civil.month;
    this.year = civil.year;
    this.day = days;
  }

  private digits2(value: number): void {
    this.buf[this.pos++] = 48 + Math.floor(value / 10);
    this.buf[this.pos++] = 48 + (value % 10);
  }

  /** `formatUtcDateTime(ms, true)` written as bytes: the same integer arithmetic, without the string. */
  private dateTime(ms: number): void {
    if (!(ms >= FOUR_DIGIT_YEARS_FROM && ms < FOUR_DIGIT_YEARS_UNTIL)) {
      this.ascii(formatUtcDateTime(ms, true));
      return;
    }
    const days = Math.floor(ms / 86_400_000);
    // Dates of a row (received, modified, started, completed) tend to share their day.
    if (days !== this.day) this.civilDay(days);
    let rest = ms - days * 86_400_000;
    const year = this.year;
    const month = this.month;
    const day = this.dayOfMonth;
    // rest < 86,400,000: integer division with | 0.
    const hours = (rest / 3_600_000) | 0;
    rest -= hours * 3_600_000;
    const minutes = (rest / 60_000) | 0;
    rest -= minutes * 60_000;
    const seconds = (rest / 1000) | 0;
    rest -= seconds * 1000;
    this.ensure(23);
    this.digits2(Math.floor(year / 100));
    this.digits2(year % 100);
    this.buf[this.pos++] = 0x2d;
    this.digits2(month);
    this.buf[this.pos++] = 0x2d;
    this.digits2(day);
    this.buf[this.pos++] = 0x20;
    this.digits2(hours);
    this.buf[this.pos++] = 0x3a;
    this.digits2(minutes);
    this.buf[this.pos++] = 0x3a;
    this.digits2(seconds);
    if (rest !== 0) {
      this.buf[this.pos++] = 0x2e;
      this.buf[this.pos++] = 48 + Math.floor(rest / 100);
      this.digits2(rest % 100);
    }
  }
}

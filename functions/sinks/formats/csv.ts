import type { Cell } from '../../query/types';
import { cellToText } from '../cells';
import { lineFormat } from './buffered';
import type { FileFormat } from './types';

/**
 * RFC 4180 field: quoted when it holds a comma, quote, CR or LF; quotes doubled. NUL is dropped, as
 * the PostgreSQL output drops it: csv readers stop at it (Python's csv before 3.11: "line contains
 * NUL") or take it for the end of a C string.
 */
export function csvField(text: string): string {
  if (!/[",\r\n\0]/.test(text)) return text;
  const clean = text.includes('\0') ? text.replaceAll('\0', '') : text;
  return /[",\r\n]/.test(clean) ? `"${clean.replaceAll('"', '""')}"` : clean;
}

/**
 * One csv record. A record whose only field is empty is written `""`, as Python's csv module writes
 * it: an empty line would be dropped by every csv reader, losing the row.
 */
export function csvLine(cells: readonly Cell[]): string {
  const n = cells.length;
  if (n === 0) return '\r\n';
  const fields: string[] = [];
  for (let i = 0; i < n; i += 1) fields.push(csvField(cellToText(cells[i]!)));
  if (n === 1 && fields[0] === '') return '""\r\n';
  // The line end joined in with the last field: one flat string, which the output encodes without
  // first copying it flat (as it must a line concatenated after the join).
  fields[n - 1] += '\r\n';
  return fields.join(',');
}

const COMMA = 0x2c;
const QUOTE = 0x22;
const CR = 0x0d;
const LF = 0x0a;

/**
 * `csvLine(cells)` as UTF-8, written into `out` from `at`: the index after it, or -1 when it does not fit
 * (the caller writes it elsewhere; what was written past `at` is then garbage). A field of ASCII without
 * anything to quote (nearly every field) is copied byte by byte here, others go through `csvField`, so a
 * line is never a string of its own: on 50,000 forms the lines and their joins were a sixth of what the
 * export allocated.
 */
export function encodeCsvLine(cells: readonly Cell[], out: Buffer, at: number): number {
  const n = cells.length;
  const end = out.length;
  let p = at;
  for (let i = 0; i < n; i += 1) {
    const text = cellToText(cells[i]!);
    const length = text.length;
    // The comma, the field as ASCII, and room for the line end.
    if (p + length + 3 > end) return -1;
    if (i > 0) out[p++] = COMMA;
    let k = 0;
    for (; k < length; k += 1) {
      const c = text.charCodeAt(k);
      if (c >= 0x80 || c === QUOTE || c === COMMA || c === CR || c === LF || c === 0) break;
      out[p + k] = c;
    }
    if (k === length) {
      p += length;
      continue;
    }
    const field = csvField(text);
    if (p + Buffer.byteLength(field, 'utf8') + 2 > end) return -1;
    p += out.write(field, p, 'utf8');
  }
  // A record whose only field is empty: `""` (see `csvLine`).
  if (n === 1 && p === at) {
    if (p + 4 > end) return -1;
    out[p++] = QUOTE;
    out[p++] = QUOTE;
  }
  if (p + 2 > end) return -1;
  out[p++] = CR;
  out[p++] = LF;
  return p;
}

/** RFC 4180: CRLF line ends, header row, UTF-8 without BOM; cells rendered as DET's csv writer does. */
export const csvFormat: FileFormat = lineFormat({
  name: 'csv',
  extension: 'csv',
  contentType: 'text/csv; charset=utf-8',
  heading: (table) => csvLine(table.headings),
  line: csvLine,
  encode: encodeCsvLine,
});

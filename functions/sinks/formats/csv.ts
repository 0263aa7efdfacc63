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

/** RFC 4180: CRLF line ends, header row, UTF-8 without BOM; cells rendered as DET's csv writer does. */
export const csvFormat: FileFormat = lineFormat({
  name: 'csv',
  extension: 'csv',
  contentType: 'text/csv; charset=utf-8',
  heading: (table) => csvLine(table.headings),
  line: csvLine,
});

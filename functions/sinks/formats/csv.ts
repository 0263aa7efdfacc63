import type { Cell } from '../../query/types';
import { cellToText } from '../cells';
import { lineFormat } from './buffered';
import type { FileFormat } from './types';

/** RFC 4180 field: quoted when it holds a comma, quote, CR or LF; quotes doubled. */
export function csvField(text: string): string {
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/**
 * One csv record. A record whose only field is empty is written `""`, as Python's csv module writes
 * it: an empty line would be dropped by every csv reader, losing the row.
 */
export function csvLine(cells: readonly Cell[]): string {
  const line = cells.map((c) => csvField(cellToText(c))).join(',');
  return line === '' && cells.length === 1 ? '""\r\n' : `${line}\r\n`;
}

/** RFC 4180: CRLF line ends, header row, UTF-8 without BOM; cells rendered as DET's csv writer does. */
export const csvFormat: FileFormat = lineFormat({
  name: 'csv',
  extension: 'csv',
  contentType: 'text/csv; charset=utf-8',
  heading: (table) => csvLine(table.headings),
  line: csvLine,
});

import type { Cell } from '../../query/types';
import { cellToText } from '../cells';
import { lineFormat } from './buffered';
import type { FileFormat } from './types';

function mdCell(cell: Cell): string {
  // A pipe would end the cell and a newline the row; GitHub-flavoured markdown escapes the first and
  // has no escape for the second, so it becomes <br>.
  return cellToText(cell)
    .replaceAll('\\', '\\\\')
    .replaceAll('|', '\\|')
    .replace(/\r\n|\r|\n/g, '<br>');
}

function mdLine(cells: readonly Cell[]): string {
  return `| ${cells.map(mdCell).join(' | ')} |\n`;
}

/** `# table`, then a pipe table like DET's streaming markdown writer. */
export const markdownFormat: FileFormat = lineFormat({
  name: 'markdown',
  extension: 'md',
  contentType: 'text/markdown; charset=utf-8',
  heading: (table) =>
    `# ${table.name}\n\n${mdLine(table.headings)}| ${table.headings.map(() => '---').join(' | ')} |\n`,
  line: mdLine,
});

import { once } from 'node:events';
import ExcelJS from 'exceljs';
import type { Cell } from '../../query/types';
import { cellToJson } from '../cells';
import type { FileFormat } from './types';

/** Excel's row limit per sheet (heading row included). */
export const EXCEL_MAX_ROWS = 1_048_576;
/** Excel's limit on characters in one cell. */
const EXCEL_MAX_CELL_CHARS = 32_767;
const EXCEL_MAX_SHEET_NAME = 31;
const DATE_FORMAT = 'yyyy-mm-dd hh:mm:ss';

/**
 * A valid Excel sheet name for a table: characters Excel forbids (`[]:*?/\`) become `_`, no leading
 * or trailing apostrophe, at most 31 characters, with ` (n)` for continuation sheets kept inside the 31.
 */
export function sheetName(table: string, sheetNumber = 1): string {
  const suffix = sheetNumber > 1 ? ` (${sheetNumber})` : '';
  let base = table.replace(/[[\]:*?/\\]/g, '_').replace(/^'+|'+$/g, '');
  if (base === '' || base.toLowerCase() === 'history') base = `${base}_`;
  const room = EXCEL_MAX_SHEET_NAME - suffix.length;
  // Cut by code points so a surrogate pair is never split.
  base = Array.from(base).slice(0, room).join('');
  return `${base}${suffix}`;
}

function excelValue(cell: Cell): ExcelJS.CellValue {
  if (cell === null) return null;
  if (typeof cell === 'string') {
    return cell.length > EXCEL_MAX_CELL_CHARS ? cell.slice(0, EXCEL_MAX_CELL_CHARS) : cell;
  }
  if (typeof cell === 'number') return Number.isFinite(cell) ? cell : String(cell);
  if (typeof cell === 'boolean' || cell instanceof Date) return cell;
  const text = cellToJson(cell);
  return text.length > EXCEL_MAX_CELL_CHARS ? text.slice(0, EXCEL_MAX_CELL_CHARS) : text;
}

/**
 * One workbook per table and part, written with exceljs's streaming `WorkbookWriter`. Unlike DET
 * (which writes every value as text) numbers, booleans and dates are native Excel values, so sums and
 * date filters work. A table longer than the sheet limit continues on `name (2)`, `name (3)`, ...
 */
export const xlsxFormat: FileFormat = {
  name: 'xlsx',
  extension: 'xlsx',
  contentType: 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
  open(table, out, options = {}) {
    const maxRows = options.maxRowsPerSheet ?? EXCEL_MAX_ROWS;
    if (maxRows < 2) throw new RangeError(`maxRowsPerSheet must be at least 2, received ${maxRows}`);
    const workbook = new ExcelJS.stream.xlsx.WorkbookWriter({
      stream: out.stream,
      useStyles: true,
      useSharedStrings: false,
    });
    let sheetNumber = 0;
    let sheet: ExcelJS.Worksheet | undefined;
    let rowsInSheet = 0;
    const nextSheet = () => {
      sheet?.commit();
      sheetNumber += 1;
      sheet = workbook.addWorksheet(sheetName(table.name, sheetNumber));
      sheet.addRow([...table.headings]).commit();
      rowsInSheet = 1;
    };
    return {
      async writeRows(rows) {
        if (!sheet) nextSheet();
        for (const row of rows) {
          if (rowsInSheet >= maxRows) nextSheet();
          const written = sheet!.addRow(row.map(excelValue));
          row.forEach((cell, i) => {
            if (cell instanceof Date) written.getCell(i + 1).numFmt = DATE_FORMAT;
          });
          written.commit();
          rowsInSheet += 1;
        }
        // The zip writer buffers sheet data until the destination takes it; wait for it to drain so
        // memory stays flat however many rows come.
        // exceljs hands rows to its zip stream without backpressure; yielding lets the zip and the
        // destination consume them before the next batch arrives.
        await new Promise((resolve) => setImmediate(resolve));
        if (out.stream.writableNeedDrain) await once(out.stream, 'drain');
      },
      async end() {
        if (!sheet) nextSheet();
        sheet!.commit();
        await workbook.commit();
      },
    };
  },
};

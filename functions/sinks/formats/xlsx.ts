import type { Cell } from '../../query/types';
import { cellToJson } from '../cells';
import type { FileFormat } from './types';
import { type ZipEntry, ZipWriter } from './zip';

/** Excel's row limit per sheet (heading row included). */
export const EXCEL_MAX_ROWS = 1_048_576;
/** Excel's limit on characters in one cell. */
const EXCEL_MAX_CELL_CHARS = 32_767;
const EXCEL_MAX_SHEET_NAME = 31;
/** A sheet's XML past this many bytes continues on the next sheet, well before zip's 4 GiB per entry. */
const MAX_SHEET_BYTES = 3_500_000_000;
/** Sheet XML is handed to deflate in pieces of about this many characters. */
const WRITE_CHARS = 64 * 1024;
/** Excel's serial day number of 1970-01-01 (day 0 is 1899-12-30). */
const EXCEL_EPOCH_DAYS = 25_569;

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

// biome-ignore lint/suspicious/noControlCharactersInRegex: these are the characters XML 1.0 cannot hold
const XML_SPECIAL = /[&<>"\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF\uD800-\uDFFF]/;
const XML_INVALID =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: these are the characters XML 1.0 cannot hold
  /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** Text for an XML text node or attribute: escaped, and without characters XML 1.0 cannot hold. */
export function xmlText(text: string): string {
  if (!XML_SPECIAL.test(text)) return text;
  return text
    .replace(XML_INVALID, '')
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;');
}

/** `A`, `B`, ..., `Z`, `AA`, ... for a 0-based column. */
export function columnLetters(index: number): string {
  let n = index + 1;
  let out = '';
  while (n > 0) {
    const rest = (n - 1) % 26;
    out = String.fromCharCode(65 + rest) + out;
    n = Math.floor((n - 1) / 26);
  }
  return out;
}

function textCell(ref: string, text: string): string {
  const cut = text.length > EXCEL_MAX_CELL_CHARS ? text.slice(0, EXCEL_MAX_CELL_CHARS) : text;
  const space = /^\s|\s$/.test(cut) ? ' xml:space="preserve"' : '';
  return `<c r="${ref}" t="inlineStr"><is><t${space}>${xmlText(cut)}</t></is></c>`;
}

/** One cell's XML, or '' for an empty cell. Style 1 is the date format. */
function cellXml(ref: string, cell: Cell | undefined): string {
  if (cell === null || cell === undefined) return '';
  switch (typeof cell) {
    case 'string':
      return textCell(ref, cell);
    case 'number':
      return Number.isFinite(cell) ? `<c r="${ref}"><v>${cell}</v></c>` : textCell(ref, String(cell));
    case 'boolean':
      return `<c r="${ref}" t="b"><v>${cell ? 1 : 0}</v></c>`;
    default: {
      if (cell instanceof Date) {
        const ms = cell.getTime();
        return Number.isNaN(ms) ? '' : `<c r="${ref}" s="1"><v>${ms / 86_400_000 + EXCEL_EPOCH_DAYS}</v></c>`;
      }
      return textCell(ref, cellToJson(cell));
    }
  }
}

/** One `<row>` of sheet XML; `letters` are the column letters known in advance (more are computed). */
export function sheetRowXml(cells: readonly Cell[], number: number, letters: readonly string[]): string {
  let xml = `<row r="${number}">`;
  for (let i = 0; i < cells.length; i++) {
    xml += cellXml(`${letters[i] ?? columnLetters(i)}${number}`, cells[i]);
  }
  return `${xml}</row>`;
}

const XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n';
const MAIN_NS = 'http://schemas.openxmlformats.org/spreadsheetml/2006/main';
const REL_NS = 'http://schemas.openxmlformats.org/officeDocument/2006/relationships';
export const SHEET_START = `${XML_HEAD}<worksheet xmlns="${MAIN_NS}" xmlns:r="${REL_NS}"><sheetData>`;
export const SHEET_END = '</sheetData></worksheet>';
const STYLES =
  `${XML_HEAD}<styleSheet xmlns="${MAIN_NS}">` +
  '<numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy-mm-dd hh:mm:ss"/></numFmts>' +
  '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>' +
  '<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills>' +
  '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>' +
  '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>' +
  '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>' +
  '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>' +
  '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>';

/** The parts that describe the workbook, written after its sheets (whose number is known only then). */
export function workbookParts(sheets: readonly string[]): [string, string][] {
  const sheetList = sheets
    .map((name, i) => `<sheet name="${xmlText(name)}" sheetId="${i + 1}" r:id="rId${i + 1}"/>`)
    .join('');
  const sheetRels = sheets
    .map(
      (_, i) =>
        `<Relationship Id="rId${i + 1}" Type="${REL_NS}/worksheet" Target="worksheets/sheet${i + 1}.xml"/>`,
    )
    .join('');
  const sheetTypes = sheets
    .map(
      (_, i) =>
        `<Override PartName="/xl/worksheets/sheet${i + 1}.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>`,
    )
    .join('');
  const rels = 'http://schemas.openxmlformats.org/package/2006/relationships';
  return [
    ['xl/styles.xml', STYLES],
    [
      'xl/workbook.xml',
      `${XML_HEAD}<workbook xmlns="${MAIN_NS}" xmlns:r="${REL_NS}"><sheets>${sheetList}</sheets></workbook>`,
    ],
    [
      'xl/_rels/workbook.xml.rels',
      `${XML_HEAD}<Relationships xmlns="${rels}">${sheetRels}` +
        `<Relationship Id="rId${sheets.length + 1}" Type="${REL_NS}/styles" Target="styles.xml"/></Relationships>`,
    ],
    [
      '_rels/.rels',
      `${XML_HEAD}<Relationships xmlns="${rels}"><Relationship Id="rId1" Type="${REL_NS}/officeDocument" Target="xl/workbook.xml"/></Relationships>`,
    ],
    [
      '[Content_Types].xml',
      `${XML_HEAD}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">` +
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>' +
        '<Default Extension="xml" ContentType="application/xml"/>' +
        '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>' +
        '<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>' +
        `${sheetTypes}</Types>`,
    ],
  ];
}

/**
 * One workbook per table and part, streamed: each sheet's XML goes through deflate into the zip as
 * rows come, with backpressure from the destination, so memory does not grow with the rows (exceljs's
 * streaming writer, used before, buffered sheet data without limit when the destination was slower
 * than the rows). Strings are inline (no shared-strings table to hold). Unlike DET (which writes
 * every value as text) numbers, booleans and dates are native Excel values, so sums and date filters
 * work. A table longer than the sheet limit continues on `name (2)`, `name (3)`, ...
 */
export const xlsxFormat: FileFormat = {
  name: 'xlsx',
  extension: 'xlsx',
  contentType: 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
  open(table, out, options = {}) {
    const maxRows = options.maxRowsPerSheet ?? EXCEL_MAX_ROWS;
    if (maxRows < 2) throw new RangeError(`maxRowsPerSheet must be at least 2, received ${maxRows}`);
    const zip = new ZipWriter(out.stream);
    const letters = table.headings.map((_, i) => columnLetters(i));
    const sheets: string[] = [];
    let sheet: ZipEntry | undefined;
    let rowsInSheet = 0;
    let pending: string[] = [];
    let pendingChars = 0;

    const send = async () => {
      if (pending.length === 0) return;
      const text = pending.join('');
      pending = [];
      pendingChars = 0;
      await sheet!.write(text);
    };
    const add = async (xml: string) => {
      pending.push(xml);
      pendingChars += xml.length;
      if (pendingChars >= WRITE_CHARS) await send();
    };
    const rowXml = (cells: readonly Cell[], number: number) => sheetRowXml(cells, number, letters);
    const nextSheet = async () => {
      if (sheet) {
        await send();
        await sheet.write(SHEET_END);
        await sheet.end();
      }
      sheets.push(sheetName(table.name, sheets.length + 1));
      sheet = await zip.entry(`xl/worksheets/sheet${sheets.length}.xml`);
      await sheet.write(SHEET_START);
      rowsInSheet = 1;
      await add(rowXml(table.headings, 1));
    };
    return {
      async writeRows(rows) {
        if (!sheet) await nextSheet();
        for (const row of rows) {
          if (rowsInSheet >= maxRows || sheet!.bytes > MAX_SHEET_BYTES) await nextSheet();
          rowsInSheet += 1;
          await add(rowXml(row, rowsInSheet));
        }
      },
      async end() {
        if (!sheet) await nextSheet();
        await send();
        await sheet!.write(SHEET_END);
        await sheet!.end();
        for (const [name, text] of workbookParts(sheets)) {
          const entry = await zip.entry(name);
          await entry.write(text);
          await entry.end();
        }
        await zip.finish();
      },
    };
  },
};

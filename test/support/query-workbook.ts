/** DET query workbooks (Excel files) built with exceljs, for tests that need a query file of their own. */
import { writeFileSync } from 'node:fs';
import ExcelJS from 'exceljs';

export type SheetRows = (string | null)[][];

export const FORM_HEADINGS = [
  'Data Source',
  'Filter Name',
  'Filter Value',
  'Field',
  'Source Field',
  'Map Via',
];

/** The headings of a sheet in the layout HQ's Export Data screens generate: Source Field first, then Field. */
export const HQ_LAYOUT_HEADINGS = [
  'Source Field',
  'Field',
  'Map Via',
  'Data Source',
  'Filter Name',
  'Filter Value',
  'Table Name',
];

/** The headings of a sheet that names its table and uses DET's other columns (Format Via, Data Type, ...). */
export const TABLE_SHEET_HEADINGS = [
  'Data Source',
  'Filter Name',
  'Filter Value',
  'Table Name',
  'Field',
  'Source Field',
  'Map Via',
  'Format Via',
  'Data Type',
  'Alternate Source Fields',
];

/** A DET query workbook: each sheet a name and rows, the first row the headings. */
export async function workbook(sheets: { name: string; rows: SheetRows }[]): Promise<Buffer> {
  const wb = new ExcelJS.Workbook();
  for (const s of sheets) {
    const ws = wb.addWorksheet(s.name);
    s.rows.forEach((row, i) => {
      row.forEach((value, j) => {
        if (value !== null) ws.getCell(i + 1, j + 1).value = value;
      });
    });
  }
  return Buffer.from(await wb.xlsx.writeBuffer());
}

/** A form sheet in DET's layout: the first data row carries the source. */
export function formSheet(columns: [field: string, source: string, mapVia?: string][]): SheetRows {
  return [
    FORM_HEADINGS,
    ...columns.map(([field, source, mapVia], i) => [
      i === 0 ? 'form' : null,
      null,
      null,
      field,
      source,
      mapVia ?? null,
    ]),
  ];
}

/** Writes a query file of one form sheet named `Forms` with these columns to `path`, and returns `path`. */
export async function writeFormsQuery(
  path: string,
  columns: [field: string, source: string, mapVia?: string][],
): Promise<string> {
  writeFileSync(path, await workbook([{ name: 'Forms', rows: formSheet(columns) }]));
  return path;
}

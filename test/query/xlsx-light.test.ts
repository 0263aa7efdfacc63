import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import ExcelJS from 'exceljs';
import { describe, expect, it } from 'vitest';
import { readWorkbook, readWorkbookWithExcelJs, type SheetGrid } from '../../functions/query/excel';
import { readPlainWorkbook } from '../../functions/query/xlsx-light';

const ROOT = join(import.meta.dirname, '..', '..');

/** A grid as plain data: title and every cell holding a value, in order. */
function cellsOf(sheets: readonly SheetGrid[]) {
  return sheets.map((ws) => {
    const cells: [string, unknown][] = [];
    for (let c = 1; c <= ws.cols; c++) {
      const last = ws.lastRow ? ws.lastRow(c) : ws.rows;
      for (let r = 1; r <= last; r++) {
        const v = ws.get(r, c);
        if (v !== null) cells.push([`${c}:${r}`, v]);
      }
    }
    return { title: ws.title, cells: cells.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) };
  });
}

async function expectSameAsExcelJs(bytes: Buffer): Promise<void> {
  expect(readPlainWorkbook(bytes)).not.toBeNull();
  expect(cellsOf(await readWorkbook(bytes))).toEqual(cellsOf(await readWorkbookWithExcelJs(bytes)));
}

async function build(fill: (wb: ExcelJS.Workbook) => void): Promise<Buffer> {
  const wb = new ExcelJS.Workbook();
  fill(wb);
  return Buffer.from(await wb.xlsx.writeBuffer());
}

const repositoryWorkbooks = [
  ...['examples', 'examples/queries', 'test/fixtures/queries'].flatMap((dir) =>
    readdirSync(join(ROOT, dir))
      .filter((f) => f.endsWith('.xlsx') && f !== 'truncated.xlsx' && f !== 'not-a-workbook.xlsx')
      .map((f) => join(dir, f)),
  ),
];

describe('the plain workbook reader (query files without exceljs)', () => {
  it.each(repositoryWorkbooks)('reads %s exactly as exceljs does', async (path) => {
    await expectSameAsExcelJs(readFileSync(join(ROOT, path)));
  });

  it('reads strings, numbers, booleans, formulas, errors, rich text and empty sheets as exceljs does', async () => {
    const bytes = await build((wb) => {
      const ws = wb.addWorksheet('Values & <more>');
      ws.addRow(['Source Field', 'Field', 'Map Via', 'Data Source']);
      ws.addRow(['form.a & b < c > "d" \'e\'', 'line\r\nbreak\rand\nmore', '  spaced  ', 'form']);
      ws.addRow(['José अनीता 😀', 42, -3.25, 1e21]);
      ws.addRow([true, false, 0, '']);
      ws.getCell('E2').value = { formula: 'B3*2', result: 84 };
      ws.getCell('E3').value = { formula: 'A2', result: 'from a formula' };
      ws.getCell('E4').value = { error: '#N/A' };
      ws.getCell('F2').value = { richText: [{ text: 'rich ' }, { font: { bold: true }, text: 'text' }] };
      ws.getCell('Z40').value = 'far away';
      wb.addWorksheet('Empty');
      const hidden = wb.addWorksheet('Hidden', { state: 'hidden' });
      hidden.addRow(['still read']);
    });
    await expectSameAsExcelJs(bytes);
    const [values] = await readWorkbook(bytes);
    expect(values!.get(3, 2)).toBe(42);
    expect(values!.get(2, 2)).toBe('line\nbreak\nand\nmore');
  });

  it('reads a hyperlink cell as its text, as exceljs does', async () => {
    await expectSameAsExcelJs(
      await build((wb) => {
        const ws = wb.addWorksheet('Linked');
        ws.getCell('A1').value = { text: 'HQ', hyperlink: 'https://www.commcarehq.org' };
        ws.getCell('B1').value = 'plain';
      }),
    );
  });

  it('leaves dates and merged cells to exceljs, which gives what it always gave', async () => {
    const dated = await build((wb) => {
      const ws = wb.addWorksheet('Dated');
      ws.addRow(['Filter Value', new Date(Date.UTC(2024, 0, 2))]);
    });
    const merged = await build((wb) => {
      const ws = wb.addWorksheet('Merged');
      ws.addRow(['Data Source', 'form']);
      ws.addRow(['x', null]);
      ws.mergeCells('B1:B2');
    });
    for (const bytes of [dated, merged]) {
      expect(readPlainWorkbook(bytes)).toBeNull();
      expect(cellsOf(await readWorkbook(bytes))).toEqual(cellsOf(await readWorkbookWithExcelJs(bytes)));
    }
    expect((await readWorkbook(dated))[0]!.get(1, 2)).toBeInstanceOf(Date);
    expect((await readWorkbook(merged))[0]!.get(2, 2)).toBe('form');
  });

  it('leaves a broken file to exceljs, whose error is the one a user sees', async () => {
    const good = readFileSync(join(ROOT, 'test/fixtures/queries/small.xlsx'));
    for (const bytes of [good.subarray(0, good.length / 2), Buffer.from('not a zip at all')]) {
      expect(readPlainWorkbook(bytes)).toBeNull();
      await expect(readWorkbook(bytes)).rejects.toThrow();
    }
  });
});

/** Hostile query workbooks built in the test: a stray cell far away from the sheet's content. */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ExcelJS from 'exceljs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { captureIO } from '../cli/capture';
import { formSheet } from './support';

let work: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'ccexport-hostile-workbooks-'));
});

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe('a workbook dimension bomb', () => {
  it('validates like the same workbook without its stray cell at row 1,000,000, column 2000', async () => {
    // Prepare: a valid form sheet, plus one cell far away (the sheet's dimension becomes A1:BXX1000000).
    const wb = new ExcelJS.Workbook();
    const ws = wb.addWorksheet('Forms');
    formSheet([
      ['id', 'id'],
      ['name', 'form.name'],
    ]).forEach((row, i) => {
      row.forEach((value, j) => {
        if (value !== null) ws.getCell(i + 1, j + 1).value = value;
      });
    });
    ws.getCell(1_000_000, 2000).value = 'stray';
    const file = join(work, 'bomb.xlsx');
    writeFileSync(file, Buffer.from(await wb.xlsx.writeBuffer()));
    expect(statSync(file).size).toBeLessThan(20_000);

    // Act
    const io = captureIO();
    const code = await main(['validate-query', file], io);

    // Assert
    expect(io.err()).not.toMatch(/heap|memory|stack/i);
    expect(code).toBe(0);
    expect(io.out()).toMatch(/Forms/);
    expect(io.out()).toMatch(/form\.name/);
  }, 60_000);
});

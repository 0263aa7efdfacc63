/** Hostile workbooks and records: a stray cell far away from the sheet's content; a record nested 5,000 deep. */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ExcelJS from 'exceljs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { CHAOS_KEY, CHAOS_USER } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { formSheet, workbook } from '../support/query-workbook';
import { envelope, fakeHq } from './support';

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

describe('a record nested 5,000 levels deep', () => {
  it('stops the export with an error naming the record and the table, not a bare stack overflow', async () => {
    // Prepare: an HQ answering one form whose `deep` field nests 5,000 objects.
    const deep = `${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}`;
    const body = envelope(
      `[{"id": "deep-1", "indexed_on": "2024-01-01T00:00:00.000000Z", "form": {"name": "x", "deep": ${deep}}}]`,
    );
    const hq = await fakeHq(() => ({ status: 200, body }));
    const query = join(work, 'deep.xlsx');
    writeFileSync(
      query,
      await workbook([
        {
          name: 'Forms',
          rows: formSheet([
            ['id', 'id'],
            ['form', 'form'],
            ['any', '$..a'],
          ]),
        },
      ]),
    );
    try {
      // Act
      const io = captureIO({ CCEXPORT_API_KEY: CHAOS_KEY });
      const code = await main(
        [
          '--project',
          'p',
          '--commcare-hq',
          hq.url,
          '--username',
          CHAOS_USER,
          '--query',
          query,
          '--output-format',
          'csv',
          '--output',
          join(work, 'deep-out'),
          '--progress',
          'none',
        ],
        io,
      );

      // Assert
      expect(code).toBe(1);
      expect(io.err()).toMatch(/record "deep-1" on page 1 nests too deeply to be read for table "Forms"/);
    } finally {
      await hq.close();
    }
  }, 60_000);
});

import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ExcelJS from 'exceljs';
import JSZip from 'jszip';
import { describe, expect, it } from 'vitest';
import type { TableSpec } from '../../functions/query/types';
import { createSink, isSingleFileOutput } from '../../functions/sinks';
import { childTable, formRow, formsTable, parseCsv, run } from './helpers';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'ccexport-single-'));
}

function table(name: string): TableSpec {
  return { name, headings: ['id', 'value'], dataTypes: [null, null] };
}

describe('single-file outputs (DET)', () => {
  it('takes a file name with the format extension as one file, anything else as a folder', () => {
    expect(isSingleFileOutput('csv', 'reports.zip')).toBe(true);
    expect(isSingleFileOutput('csv', 's3://bucket/exports/reports.zip')).toBe(true);
    expect(isSingleFileOutput('xlsx', 'Report.XLSX')).toBe(true);
    expect(isSingleFileOutput('json', '-')).toBe(true);
    expect(isSingleFileOutput('csv', './exports')).toBe(false);
    expect(isSingleFileOutput('csv', 's3://bucket/prefix')).toBe(false);
    expect(isSingleFileOutput('sql', 'warehouse.zip')).toBe(false);
  });

  it('writes one zip entry per table, rows of interleaved writes kept in their table', async () => {
    const dir = tempDir();
    const sink = await createSink({ format: 'csv', output: join(dir, 'reports.zip') });
    await sink.begin([formsTable, childTable], run('r1'));
    await sink.writeRows('forms', [formRow(1)]);
    await sink.writeRows(childTable.name, [['c1', 'form-00001', 'x']]);
    await sink.writeRows('forms', [formRow(2)]);
    await sink.finish();
    const zip = await JSZip.loadAsync(readFileSync(join(dir, 'reports.zip')));
    expect(Object.keys(zip.files)).toEqual(['forms.csv', 'forms _ children: "q",;.csv']);
    const forms = parseCsv(await zip.file('forms.csv')!.async('string'));
    expect(forms.map((r) => r[0])).toEqual(['id', 'form-00001', 'form-00002']);
    expect(readdirSync(dir)).toEqual(['reports.zip']);
  });

  it('leaves the previous file intact and no temporary file when a run fails', async () => {
    const dir = tempDir();
    const path = join(dir, 'reports.zip');
    writeFileSync(path, 'previous export');
    const sink = await createSink({ format: 'csv', output: path });
    await sink.begin([formsTable], run('r2'));
    await sink.writeRows('forms', [formRow(1)]);
    await sink.abort(new Error('HQ went away'));
    expect(readFileSync(path, 'utf8')).toBe('previous export');
    expect(readdirSync(dir)).toEqual(['reports.zip']);
  });

  it('keeps no checkpoint: every run is a full export, as in DET', async () => {
    const dir = tempDir();
    const sink = await createSink({ format: 'csv', output: join(dir, 'reports.zip') });
    await sink.begin([formsTable], run('r3'));
    await sink.commit([
      {
        checkpointKey: 'key-1',
        project: 'demo',
        dataSource: 'form',
        tables: ['forms'],
        position: { indexedOn: '2024-01-01T00:00:00Z', boundaryIds: ['a'] },
        writtenAt: '2024-05-01T00:00:00.000Z',
      },
    ]);
    await sink.finish();
    expect(await sink.readCheckpoint('key-1', 'demo', 'form')).toBeNull();
    expect(readdirSync(dir)).toEqual(['reports.zip']);
  });

  it('names sheets within Excel 31 characters and unique, continuing a long table on a new sheet', async () => {
    const dir = tempDir();
    const long = 'household_members_with_a_very_long_name';
    const tables = [table(`${long}_one`), table(`${long}_two`), table('visits')];
    const sink = await createSink({ format: 'xlsx', output: join(dir, 'r.xlsx'), xlsxMaxRowsPerSheet: 3 });
    await sink.begin(tables, run('r4'));
    await sink.writeRows(tables[0]!.name, [
      ['a', 1],
      ['b', 2],
      ['c', 3],
    ]);
    await sink.writeRows(tables[1]!.name, [['d', 4]]);
    await sink.finish();
    const book = new ExcelJS.Workbook();
    await book.xlsx.readFile(join(dir, 'r.xlsx'));
    const names = book.worksheets.map((s) => s.name);
    expect(names).toEqual([
      'household_members_with_a_very_l',
      'household_members_with_a_ve (2)',
      'household_members_with_a_very~2',
      'visits',
    ]);
    expect(book.worksheets.map((s) => s.rowCount)).toEqual([3, 2, 2, 1]);
    expect(book.worksheets[1]!.getRow(2).values).toEqual([undefined, 'c', 3]);
  });

  it('prints json as one list of {name, headings, rows}, as DET does', async () => {
    const chunks: Buffer[] = [];
    const { Writable } = await import('node:stream');
    const stdout = new Writable({
      write(chunk, _enc, done) {
        chunks.push(chunk as Buffer);
        done();
      },
    });
    const sink = await createSink({ format: 'json', output: '-', stdout });
    await sink.begin([formsTable, table('empty')], run('r5'));
    await sink.writeRows('forms', [formRow(3)]);
    await sink.finish();
    const doc = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    expect(doc).toEqual([
      { name: 'forms', headings: formsTable.headings, rows: [expect.any(Array)] },
      { name: 'empty', headings: ['id', 'value'], rows: [] },
    ]);
  });
});

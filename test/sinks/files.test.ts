import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ExcelJS from 'exceljs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ExportLease } from '../../functions/checkpoints/object-store';
import { cellToText, formatDetDateTime, safeKeySegment } from '../../functions/sinks/cells';
import { FileSink } from '../../functions/sinks/file-sink';
import { csvField, csvFormat, csvLine, encodeCsvLine } from '../../functions/sinks/formats/csv';
import { sheetName } from '../../functions/sinks/formats/xlsx';
import { checkpoint, childTable, deadPid, formRow, formsTable, parseCsv, run } from './helpers';
import { createSink, LocalObjectStoreFor, readManifests } from './local-helpers';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'ccexport-files-'));
}

async function exportRows(
  format: 'csv' | 'json' | 'markdown' | 'xlsx',
  dir: string,
  count: number,
  extra = {},
) {
  const sink = await createSink({ format, output: dir, ...extra });
  await sink.begin([formsTable, childTable], run('run-1'));
  const rows = Array.from({ length: count }, (_, i) => formRow(i));
  for (let i = 0; i < rows.length; i += 10) await sink.writeRows('forms', rows.slice(i, i + 10));
  await sink.writeRows(childTable.name, [['c1', 'form-00001', 'a|b']]);
  await sink.finish();
  return rows;
}

describe('file formats', () => {
  it('renders cells as DET does for csv', () => {
    expect(formatDetDateTime(new Date(Date.UTC(2024, 1, 3, 4, 5, 6)))).toBe('2024-02-03 04:05:06');
    expect(cellToText(null)).toBe('');
    expect(cellToText(true)).toBe('True');
    expect(cellToText([new Date(Date.UTC(2024, 0, 1)), 1])).toBe('["2024-01-01 00:00:00",1]');
  });

  it('writes a row whose only cell is empty as "" so csv readers keep it, as DET does', () => {
    expect(csvLine([null])).toBe('""\r\n');
    expect(csvLine([''])).toBe('""\r\n');
    expect(csvLine(['', ''])).toBe(',\r\n');
    expect(csvLine(['a'])).toBe('a\r\n');
    expect(csvLine([])).toBe('\r\n');
  });

  it('writes each cell as its csv field, comma-separated, with CRLF after the last', () => {
    const cell = fc.oneof(
      fc.string({ maxLength: 12 }),
      fc.constantFrom('a,b', 'say "hi"', 'two\r\nlines', 'nul\0', '日本,語'),
      fc.integer(),
      fc.double(),
      fc.boolean(),
      fc.constant(null),
    );
    fc.assert(
      fc.property(fc.array(cell, { minLength: 2, maxLength: 12 }), (cells) => {
        expect(csvLine(cells)).toBe(`${cells.map((c) => csvField(cellToText(c))).join(',')}\r\n`);
      }),
      { numRuns: 2000 },
    );
  });

  it('encodes a line into a buffer as the bytes of its text, or says it does not fit', () => {
    const cell = fc.oneof(
      fc.string({ maxLength: 12 }),
      fc.string({ unit: 'grapheme', maxLength: 6 }),
      fc.constantFrom('', 'a,b', 'say "hi"', 'two\r\nlines', 'nul\0', '日本,語', 'é'),
      fc.integer(),
      fc.double(),
      fc.boolean(),
      fc.date({ noInvalidDate: true }),
      fc.constant(null),
    );
    fc.assert(
      fc.property(fc.array(cell, { maxLength: 8 }), fc.nat(40), fc.nat(200), (cells, at, room) => {
        const expected = Buffer.from(csvLine(cells), 'utf8');
        const out = Buffer.alloc(at + room);
        const end = encodeCsvLine(cells, out, at);
        if (expected.length > room) expect(end).toBe(-1);
        else if (end !== -1) expect(out.subarray(at, end)).toEqual(expected);
        // Refused only near the end of the buffer: with room for every field as written, it fits.
        if (room >= 3 * expected.length + 3 * cells.length + 4) expect(end).toBe(at + expected.length);
      }),
      { numRuns: 3000 },
    );
    const out = Buffer.alloc(16);
    expect(out.subarray(0, encodeCsvLine([null], out, 0)).toString()).toBe('""\r\n');
    expect(out.subarray(0, encodeCsvLine([], out, 0)).toString()).toBe('\r\n');
  });

  it('writes csv that reads back cell by cell, one file per table', async () => {
    const dir = tempDir();
    const rows = await exportRows('csv', dir, 35);
    const parsed = parseCsv(readFileSync(join(dir, 'forms', 'run-1.csv'), 'utf8'));
    expect(parsed[0]).toEqual(formsTable.headings);
    expect(parsed.slice(1)).toEqual(rows.map((r) => r.map(cellToText)));
    const childFolder = safeKeySegment(childTable.name);
    expect(readdirSync(join(dir, childFolder))).toEqual(['run-1.csv']);
  });

  it('writes one streamed JSON document per table with its rows', async () => {
    const dir = tempDir();
    const rows = await exportRows('json', dir, 12);
    const doc = JSON.parse(readFileSync(join(dir, 'forms', 'run-1.json'), 'utf8'));
    expect(doc.name).toBe('forms');
    expect(doc.headings).toEqual(formsTable.headings);
    expect(doc.rows).toHaveLength(12);
    expect(doc.rows[5]).toEqual([
      'form-00005',
      'name 5',
      5,
      false,
      '2024-01-06 10:20:30',
      5.5,
      { a: 5, b: [1, 'x'] },
      null,
    ]);
    expect(doc.rows.map((r: unknown[]) => r[0])).toEqual(rows.map((r) => r[0]));
  });

  it('writes markdown tables with a title and escaped pipes', async () => {
    const dir = tempDir();
    await exportRows('markdown', dir, 2);
    const text = readFileSync(join(dir, safeKeySegment(childTable.name), 'run-1.md'), 'utf8');
    expect(text).toBe(
      `# ${childTable.name}\n\n| id | parent | note |\n| --- | --- | --- |\n| c1 | form-00001 | a\\|b |\n`,
    );
  });

  it('writes xlsx with native numbers, booleans and dates that exceljs reads back', async () => {
    const dir = tempDir();
    const rows = await exportRows('xlsx', dir, 30);
    const workbook = new ExcelJS.Workbook();
    await workbook.xlsx.readFile(join(dir, 'forms', 'run-1.xlsx'));
    const sheet = workbook.worksheets[0]!;
    expect(sheet.name).toBe('forms');
    expect(sheet.rowCount).toBe(31);
    const row = sheet.getRow(8).values as unknown[];
    const source = rows[6]!;
    expect(row[1]).toBe(source[0]);
    expect(row[3]).toBe(6);
    expect(row[4]).toBe(true);
    expect((row[5] as Date).toISOString()).toBe((source[4] as Date).toISOString());
    expect(row[6]).toBe(6.5);
    expect(row[8]).toBeUndefined();
  });

  it('continues a table past the row limit on a sheet named "name (2)"', async () => {
    const dir = tempDir();
    await exportRows('xlsx', dir, 25, { xlsxMaxRowsPerSheet: 11 });
    const workbook = new ExcelJS.Workbook();
    await workbook.xlsx.readFile(join(dir, 'forms', 'run-1.xlsx'));
    expect(workbook.worksheets.map((s) => [s.name, s.rowCount])).toEqual([
      ['forms', 11],
      ['forms (2)', 11],
      ['forms (3)', 6],
    ]);
    expect(workbook.worksheets[2]!.getRow(2).getCell(1).value).toBe('form-00020');
  });

  it('keeps sheet names within 31 characters and free of forbidden characters', () => {
    const long = 'a'.repeat(40);
    expect(sheetName(long)).toHaveLength(31);
    expect(sheetName(long, 12)).toBe(`${'a'.repeat(26)} (12)`);
    expect(sheetName("'x[1]:y/z'")).toBe('x_1__y_z');
  });

  it('starts new part objects after a commit and records them in the manifest', async () => {
    const dir = tempDir();
    const sink = await createSink({ format: 'csv', output: dir });
    await sink.begin([formsTable], run('run-9'));
    await sink.writeRows('forms', [formRow(1)]);
    await sink.commit([checkpoint('2024-01-01T00:00:00')]);
    await sink.writeRows('forms', [formRow(2), formRow(3)]);
    await sink.finish();
    expect(readdirSync(join(dir, 'forms')).sort()).toEqual(['run-9-0002.csv', 'run-9.csv']);
    const [manifest] = await readManifests(LocalObjectStoreFor(dir));
    expect(manifest?.complete).toBe(true);
    expect(manifest?.objects.map((o) => [o.key, o.rows])).toEqual([
      ['forms/run-9.csv', 1],
      ['forms/run-9-0002.csv', 2],
    ]);
    expect(await sink.readCheckpoint('key-1', 'demo', 'form')).toMatchObject({
      position: { indexedOn: '2024-01-01T00:00:00' },
    });
  });

  it('leaves no partial file when a run aborts, only the parts committed before', async () => {
    const dir = tempDir();
    const sink = await createSink({ format: 'csv', output: dir });
    await sink.begin([formsTable], run('run-a'));
    await sink.writeRows('forms', [formRow(1)]);
    await sink.commit([checkpoint('2024-01-01T00:00:00')]);
    await sink.writeRows('forms', [formRow(2)]);
    await sink.abort(new Error('boom'));
    expect(readdirSync(join(dir, 'forms'))).toEqual(['run-a.csv']);
    const reread = await createSink({ format: 'csv', output: dir });
    expect((await reread.readCheckpoint('key-1', 'demo', 'form'))?.position.indexedOn).toBe(
      '2024-01-01T00:00:00',
    );
  });

  it('leaves no temporary file when an upload is aborted before its file has opened', async () => {
    const dir = tempDir();
    const store = LocalObjectStoreFor(dir);
    // The file opens asynchronously; an abort racing that open used to leave `<key>.tmp` behind.
    for (let i = 0; i < 100; i++) {
      const upload = store.openUpload(`forms/${i}.csv`, 'text/csv');
      const written = upload.write(Buffer.from('id\n')).catch(() => undefined);
      await upload.abort();
      await written;
      // A pause between uploads, as between a run's tables: back to back, the race is rarely lost.
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    // An open still in flight would create its file within a few milliseconds: give it the chance.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(readdirSync(join(dir, 'forms'))).toEqual([]);
  });

  it('refuses a second run of the same export while the first holds its lease', async () => {
    const dir = tempDir();
    const first = await createSink({ format: 'csv', output: dir });
    await first.begin([formsTable], run('run-1'));
    const second = await createSink({ format: 'csv', output: dir });
    const refused = await second.begin([formsTable], run('run-2')).catch((e: unknown) => e as Error);
    expect(refused?.message).toMatch(
      /^Another run \(run-1\) of this export is in progress for project "demo"/,
    );
    const lease = join(dir, 'checkpoints', 'key-1.demo.lease.json');
    const { expiresAt } = JSON.parse(readFileSync(lease, 'utf8')) as { expiresAt: string };
    expect(refused?.message).toContain(`held until ${expiresAt}`);
    expect(refused?.message).toContain(`delete ${lease}`);
    await first.finish();
    await second.begin([formsTable], run('run-3'));
    await second.finish();
  });

  it('takes over at once the lease of a run killed on this machine', async () => {
    const dir = tempDir();
    // What `kill -9` leaves: a lease of this host, unexpired, whose process is gone.
    await new ExportLease(LocalObjectStoreFor(dir), 'key-1', 'demo', 'run-killed', 120, {
      holder: { pid: await deadPid() },
    }).acquire();
    const next = await createSink({ format: 'csv', output: dir });
    await next.begin([formsTable], run('run-next'));
    await next.writeRows('forms', [formRow(1)]);
    await next.commit([checkpoint('2024-01-01T00:00:00')]);
    await next.finish();
    expect(existsSync(join(dir, 'checkpoints', 'key-1.demo.lease.json'))).toBe(false);
  });

  it('keeps its lease through a run longer than the lease and stops renewing it after finish', async () => {
    const dir = tempDir();
    let leaseWrites = 0;
    const local = LocalObjectStoreFor(dir);
    const counted = Object.assign(Object.create(local) as typeof local, {
      put: (...args: Parameters<typeof local.put>) => {
        if (args[0].endsWith('.lease.json')) leaseWrites++;
        return local.put(...args);
      },
    });
    const sink = new FileSink(counted, csvFormat, { leaseSeconds: 1.5 });
    await sink.begin([formsTable], run('run-slow'));
    for (let i = 0; i < 6; i++) {
      await sink.writeRows('forms', [formRow(i)]);
      await new Promise((r) => setTimeout(r, 500)); // a slow page: 3 s in all, twice the lease
    }
    const other = await createSink({ format: 'csv', output: dir, leaseSeconds: 1.5 });
    await expect(other.begin([formsTable], run('run-other'))).rejects.toThrow(/Another run \(run-slow\)/);
    await sink.commit([checkpoint('2024-01-01T00:00:00')]);
    await sink.finish();
    const written = leaseWrites;
    expect(written).toBeGreaterThanOrEqual(4);
    await new Promise((r) => setTimeout(r, 1_200));
    expect(leaseWrites).toBe(written);
    expect(await sink.readCheckpoint('key-1', 'demo', 'form')).toMatchObject({
      position: { indexedOn: '2024-01-01T00:00:00' },
    });
  });
});

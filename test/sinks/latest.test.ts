import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import type { Cell, TableSpec } from '../../functions/query/types';
import { commitFileReconcile } from '../../functions/sinks/file-reconcile';
import { committedDeletionKeys, latestStateSql } from '../../functions/sinks/formats/parquet/latest-sql';
import {
  duckdb,
  duckdbAvailable,
  duckdbDeletionRecords,
  duckdbManifests,
  sqlString,
} from '../support/duckdb';
import { parseCsv, run } from './helpers';
import { createSink, LocalObjectStoreFor } from './local-helpers';

const hasDuckdb = duckdbAvailable();
const exec = promisify(execFile);
const CLI = join(import.meta.dirname, '..', '..', 'bin', 'ccexport.js');

const cases: TableSpec = {
  name: 'cases',
  headings: ['id', 'name', 'visits', 'Last Visit'],
  dataTypes: [null, null, 'integer', 'date'],
};
/** A table whose rows carry deletion marks (`--deletions mark`). */
const households: TableSpec = {
  name: 'households',
  headings: ['id', 'head', '_deleted', '_deleted_at'],
  dataTypes: [null, null, null, null],
};

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'ccexport-latest-'));
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function oneRun(
  dir: string,
  format: 'csv' | 'xlsx' | 'json' | 'parquet',
  runId: string,
  rows: { cases?: Cell[][]; households?: Cell[][] },
): Promise<void> {
  const sink = await createSink({ format, output: dir });
  await sink.begin([cases, households], run(runId));
  if (rows.cases) await sink.writeRows('cases', rows.cases);
  if (rows.households) await sink.writeRows('households', rows.households);
  await sink.finish();
  // Runs are ordered by start time (milliseconds); keep the next one strictly later.
  await pause(5);
}

/** A deletions object as the deletions output writes it: `<table>/deletions/<run-id>.csv`, not listed yet. */
function writeDeletionsObject(dir: string, table: string, runId: string, ids: string[], at: Date) {
  mkdirSync(join(dir, table, 'deletions'), { recursive: true });
  const lines = ['id,deleted_at,reason', ...ids.map((id) => `${id},${at.toISOString()},deleted`)];
  const body = `${lines.join('\r\n')}\r\n`;
  const key = `${table}/deletions/${runId}.csv`;
  writeFileSync(join(dir, key), body);
  return { table, key, uri: join(dir, key), part: 1, rows: ids.length, bytes: Buffer.byteLength(body) };
}

/** A deletion record committed as a reconcile commits it: the object, then a manifest listing it. */
async function recordDeletion(
  dir: string,
  format: 'csv' | 'xlsx' | 'json' | 'parquet',
  table: string,
  runId: string,
  ids: string[],
  at: Date,
): Promise<void> {
  const object = writeDeletionsObject(dir, table, runId, ids, at);
  await commitFileReconcile(LocalObjectStoreFor(dir), {
    runId,
    checkpointKey: 'latest-test',
    project: 'demo',
    startedAt: at.toISOString(),
    outputFormat: format,
    deletionMode: 'remove',
    deletions: [object],
  });
}

/**
 * Two runs and a deletion record between them. Cases: c1 unchanged; c2 updated; c3 (and its child row c3.1) deleted; c4 new,
 * written twice in one run; c5 deleted, then written again (unarchived). Households: h1 marked
 * deleted by the second run (`_deleted`), h2 live.
 */
async function history(dir: string, format: 'csv' | 'xlsx' | 'json' | 'parquet'): Promise<void> {
  await oneRun(dir, format, 'run-1', {
    cases: [
      ['c1', 'Ann', 1, '2024-01-01'],
      ['c2', 'Bob', 1, '2024-01-02'],
      ['c3', 'Çağla', 1, '2024-01-03'],
      // A child row of c3 (child ids extend the record's): c3's deletion covers it.
      ['c3.1', 'Çağla child', 1, '2024-01-03'],
      ['c5', 'Eve', 1, '2024-01-05'],
    ],
    households: [
      ['h1', 'Ann', false, null],
      ['h2', 'Bob', false, null],
    ],
  });
  await recordDeletion(dir, format, 'cases', 'run-1b', ['c3', 'c5'], new Date());
  await pause(5);
  await oneRun(dir, format, 'run-2', {
    cases: [
      ['c2', 'Bob 二', 2, '2024-02-02'],
      ['c4', 'Dan', null, null],
      // Updated twice in one run: the later row wins.
      ['c4', 'Dan 2', 1, null],
      ['c5', 'Eve again', 2, '2024-02-05'],
    ],
    households: [['h1', 'Ann', true, '2024-02-01 00:00:00']],
  });
}

const expectedCases = [
  ['c1', 'Ann', '1', '2024-01-01'],
  ['c2', 'Bob 二', '2', '2024-02-02'],
  ['c4', 'Dan 2', '1', ''],
  ['c5', 'Eve again', '2', '2024-02-05'],
];

describe('ccexport latest', () => {
  it('writes one consolidated csv per table: newest version per id, deletions applied', async () => {
    const dir = tempDir();
    await history(dir, 'csv');

    const { stdout } = await exec(process.execPath, [CLI, 'latest', '--output', dir]);

    expect(stdout).toContain('cases: 4 rows (of 9 versions; 2 deleted)');
    const read = parseCsv(readFileSync(join(dir, 'latest', 'cases.csv'), 'utf8'));
    expect(read[0]).toEqual(cases.headings);
    expect(read.slice(1).sort((a, b) => a[0]!.localeCompare(b[0]!))).toEqual(expectedCases);
    const households = parseCsv(readFileSync(join(dir, 'latest', 'households.csv'), 'utf8'));
    expect(households.slice(1)).toEqual([['h2', 'Bob', 'False', '']]);
  });

  it('ignores a deletions object no manifest lists (a reconcile killed before its commit)', async () => {
    const dir = tempDir();
    await history(dir, 'csv');
    writeDeletionsObject(dir, 'cases', 'killed-reconcile', ['c1', 'c2'], new Date(Date.now() + 60_000));

    const { stdout } = await exec(process.execPath, [CLI, 'latest', '--output', dir]);

    expect(stdout).toContain('cases: 4 rows (of 9 versions; 2 deleted)');
    const read = parseCsv(readFileSync(join(dir, 'latest', 'cases.csv'), 'utf8'));
    expect(read.slice(1).sort((a, b) => a[0]!.localeCompare(b[0]!))).toEqual(expectedCases);
  });

  it('reads xlsx runs back and writes the consolidated table in another format (--output-format json --to)', async () => {
    const dir = tempDir();
    const to = tempDir();
    await history(dir, 'xlsx');

    await exec(process.execPath, [
      CLI,
      'latest',
      '--output',
      dir,
      '--output-format',
      'json',
      '--to',
      to,
      '--table',
      'cases',
    ]);

    const doc = JSON.parse(readFileSync(join(to, 'latest', 'cases.json'), 'utf8'));
    expect(doc.headings).toEqual(cases.headings);
    // xlsx keeps numbers as numbers.
    expect(doc.rows.map((r: Cell[]) => [r[0], r[2]]).sort()).toEqual([
      ['c1', 1],
      ['c2', 2],
      ['c4', 1],
      ['c5', 2],
    ]);
  });

  it('fails naming the folder when it holds no export', async () => {
    const dir = tempDir();
    const result = await exec(process.execPath, [CLI, 'latest', '--output', dir]).catch((e) => e);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('has no run manifests');
  });
});

describe('the latest/ snapshot kept after each run (keepLatest)', () => {
  it('replaces latest/<table>.csv after each run with the current table', async () => {
    const dir = tempDir();
    const runWith = async (runId: string, rows: Cell[][]) => {
      const sink = await createSink({ format: 'csv', output: dir, keepLatest: true });
      await sink.begin([cases], run(runId));
      await sink.writeRows('cases', rows);
      await sink.finish();
      await pause(5);
      return parseCsv(readFileSync(join(dir, 'latest', 'cases.csv'), 'utf8')).slice(1);
    };

    expect(
      await runWith('run-1', [
        ['c1', 'Ann', 1, null],
        ['c2', 'Bob', 1, null],
      ]),
    ).toEqual([
      ['c1', 'Ann', '1', ''],
      ['c2', 'Bob', '1', ''],
    ]);
    expect(await runWith('run-2', [['c2', 'Bob', 2, null]])).toEqual([
      ['c1', 'Ann', '1', ''],
      ['c2', 'Bob', '2', ''],
    ]);
  });

  it('keeps one workbook per table for xlsx outputs, readable back', async () => {
    const dir = tempDir();
    const sink = await createSink({ format: 'xlsx', output: dir, keepLatest: true });
    await sink.begin([cases], run('run-1'));
    await sink.writeRows('cases', [
      ['c1', 'Ann', 1, null],
      ['c1', 'Ann B', 2, null],
    ]);
    await sink.finish();
    const { default: ExcelJS } = await import('exceljs');
    const book = new ExcelJS.Workbook();
    await book.xlsx.readFile(join(dir, 'latest', 'cases.xlsx'));
    const sheet = book.worksheets[0]!;
    expect(sheet.rowCount).toBe(2);
    expect(sheet.getRow(2).values).toEqual([undefined, 'c1', 'Ann B', 2]);
  });

  it('fails at once for an output that cannot keep one (markdown, a single file, sql)', async () => {
    await expect(createSink({ format: 'markdown', output: tempDir(), keepLatest: true })).rejects.toThrow(
      'latest/ snapshots are kept for csv, xlsx, json and parquet outputs',
    );
    await expect(
      createSink({ format: 'csv', output: join(tempDir(), 'reports.zip'), keepLatest: true }),
    ).rejects.toThrow('to a folder or s3:// prefix only');
  });
});

describe.skipIf(!hasDuckdb)('the <table>_latest SQL on DuckDB over the Parquet files', () => {
  it('gives the rows ccexport latest gives from the same parquet output (unlisted deletions ignored by both)', async () => {
    const dir = tempDir();
    await history(dir, 'parquet');
    // A reconcile killed before its manifest: its deletions object is listed nowhere and counts nowhere.
    writeDeletionsObject(dir, 'cases', 'killed-reconcile', ['c1', 'c2'], new Date(Date.now() + 60_000));
    await exec(process.execPath, [CLI, 'latest', '--output', dir, '--output-format', 'csv']);

    const source = (table: string) =>
      `read_parquet(${sqlString(join(dir, table, '*', '*.parquet'))}, union_by_name = true)`;
    const deletions = {
      records: duckdbDeletionRecords(join(dir, 'cases')),
      committed: committedDeletionKeys(duckdbManifests(dir)),
    };
    const casesSql = latestStateSql(cases, { source: source('cases'), deletions });
    const fromView = duckdb(`SELECT * FROM (${casesSql}) ORDER BY id`);

    expect(fromView.columns).toEqual(['id', 'name', 'visits', 'last_visit', '_run_id', '_exported_at']);
    expect(fromView.types.slice(0, 4)).toEqual(['VARCHAR', 'VARCHAR', 'BIGINT', 'DATE']);
    expect(fromView.rows.map((r) => r.slice(0, 5))).toEqual([
      ['c1', 'Ann', 1, '2024-01-01', 'run-1'],
      ['c2', 'Bob 二', 2, '2024-02-02', 'run-2'],
      ['c4', 'Dan 2', 1, null, 'run-2'],
      ['c5', 'Eve again', 2, '2024-02-05', 'run-2'],
    ]);
    const fromCommand = parseCsv(readFileSync(join(dir, 'latest', 'cases.csv'), 'utf8'))
      .slice(1)
      // csv renders a date read from Parquet as DET renders dates: with 00:00:00.
      .map(([id, name, visits, last]) => [id, name, visits, last!.slice(0, 10)]);
    expect(fromCommand.sort((a, b) => a[0]!.localeCompare(b[0]!))).toEqual(
      fromView.rows.map((r) => r.slice(0, 4).map((v) => (v === null ? '' : String(v)))),
    );

    const householdsSql = latestStateSql(households, { source: source('households') });
    expect(duckdb(householdsSql!).rows.map((r) => r.slice(0, 3))).toEqual([['h2', 'Bob', false]]);
  });

  it('has no latest state for a table without an id column', () => {
    expect(latestStateSql({ headings: ['name'], dataTypes: [null] }, { source: 't' })).toBeNull();
  });
});

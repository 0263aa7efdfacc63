/**
 * The sliced reconcile's core against the sandbox and a real PostgreSQL: between two slices the
 * export's lock is free, so an export run may add rows of records the listing has already passed; the
 * last slice lists each source again from where its listing ended, so those rows are not taken for
 * deleted.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ExcelJS from 'exceljs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { CommCareClient } from '../../functions/commcare';
import type { JsonObject } from '../../functions/common/json';
import { type ReconcileCursor, runReconcileSlice } from '../../functions/export/reconcile';
import { compileQueryFile } from '../../functions/query';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { connectPostgres } from '../../functions/sinks/postgres/connection';
import { PostgresReconcileTarget } from '../../functions/sinks/postgres/reconcile';
import { captureIO } from '../cli/capture';

const KEY = 'reconcile-slices-core-key-77e1';
const USER = 'exporter@example.org';

let sandbox: RunningSandbox;
let admin: pg.Client;
let work: string;
/** Two data sources: registration forms, then household cases. */
let query: string;
const XMLNS = 'http://openrosa.org/formdesigner/5C1B5E2A-7F3D-4E11-9C2B-REGISTRATION';

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 83,
    projects: [{ name: 'q1', forms: 3_000, cases: 1_000, mobileUsers: 8 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  admin = new pg.Client({ connectionString: inject('pgUrl') });
  await admin.connect();
  work = mkdtempSync(join(tmpdir(), 'ccexport-reconcile-slices-'));
  query = join(work, 'households-and-cases.xlsx');
  const book = new ExcelJS.Workbook();
  const head = [
    'Source Field',
    'Field',
    'Map Via',
    'Data Source',
    'Filter Name',
    'Filter Value',
    'Table Name',
  ];
  book
    .addWorksheet('Households')
    .addRows([head, ['id', 'id', null, 'form', 'xmlns.exact', XMLNS, 'households']]);
  book.addWorksheet('Cases').addRows([head, ['id', 'id', null, 'case', 'type', 'household', 'cases']]);
  await book.xlsx.writeFile(query);
});

afterAll(async () => {
  await admin.end();
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

async function exportRun(url: string): Promise<void> {
  const io = captureIO({ CCEXPORT_API_KEY: KEY });
  const args = ['--project', 'q1', '--commcare-hq', sandbox.url, '--username', USER, '--query', query];
  expect(await main([...args, '--output-format', 'sql', '--output', url], io), io.err()).toBe(0);
}

async function households(url: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<{ id: string }>('select id from households')).rows.map((r) => r.id);
  } finally {
    await client.end();
  }
}

describe('runReconcileSlice', () => {
  it('keeps the rows an export run adds between slices for records the listing has passed', async () => {
    const name = `slices_${randomBytes(4).toString('hex')}`;
    await admin.query(`create database ${name}`);
    const url = inject('pgUrl').replace(/\/postgres$/, `/${name}`);
    await exportRun(url);
    const registration = [...sandbox.dataset.finalState('q1', 'form')]
      .map(([, f]) => f)
      .find((f) => String((f.form as JsonObject)['@xmlns']).endsWith('REGISTRATION') && f.archived !== true)!;
    const id = String(registration.id);
    // Archived (and re-indexed): the next run removes its rows.
    sandbox.apply('q1', { kind: 'archive-form', id });
    await exportRun(url);
    expect(await households(url)).not.toContain(id);
    const compiled = await compileQueryFile(query, { baseUrl: sandbox.url, forSql: true });
    const plan = {
      project: 'q1',
      sources: compiled.sources,
      checkpointKey: compiled.queryFileMd5,
      pageSize: 200,
      mode: 'remove' as const,
    };
    const client = new CommCareClient({ baseUrl: sandbox.url, username: USER, apiKey: KEY });

    let listing = true;
    let cursor: ReconcileCursor | null = null;
    let slices = 0;
    for (;;) {
      slices += 1;
      const result = await runReconcileSlice(
        {
          source: client,
          target: new PostgresReconcileTarget(() => connectPostgres(url)),
          runId: 'sliced-1',
          shouldStop: () => listing,
        },
        plan,
        cursor,
      );
      if (result.done) break;
      cursor = result.cursor;
      if (cursor.source === 1 && listing) {
        // The forms are listed, the cases not yet: the form is unarchived (re-indexed after the end of
        // the forms' listing) and an export run writes it back.
        sandbox.apply('q1', { kind: 'unarchive-form', id });
        await exportRun(url);
        expect(await households(url)).toContain(id);
        listing = false;
      }
    }

    expect(slices).toBeGreaterThanOrEqual(3);
    expect(await households(url)).toContain(id);
  }, 300_000);

  it('keeps the ids another reconcile of the export has staged: two reconciles listing at once both remove nothing', async () => {
    // prepare: an exported database, and a reconcile (A) that has listed its first page
    const name = `slices_both_${randomBytes(4).toString('hex')}`;
    await admin.query(`create database ${name}`);
    const url = inject('pgUrl').replace(/\/postgres$/, `/${name}`);
    await exportRun(url);
    const before = (await households(url)).sort();
    const compiled = await compileQueryFile(query, { baseUrl: sandbox.url, forSql: true });
    const plan = {
      project: 'q1',
      sources: compiled.sources,
      checkpointKey: compiled.queryFileMd5,
      pageSize: 200,
      mode: 'remove' as const,
    };
    const client = new CommCareClient({ baseUrl: sandbox.url, username: USER, apiKey: KEY });
    const slice = (runId: string, cursor: ReconcileCursor | null, stop: boolean) =>
      runReconcileSlice(
        {
          source: client,
          target: new PostgresReconcileTarget(() => connectPostgres(url)),
          runId,
          shouldStop: () => stop,
        },
        plan,
        cursor,
      );
    const first = await slice('reconcile-a', null, true);
    expect(first.done).toBe(false);

    // act: a second reconcile (B, say started by hand) runs from start to end, then A goes on
    const other = await slice('reconcile-b', null, false);
    const rest = await slice('reconcile-a', first.done ? null : first.cursor, false);

    // assert: nothing is gone in HQ, so neither removes a row
    expect(other.done && other.summary.gone).toBe(0);
    expect(rest.done && rest.summary.gone).toBe(0);
    expect((await households(url)).sort()).toEqual(before);
    // and each took away its own staged ids when it committed
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    try {
      const { rows } = await db.query<{ n: string }>(
        'select count(*) as n from commcare_export_reconcile_ids',
      );
      expect(rows[0]?.n).toBe('0');
    } finally {
      await db.end();
    }
  }, 300_000);
});

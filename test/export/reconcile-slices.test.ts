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
import { writeHouseholdsMembersCasesQuery } from '../support/reconcile-query';

const KEY = 'reconcile-slices-core-key-77e1';
const USER = 'exporter@example.org';

let sandbox: RunningSandbox;
let admin: pg.Client;
let work: string;
/** Two data sources: registration forms (with their members as child rows), then household cases. */
let query: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 83,
    projects: [{ name: 'q1', forms: 3_000, cases: 1_000, mobileUsers: 8 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  admin = new pg.Client({ connectionString: inject('pgUrl') });
  await admin.connect();
  work = mkdtempSync(join(tmpdir(), 'ccexport-reconcile-slices-'));
  query = join(work, 'households-members-cases.xlsx');
  await writeHouseholdsMembersCasesQuery(query);
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

/** The rows a query returns from the database at `url`. */
async function rowsOf<R extends pg.QueryResultRow>(url: string, sql: string): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql)).rows;
  } finally {
    await client.end();
  }
}

async function households(url: string): Promise<string[]> {
  return (await rowsOf<{ id: string }>(url, 'select id from households')).map((r) => r.id);
}

/** A new database with one export run in it. */
async function exportedDatabase(prefix: string): Promise<string> {
  const name = `${prefix}_${randomBytes(4).toString('hex')}`;
  await admin.query(`create database ${name}`);
  const url = inject('pgUrl').replace(/\/postgres$/, `/${name}`);
  await exportRun(url);
  return url;
}

/** Runs one slice of the reconcile `runId` of the query's export into `url`. */
async function reconcileSlice(
  url: string,
  runId: string,
  cursor: ReconcileCursor | null,
  stop: () => boolean,
) {
  const compiled = await compileQueryFile(query, { baseUrl: sandbox.url, forSql: true });
  return await runReconcileSlice(
    {
      source: new CommCareClient({ baseUrl: sandbox.url, username: USER, apiKey: KEY }),
      target: new PostgresReconcileTarget(() => connectPostgres(url)),
      runId,
      shouldStop: stop,
    },
    {
      project: 'q1',
      sources: compiled.sources,
      checkpointKey: compiled.queryFileMd5,
      pageSize: 200,
      mode: 'remove',
    },
    cursor,
  );
}

describe('runReconcileSlice', () => {
  it('keeps the rows an export run adds between slices for records the listing has passed', async () => {
    const url = await exportedDatabase('slices');
    const registration = [...sandbox.dataset.finalState('q1', 'form')]
      .map(([, f]) => f)
      .find((f) => String((f.form as JsonObject)['@xmlns']).endsWith('REGISTRATION') && f.archived !== true)!;
    const id = String(registration.id);
    // Archived (and re-indexed): the next run removes its rows.
    sandbox.apply('q1', { kind: 'archive-form', id });
    await exportRun(url);
    expect(await households(url)).not.toContain(id);
    let listing = true;
    let cursor: ReconcileCursor | null = null;
    let slices = 0;
    for (;;) {
      slices += 1;
      const result = await reconcileSlice(url, 'sliced-1', cursor, () => listing);
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
    const url = await exportedDatabase('slices_both');
    const before = (await households(url)).sort();
    const first = await reconcileSlice(url, 'reconcile-a', null, () => true);
    expect(first.done).toBe(false);

    // act: a second reconcile (B, say started by hand) runs from start to end, then A goes on
    const other = await reconcileSlice(url, 'reconcile-b', null, () => false);
    const rest = await reconcileSlice(url, 'reconcile-a', first.done ? null : first.cursor, () => false);

    // assert: nothing is gone in HQ, so neither removes a row
    expect(other.done && other.summary.gone).toBe(0);
    expect(rest.done && rest.summary.gone).toBe(0);
    expect((await households(url)).sort()).toEqual(before);
    // and each took away its own staged ids when it committed
    expect(await rowsOf(url, 'select id from commcare_export_reconcile_ids')).toEqual([]);
  }, 300_000);
});

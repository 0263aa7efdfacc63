/**
 * `ccexport reconcile` against PostgreSQL: deleted forms, a deleted worker's forms and forms archived
 * without re-indexing are removed (or marked) with their child rows; the 20% guard; kill -9.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { openEmbeddedDatabase } from '../../functions/sinks';
import { runCli } from '../chaos/support';
import { createDatabase, withDb } from '../support/databases';
import { liveRegistrationIds, registrationsWithMembers } from '../support/registrations';
import { runInProcess, sandboxExportArgs } from '../support/sandbox-export';

const KEY = 'reconcile-test-key-93ab0';
const USER = 'exporter@example.org';

let sandbox: RunningSandbox;
let work: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 29,
    projects: [
      { name: 'p1', forms: 600, cases: 40, mobileUsers: 8 },
      { name: 'p2', forms: 600, cases: 40, mobileUsers: 8 },
      { name: 'p3', forms: 600, cases: 40, mobileUsers: 8 },
      { name: 'p4', forms: 300, cases: 40, mobileUsers: 8 },
    ],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  work = mkdtempSync(join(tmpdir(), 'ccexport-reconcile-'));
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

function args(command: string, project: string, output: string, ...extra: string[]): string[] {
  const source = { url: sandbox.url, project, username: USER, progress: 'json' };
  return [command, ...sandboxExportArgs(source, 'sql', output, '--batch-size', '100', ...extra)];
}

async function cli(command: string, project: string, output: string, ...extra: string[]) {
  return await runInProcess(args(command, project, output, ...extra), { CCEXPORT_API_KEY: KEY });
}

async function query(url: string, sql: string): Promise<Record<string, unknown>[]> {
  return await withDb(url, async (db) => (await db.query(sql)).rows);
}

const liveRegistrations = (project: string): string[] => liveRegistrationIds(sandbox.dataset, project);

/** Live registration forms with members (child rows). */
function registrations(project: string, n: number): JsonObject[] {
  return registrationsWithMembers(sandbox.dataset, project).slice(0, n);
}

const ids = (rows: Record<string, unknown>[]) => rows.map((r) => String(r.id)).sort();

describe('ccexport reconcile', () => {
  it('removes deleted forms, a deleted worker’s forms and forms archived in place, with their child rows', async () => {
    const url = await createDatabase('reconcile');
    expect((await cli('run', 'p1', url)).code).toBe(0);
    const [deleted, archivedInPlace] = registrations('p1', 2);
    sandbox.apply(
      'p1',
      { kind: 'archive-form', id: String(deleted!.id), reindex: false },
      { kind: 'delete-form', id: String(deleted!.id) },
      { kind: 'archive-form', id: String(archivedInPlace!.id), reindex: false },
    );
    const worker = String((registrations('p1', 5)[4]!.metadata as JsonObject).userID);
    sandbox.apply('p1', { kind: 'delete-worker', userId: worker });
    // A run cannot see any of it: nothing was re-indexed.
    expect((await cli('run', 'p1', url)).code).toBe(0);
    expect(ids(await query(url, 'select id from households'))).not.toEqual(liveRegistrations('p1'));

    const result = await cli('reconcile', 'p1', url);

    expect(result.code, result.err).toBe(0);
    expect(result.out).toMatch(/Reconcile finished: .* rows removed/);
    expect(ids(await query(url, 'select id from households'))).toEqual(liveRegistrations('p1'));
    for (const form of [deleted!, archivedInPlace!])
      expect(await query(url, `select id from household_members where id like '${form.id}.%'`)).toEqual([]);
    const members = await query(url, 'select distinct form_id as id from household_members');
    expect(ids(members).every((id) => liveRegistrations('p1').includes(id))).toBe(true);
  });

  it('marks instead with --deletions mark: _deleted true and _deleted_at set, other rows untouched', async () => {
    const url = await createDatabase('reconcile');
    expect((await cli('run', 'p2', url, '--deletions', 'mark')).code).toBe(0);
    const [form] = registrations('p2', 1);
    sandbox.apply(
      'p2',
      { kind: 'archive-form', id: String(form!.id) },
      { kind: 'delete-form', id: String(form!.id) },
    );

    const result = await cli('reconcile', 'p2', url, '--deletions', 'mark');

    expect(result.code, result.err).toBe(0);
    const marked = await query(
      url,
      `select id, _deleted_at from households where _deleted union all select id, _deleted_at from household_members where _deleted`,
    );
    expect(marked.length).toBeGreaterThan(2);
    expect(marked.every((r) => r._deleted_at instanceof Date)).toBe(true);
    expect(ids(await query(url, 'select id from households where not _deleted'))).toEqual(
      liveRegistrations('p2'),
    );
  });

  it('fails and changes nothing when a table would lose more than 20% (a wrong key or filter)', async () => {
    const url = await createDatabase('reconcile');
    expect((await cli('run', 'p3', url)).code).toBe(0);
    const before = await query(url, 'select count(*)::int as n from households');
    for (let u = 0; u < 3; u++) sandbox.apply('p3', { kind: 'delete-worker', userId: userId('p3', u) });

    const result = await cli('reconcile', 'p3', url);

    expect(result.code).toBe(1);
    expect(result.err).toMatch(
      /Reconcile stopped, nothing changed: table "households" would lose \d+ of \d+ rows/,
    );
    expect(await query(url, 'select count(*)::int as n from households')).toEqual(before);
    const allowed = await cli('reconcile', 'p3', url, '--reconcile-max-share', '0.9');
    expect(allowed.code, allowed.err).toBe(0);
    expect(ids(await query(url, 'select id from households'))).toEqual(liveRegistrations('p3'));
  });

  it('leaves the tables unchanged when killed with SIGKILL while listing, and completes on the next run', async () => {
    const url = await createDatabase('reconcile');
    expect((await cli('run', 'p4', url)).code).toBe(0);
    const [form] = registrations('p4', 1);
    sandbox.apply('p4', { kind: 'archive-form', id: String(form!.id), reindex: false });
    const before = await query(url, 'select id from households order by id');

    const killed = await runCli({
      args: args('reconcile', 'p4', url),
      env: { CCEXPORT_API_KEY: KEY },
      killAfterPages: 2,
    });

    expect(killed.killed).toBe(true);
    expect(await query(url, 'select id from households order by id')).toEqual(before);
    const again = await cli('reconcile', 'p4', url);
    expect(again.code, again.err).toBe(0);
    expect(ids(await query(url, 'select id from households'))).toEqual(liveRegistrations('p4'));
  });

  it('reconciles the embedded database the same way', async () => {
    const folder = join(work, 'embedded');
    expect((await cli('run', 'p4', folder)).code).toBe(0);
    const [form] = registrations('p4', 1);
    sandbox.apply('p4', { kind: 'archive-form', id: String(form!.id), reindex: false });

    const result = await cli('reconcile', 'p4', folder);

    expect(result.code, result.err).toBe(0);
    const db = await openEmbeddedDatabase(folder);
    try {
      const rows = await db.query<{ id: string }>('select id from households');
      expect(rows.rows.map((r) => r.id).sort()).toEqual(liveRegistrations('p4'));
    } finally {
      await db.close();
    }
  }, 300_000);
});

function userId(project: string, u: number): string {
  return sandbox.dataset.model(project).userId(u);
}

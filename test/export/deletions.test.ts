/**
 * Archived and deleted records through `ccexport run` into PostgreSQL (server and embedded): the
 * `remove`, `mark` and `ignore` modes, child rows included, against the sandbox's ground truth.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { openEmbeddedDatabase } from '../../functions/sinks';
import { createDatabase, withDb } from '../support/databases';
import { isRegistration, liveRegistrationIds } from '../support/registrations';
import { ccexportInProcess, sandboxExportArgs } from '../support/sandbox-export';

const KEY = 'deletions-test-key-7f2c1';
const USER = 'exporter@example.org';
const PROJECT = 'district';

let sandbox: RunningSandbox;
let work: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 23,
    projects: [{ name: PROJECT, forms: 400, cases: 60, mobileUsers: 5 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  work = mkdtempSync(join(tmpdir(), 'ccexport-deletions-'));
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

async function run(output: string, ...extra: string[]): Promise<string> {
  const source = { url: sandbox.url, project: PROJECT, username: USER };
  return await ccexportInProcess(sandboxExportArgs(source, 'sql', output, '--batch-size', '100', ...extra), {
    CCEXPORT_API_KEY: KEY,
  });
}

async function rows(url: string, sql: string): Promise<Record<string, unknown>[]> {
  return await withDb(url, async (db) => (await db.query(sql)).rows);
}

/** Registration forms HQ lists today (latest version not archived, not deleted). */
const liveRegistrations = (): string[] => liveRegistrationIds(sandbox.dataset, PROJECT);

/** A live registration form with at least two members (child rows), not used by another test. */
const used = new Set<string>();
function registrationWithMembers(): string {
  for (const [id, form] of sandbox.dataset.finalState(PROJECT, 'form')) {
    const members = (form.form as JsonObject).members;
    if (isRegistration(form) && form.archived !== true && Array.isArray(members) && !used.has(id)) {
      used.add(id);
      return id;
    }
  }
  throw new Error('no registration form with members left');
}

const ids = (list: Record<string, unknown>[]) => list.map((r) => String(r.id)).sort();

describe('deletions in PostgreSQL', () => {
  it('remove (default): archived forms are never inserted, an archived form and its child rows go, unarchiving brings them back', async () => {
    const url = await createDatabase('deletions');
    await run(url);
    expect(ids(await rows(url, 'select id from households'))).toEqual(liveRegistrations());
    const form = registrationWithMembers();
    const members = await rows(url, `select id from household_members where form_id = '${form}'`);
    expect(members.length).toBeGreaterThan(1);

    sandbox.apply(PROJECT, { kind: 'archive-form', id: form });
    const out = await run(url);

    expect(out).toMatch(/1 archived record removed/);
    expect(ids(await rows(url, 'select id from households'))).toEqual(liveRegistrations());
    expect(ids(await rows(url, 'select id from households'))).not.toContain(form);
    expect(await rows(url, `select id from household_members where id like '${form}.%'`)).toEqual([]);

    sandbox.apply(PROJECT, { kind: 'unarchive-form', id: form });
    await run(url);

    expect(ids(await rows(url, 'select id from households'))).toContain(form);
    expect(ids(await rows(url, `select id from household_members where form_id = '${form}'`))).toEqual(
      ids(members),
    );
  });

  it('mark: every table has _deleted and _deleted_at; archived rows and child rows are marked, unarchiving clears the mark', async () => {
    const url = await createDatabase('deletions');
    await run(url, '--deletions', 'mark');
    const columns = await rows(
      url,
      `select table_name, column_name, data_type, is_nullable, column_default from information_schema.columns
        where column_name in ('_deleted', '_deleted_at') order by table_name, column_name`,
    );
    expect(columns).toEqual([
      {
        table_name: 'household_members',
        column_name: '_deleted',
        data_type: 'boolean',
        is_nullable: 'NO',
        column_default: 'false',
      },
      {
        table_name: 'household_members',
        column_name: '_deleted_at',
        data_type: 'timestamp with time zone',
        is_nullable: 'YES',
        column_default: null,
      },
      {
        table_name: 'households',
        column_name: '_deleted',
        data_type: 'boolean',
        is_nullable: 'NO',
        column_default: 'false',
      },
      {
        table_name: 'households',
        column_name: '_deleted_at',
        data_type: 'timestamp with time zone',
        is_nullable: 'YES',
        column_default: null,
      },
    ]);
    // Archived forms are kept as marked rows (for audits); the live ones are what HQ lists.
    expect(ids(await rows(url, 'select id from households where not _deleted'))).toEqual(liveRegistrations());
    expect(await rows(url, 'select id from households where _deleted and _deleted_at is null')).toEqual([]);
    const form = registrationWithMembers();

    const before = Date.now();
    sandbox.apply(PROJECT, { kind: 'archive-form', id: form });
    await run(url, '--deletions', 'mark');

    const marked = await rows(
      url,
      `select id, _deleted, _deleted_at from household_members where id like '${form}.%'
       union all select id, _deleted, _deleted_at from households where id = '${form}'`,
    );
    expect(marked.length).toBeGreaterThan(2);
    for (const row of marked) {
      expect(row._deleted).toBe(true);
      expect((row._deleted_at as Date).getTime()).toBeGreaterThanOrEqual(before - 1000);
    }

    sandbox.apply(PROJECT, { kind: 'unarchive-form', id: form });
    await run(url, '--deletions', 'mark');

    expect(
      await rows(
        url,
        `select id from households where id = '${form}' and (_deleted or _deleted_at is not null)`,
      ),
    ).toEqual([]);
    expect(ids(await rows(url, 'select id from households where not _deleted'))).toEqual(liveRegistrations());
  });

  it('ignore: DET behaviour, no column added and an archived form stays', async () => {
    const url = await createDatabase('deletions');
    await run(url, '--deletions', 'ignore');
    const form = registrationWithMembers();
    sandbox.apply(PROJECT, { kind: 'archive-form', id: form });

    await run(url, '--deletions', 'ignore');

    expect(ids(await rows(url, `select id from households where id = '${form}'`))).toEqual([form]);
    expect(
      await rows(
        url,
        `select column_name from information_schema.columns where column_name like '\\_deleted%'`,
      ),
    ).toEqual([]);
    sandbox.apply(PROJECT, { kind: 'unarchive-form', id: form });
  });

  it('remove in the embedded database: the archived form and its child rows go', async () => {
    const folder = join(work, 'embedded');
    await run(folder);
    const form = registrationWithMembers();
    sandbox.apply(PROJECT, { kind: 'archive-form', id: form });

    await run(folder);

    const db = await openEmbeddedDatabase(folder);
    try {
      const households = await db.query<{ id: string }>('select id from households');
      expect(households.rows.map((r) => r.id).sort()).toEqual(liveRegistrations());
      const children = await db.query(`select id from household_members where id like '${form}.%'`);
      expect(children.rows).toEqual([]);
    } finally {
      await db.close();
    }
  }, 300_000);
});

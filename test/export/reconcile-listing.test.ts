/**
 * The reconcile's listing of ids is as cheap as HQ allows: case sources are listed through case API v2
 * with `fields=case_id,indexed_on` (HQ's `field_filters.py`), which the sandbox honours as HQ does;
 * forms (tastypie, no field selection) keep their largest pages.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { main } from '../../functions/cli/main';
import type { JsonObject } from '../../functions/common/json';
import { CASE_ID_FIELDS, idListing } from '../../functions/export/reconcile';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { captureIO } from '../cli/capture';

const KEY = 'reconcile-listing-key-5d21';
const USER = 'exporter@example.org';

let sandbox: RunningSandbox;
let admin: pg.Client;
let work: string;
let caseQuery: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 41,
    projects: [{ name: 'c1', forms: 300, cases: 1500, mobileUsers: 6 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  admin = new pg.Client({ connectionString: inject('pgUrl') });
  await admin.connect();
  work = mkdtempSync(join(tmpdir(), 'ccexport-reconcile-listing-'));
  // A DET JSON query: household cases (case list v1 filtered by `type`), as HQ's case exports are.
  caseQuery = join(work, 'households.json');
  writeFileSync(
    caseQuery,
    JSON.stringify({
      Bind: {
        name: 'checkpoint_manager',
        value: {
          Apply: { fn: { Ref: 'get_checkpoint_manager' }, args: [{ Lit: 'case' }, { Lit: ['cases'] }] },
        },
        body: {
          Emit: {
            table: 'cases',
            headings: [{ Lit: 'id' }, { Lit: 'case_name' }, { Lit: 'owner_id' }],
            source: {
              Map: {
                source: {
                  Apply: {
                    fn: { Ref: 'api_data' },
                    args: [{ Lit: 'case' }, { Ref: 'checkpoint_manager' }, { Lit: { type: ['household'] } }],
                  },
                },
                body: {
                  List: [{ Ref: 'id' }, { Ref: 'properties.case_name' }, { Ref: 'properties.owner_id' }],
                },
              },
            },
          },
        },
      },
    }),
  );
});

afterAll(async () => {
  await admin.end();
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

async function get(path: string): Promise<{ status: number; body: JsonObject }> {
  const response = await fetch(`${sandbox.url}${path}`, {
    headers: { Authorization: `ApiKey ${USER}:${KEY}` },
  });
  return { status: response.status, body: (await response.json()) as JsonObject };
}

describe('idListing', () => {
  it('lists case v1 sources through case v2 with only the id fields, filters renamed', () => {
    expect(idListing({ resource: 'case', params: { type: ['household'], closed: ['false'] } })).toEqual({
      resource: 'case-v2',
      params: {
        case_type: ['household'],
        closed: ['false'],
        include_deprecated: ['true'],
        fields: [CASE_ID_FIELDS],
      },
    });
  });

  it('keeps case v1 when a filter has no case v2 equivalent, and forms as they are (no field selection)', () => {
    const byUser = { resource: 'case' as const, params: { user_id: ['u1'] } };
    expect(idListing(byUser)).toEqual(byUser);
    const forms = { resource: 'form' as const, params: { 'xmlns.exact': ['x'] } };
    expect(idListing(forms)).toEqual(forms);
  });

  it('asks case v2 sources for the id fields only, replacing a fields or exclude of the query', () => {
    expect(idListing({ resource: 'case-v2', params: { case_type: ['p'], exclude: ['properties'] } })).toEqual(
      {
        resource: 'case-v2',
        params: { case_type: ['p'], fields: [CASE_ID_FIELDS] },
      },
    );
  });
});

describe('sandbox case v2 fields and exclude, as HQ', () => {
  it('keeps only the fields asked for, on every page the cursor leads to', async () => {
    const first = await get('/a/c1/api/case/v2/?limit=5&fields=case_id,indexed_on');
    const cases = first.body.cases as JsonObject[];
    expect(cases.map((c) => Object.keys(c).sort())).toEqual(Array(5).fill(['case_id', 'indexed_on']));
    const next = await get(
      new URL(String(first.body.next)).pathname + new URL(String(first.body.next)).search,
    );
    expect((next.body.cases as JsonObject[]).every((c) => Object.keys(c).length === 2)).toBe(true);
    expect(first.body.matching_records).toBeGreaterThan(5);
  });

  it('reaches into nested objects with dots and with fields.<parent>', async () => {
    const dotted = await get('/a/c1/api/case/v2/?limit=2&fields=case_id&fields.properties=missing_prop');
    expect(dotted.body.cases).toEqual(
      (dotted.body.cases as JsonObject[]).map((c) => ({ case_id: c.case_id, properties: {} })),
    );
    const excluded = await get('/a/c1/api/case/v2/?limit=2&exclude=properties,indices');
    for (const c of excluded.body.cases as JsonObject[]) {
      expect(c).not.toHaveProperty('properties');
      expect(c).toHaveProperty('case_type');
    }
  });

  it("fails with HQ's 400 when both fields and exclude are sent", async () => {
    const both = await get('/a/c1/api/case/v2/?fields=case_id&exclude=properties');
    expect(both).toEqual({ status: 400, body: { error: "You cannot specify both 'fields' and 'exclude'" } });
  });
});

describe('ccexport reconcile of a case query', () => {
  it('lists ids through case v2 with fields, in pages a fraction of the size, and removes deleted cases', async () => {
    const name = `listing_${Date.now().toString(36)}`;
    await admin.query(`create database ${name}`);
    const url = inject('pgUrl').replace(/\/postgres$/, `/${name}`);
    const args = (command: string) => [
      command,
      '--project',
      'c1',
      '--commcare-hq',
      sandbox.url,
      '--username',
      USER,
      '--query',
      caseQuery,
      '--output-format',
      'sql',
      '--output',
      url,
    ];
    const run = captureIO({ CCEXPORT_API_KEY: KEY });
    expect(await main(args('run'), run), run.err()).toBe(0);
    const runPages = sandbox.requestLog.filter((e) => e.path.includes('/case/') && e.status === 200);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const before = (await client.query<{ id: string }>('select id from cases order by id')).rows.map(
      (r) => r.id,
    );
    const gone = before.slice(0, 3);
    for (const id of gone) sandbox.apply('c1', { kind: 'delete-case', id });
    const logged = sandbox.requestLog.length;

    const reconcile = captureIO({ CCEXPORT_API_KEY: KEY });
    const code = await main(args('reconcile'), reconcile);

    expect(code, reconcile.err()).toBe(0);
    const after = (await client.query<{ id: string }>('select id from cases order by id')).rows.map(
      (r) => r.id,
    );
    await client.end();
    expect(after).toEqual(before.filter((id) => !gone.includes(id)));
    const listing = sandbox.requestLog
      .slice(logged)
      .filter((e) => e.path.includes('/case/') && e.status === 200);
    expect(listing.length).toBeGreaterThan(0);
    for (const entry of listing) {
      expect(entry.path).toMatch(/\/case\/v2\/?$/);
      if (!entry.query.cursor) {
        expect(entry.query.fields).toEqual([CASE_ID_FIELDS]);
        expect(entry.query.limit).toEqual(['5000']);
      }
    }
    const perCase = (entries: typeof listing, count: number) =>
      entries.reduce((n, e) => n + (e.bytes ?? 0), 0) / count;
    const full = perCase(runPages, before.length);
    const ids = perCase(listing, after.length);
    console.log(
      `case listing: ${full.toFixed(0)} bytes per case in a run's pages, ${ids.toFixed(0)} in the reconcile's`,
    );
    expect(ids).toBeLessThan(full / 4);
  }, 120_000);
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox/server';
import { getJson, meta, naive, objects } from './support';

let sandbox: RunningSandbox;
const PROJECT = { name: 'demo', forms: 700, cases: 300, reindexedShare: 0.15, tieRun: 2 };

beforeAll(async () => {
  sandbox = await startSandbox({ projects: [PROJECT] });
});
afterAll(async () => {
  await sandbox.close();
});

const ms = (value: unknown) => Date.parse(`${naive(value)}Z`);

/**
 * A two-run incremental export that pages on `field`: the first run sees HQ as it was when the record at
 * `cut` had just been indexed (indexed_on_end), the second resumes from the first run's last `field`.
 */
async function twoRuns(resource: 'form' | 'case', field: string, cut: string): Promise<Set<string>> {
  const base = `${sandbox.url}/a/demo/api/${resource}/v1/?limit=1000&order_by=${field}${resource === 'form' ? '&include_archived' : ''}`;
  const first = objects((await getJson(`${base}&indexed_on_end=${cut}`)).body);
  const checkpoint = naive(first.at(-1)![field]);
  const second = objects((await getJson(`${base}&${field}_start=${checkpoint}`)).body);
  return new Set([...first, ...second].map((r) => String(r.id)));
}

describe('independent time lines', () => {
  it('keeps received_on at the first receipt, moves server_modified_on only on a change, indexed_on on every re-index', () => {
    const versions = new Map<string, JsonObject[]>();
    for (const form of sandbox.dataset.history('demo', 'form')) {
      const list = versions.get(String(form.id)) ?? [];
      list.push(form);
      versions.set(String(form.id), list);
    }
    const reindexed = [...versions.values()].filter((v) => v.length > 1);
    expect(reindexed.length).toBeGreaterThan(10);
    for (const v of reindexed) expect(new Set(v.map((f) => f.received_on)).size).toBe(1);
    const unmodified = reindexed.filter((v) => v[1]!.server_modified_on === v[0]!.server_modified_on);
    const modified = reindexed.filter((v) => ms(v[1]!.server_modified_on) > ms(v[0]!.server_modified_on));
    expect(unmodified.length).toBeGreaterThan(0);
    expect(modified.length).toBeGreaterThan(0);
    for (const v of unmodified) {
      expect(ms(v[1]!.indexed_on)).toBeGreaterThan(ms(v[0]!.indexed_on));
      expect(v[1]!.form).toEqual(v[0]!.form);
    }
    const late = [...versions.values()].filter(
      (v) => ms(v[0]!.indexed_on) - ms(v[0]!.received_on) > 3_600_000,
    );
    expect(late.length).toBeGreaterThan(0);
  });

  it('orders forms by received_on and server_modified_on as their own time lines', async () => {
    for (const field of ['received_on', 'server_modified_on']) {
      const up = objects(
        (await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=1000&order_by=${field}`)).body,
      );
      const values = up.map((f) => ms(f[field]));
      expect(values).toEqual([...values].sort((a, b) => a - b));
      const byIndex = up.map((f) => String(f.id));
      const indexed = objects(
        (await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=1000&order_by=indexed_on`)).body,
      ).map((f) => String(f.id));
      expect(byIndex).not.toEqual(indexed);
    }
    const down = await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=50&offset=10`);
    const received = objects(down.body).map((f) => ms(f.received_on));
    expect(received).toEqual([...received].sort((a, b) => b - a));
    expect(meta(down.body).offset).toBe(10);
  });

  it('filters received_on and server_date_modified by their own values', async () => {
    const all = objects(
      (await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=1000&order_by=indexed_on`)).body,
    );
    const mid = naive([...all].sort((a, b) => ms(a.received_on) - ms(b.received_on))[350]!.received_on);
    const after = objects(
      (await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=1000&received_on_start=${mid}`)).body,
    );
    expect(after.length).toBe(all.filter((f) => ms(f.received_on) >= ms(mid)).length);
    const cases = objects(
      (await getJson(`${sandbox.url}/a/demo/api/case/v1/?limit=5000&order_by=indexed_on`)).body,
    );
    const cutCase = naive(cases[150]!.server_date_modified);
    const later = objects(
      (await getJson(`${sandbox.url}/a/demo/api/case/v1/?limit=5000&server_date_modified_start=${cutCase}`))
        .body,
    );
    expect(later.length).toBe(cases.filter((c) => ms(c.server_date_modified) >= ms(cutCase)).length);
  });

  it('catches a pager that follows received_on or server_modified_on instead of indexed_on', async () => {
    const all = objects(
      (await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=1000&order_by=indexed_on&include_archived`))
        .body,
    );
    const ids = new Set(all.map((f) => String(f.id)));
    // HQ as it was just before a form that was received long before it was indexed reached the index.
    const firstSeen = (rows: JsonObject[], k: number) => rows.findIndex((r) => r.id === rows[k]!.id) === k;
    const late = all.findIndex(
      (f, k) => k > 100 && firstSeen(all, k) && ms(f.indexed_on) - ms(f.received_on) > 7_200_000,
    );
    expect(late).toBeGreaterThan(0);
    const cut = naive(all.filter((f) => ms(f.indexed_on) < ms(all[late]!.indexed_on)).at(-1)!.indexed_on);
    expect(await twoRuns('form', 'indexed_on', cut)).toEqual(ids);
    for (const field of ['received_on', 'server_modified_on']) {
      const seen = await twoRuns('form', field, cut);
      expect([...ids].filter((id) => !seen.has(id)).length, field).toBeGreaterThan(0);
    }
    const cases = objects(
      (await getJson(`${sandbox.url}/a/demo/api/case/v1/?limit=5000&order_by=indexed_on`)).body,
    );
    const lateCase = cases.findIndex(
      (c, k) => k > 20 && firstSeen(cases, k) && ms(c.indexed_on) - ms(c.server_date_modified) > 7_200_000,
    );
    expect(lateCase).toBeGreaterThan(0);
    const caseCut = naive(
      cases.filter((c) => ms(c.indexed_on) < ms(cases[lateCase]!.indexed_on)).at(-1)!.indexed_on,
    );
    const caseIds = new Set(cases.map((c) => String(c.id)));
    expect(await twoRuns('case', 'indexed_on', caseCut)).toEqual(caseIds);
    const seen = await twoRuns('case', 'server_date_modified', caseCut);
    expect([...caseIds].filter((id) => !seen.has(id)).length).toBeGreaterThan(0);
  });
});

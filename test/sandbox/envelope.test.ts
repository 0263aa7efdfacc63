import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { getJson, meta, naive, objects } from './support';

let sandbox: RunningSandbox;

beforeAll(async () => {
  sandbox = await startSandbox({
    projects: [{ name: 'demo', forms: 400, cases: 150, mobileUsers: 6, groups: 3, locations: 12, tieRun: 3 }],
  });
});
afterAll(async () => {
  await sandbox.close();
});

describe('tastypie list envelope', () => {
  it('answers forms with meta and objects, a default limit of 20 and a relative next link', async () => {
    const { status, body } = await getJson(
      `${sandbox.url}/a/demo/api/form/v1/?xmlns.exact=x&include_archived`,
    );
    expect(status).toBe(200);
    expect(meta(body)).toEqual({ limit: 20, next: null, offset: 0, previous: null, total_count: 0 });

    const page = await getJson(`${sandbox.url}/a/demo/api/v0.5/form/?order_by=indexed_on&include_archived`);
    expect(meta(page.body).limit).toBe(20);
    expect(objects(page.body)).toHaveLength(20);
    expect(meta(page.body).next).toBe(
      '/a/demo/api/v0.5/form/?order_by=indexed_on&include_archived=&limit=20&offset=20',
    );
    expect(meta(page.body).previous).toBeNull();
  });

  it('copies repeated parameters into next and previous and replaces limit and offset', async () => {
    const { body } = await getJson(
      `${sandbox.url}/a/demo/api/case/v1/?limit=5&type=person&type=household&offset=10`,
    );
    expect(meta(body).next).toBe('/a/demo/api/case/v1/?type=person&type=household&limit=5&offset=15');
    expect(meta(body).previous).toBe('/a/demo/api/case/v1/?type=person&type=household&limit=5&offset=5');
  });

  it('clamps a limit above the maximum to the maximum, like tastypie', async () => {
    const forms = await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=5000`);
    expect(meta(forms.body).limit).toBe(1000);
    const cases = await getJson(`${sandbox.url}/a/demo/api/case/v1/?limit=9000`);
    expect(meta(cases.body).limit).toBe(5000);
    const zero = await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=0`);
    expect(meta(zero.body).limit).toBe(1000);
  });

  it('fails with 400 and an error object for a limit that is not an integer', async () => {
    const { status, body } = await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=abc`);
    expect(status).toBe(400);
    expect(body.error).toMatch(/Invalid limit 'abc'/);
  });

  it('sets next to null on the last page', async () => {
    const { body } = await getJson(`${sandbox.url}/a/demo/api/case/v1/?limit=1000`);
    expect(meta(body).next).toBeNull();
    expect(objects(body)).toHaveLength(meta(body).total_count as number);
  });

  it('serves every resource under both URL spellings', async () => {
    const pairs = [
      ['v0.5/form', 'form/v1'],
      ['v0.5/case', 'case/v1'],
      ['v0.6/case', 'case/v2'],
      ['v0.5/user', 'user/v1'],
      ['v0.5/web-user', 'web-user/v1'],
      ['v0.5/group', 'group/v1'],
      ['v0.5/location', 'location/v1'],
      ['v0.6/location', 'location/v2'],
      ['v0.5/location_type', 'location_type/v1'],
      ['v0.5/application', 'application/v1'],
    ];
    for (const [legacy, current] of pairs) {
      const a = await getJson(`${sandbox.url}/a/demo/api/${legacy}/?limit=3`);
      const b = await getJson(`${sandbox.url}/a/demo/api/${current}/?limit=3`);
      expect(a.status, legacy).toBe(200);
      expect(JSON.stringify(a.body.objects ?? a.body.cases)).toBe(
        JSON.stringify(b.body.objects ?? b.body.cases),
      );
    }
  });
});

describe('ordering', () => {
  it('orders forms by -received_on by default and by ascending indexed_on on request', async () => {
    const byDefault = objects((await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=50`)).body);
    const received = byDefault.map((f) => String(f.received_on));
    expect(received).toEqual([...received].sort().reverse());
    const ascending = objects(
      (await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=50&order_by=indexed_on`)).body,
    );
    const indexed = ascending.map((f) => String(f.indexed_on));
    expect(indexed).toEqual([...indexed].sort());
  });

  it('orders cases v1 by ascending server_date_modified by default', async () => {
    const cases = objects((await getJson(`${sandbox.url}/a/demo/api/case/v1/?limit=100`)).body);
    const modified = cases.map((c) => String(c.server_date_modified));
    expect(modified).toEqual([...modified].sort());
    expect(String(cases[0]!.server_date_modified)).not.toMatch(/Z$/);
    expect(String(cases[0]!.indexed_on)).toMatch(/\.\d{6}Z$/);
  });

  it('repeats indexed_on values in runs so ties straddle page boundaries', async () => {
    const all = objects(
      (await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=400&order_by=indexed_on&include_archived`))
        .body,
    );
    const values = all.map((f) => f.indexed_on);
    // Runs of three share a value (a run loses a member where that record was re-indexed later).
    expect(values.some((v, k) => k >= 2 && values[k - 1] === v && values[k - 2] === v)).toBe(true);
    // Pages of 20 end inside a tie group.
    expect(values.some((v, k) => k % 20 === 0 && k > 0 && values[k - 1] === v)).toBe(true);
  });
});

describe('filters', () => {
  it('filters forms by xmlns and xmlns.exact, ORing repeated values', async () => {
    const app = objects((await getJson(`${sandbox.url}/a/demo/api/application/v1/`)).body)[0]!;
    const xmlns = (app.modules as JsonObject[]).flatMap((m) =>
      (m.forms as JsonObject[]).map((f) => String(f.xmlns)),
    );
    expect(xmlns).toHaveLength(3);
    const one = await getJson(
      `${sandbox.url}/a/demo/api/form/v1/?limit=100&xmlns=${encodeURIComponent(xmlns[0]!)}`,
    );
    expect(objects(one.body).every((f) => (f.form as JsonObject)['@xmlns'] === xmlns[0])).toBe(true);
    const exact = await getJson(
      `${sandbox.url}/a/demo/api/form/v1/?limit=1&xmlns.exact=${encodeURIComponent(xmlns[0]!)}`,
    );
    expect(meta(exact.body).total_count).toBe(meta(one.body).total_count);
    const two = await getJson(
      `${sandbox.url}/a/demo/api/form/v1/?limit=1&xmlns=${encodeURIComponent(xmlns[0]!)}&xmlns=${encodeURIComponent(xmlns[1]!)}`,
    );
    const other = await getJson(
      `${sandbox.url}/a/demo/api/form/v1/?limit=1&xmlns=${encodeURIComponent(xmlns[1]!)}`,
    );
    expect(meta(two.body).total_count).toBe(
      (meta(one.body).total_count as number) + (meta(other.body).total_count as number),
    );
  });

  it('filters forms by app_id', async () => {
    const app = objects((await getJson(`${sandbox.url}/a/demo/api/application/v1/`)).body)[0]!;
    const all = await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=1`);
    const mine = await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=1&app_id=${app.id}`);
    const none = await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=1&app_id=nope`);
    expect(meta(mine.body).total_count).toBe(meta(all.body).total_count);
    expect(meta(none.body).total_count).toBe(0);
  });

  it('excludes archived forms unless include_archived is present, whatever its value', async () => {
    const without = await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=1000`);
    const withFalse = await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=1000&include_archived=false`);
    expect(objects(without.body).some((f) => f.archived === true)).toBe(false);
    expect(objects(withFalse.body).some((f) => f.archived === true)).toBe(true);
    expect(meta(withFalse.body).total_count as number).toBeGreaterThan(
      meta(without.body).total_count as number,
    );
  });

  it('applies indexed_on_start and indexed_on_end inclusively with naive values', async () => {
    const all = objects(
      (await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=100&order_by=indexed_on&include_archived`))
        .body,
    );
    const start = naive(all[30]!.indexed_on);
    const end = naive(all[60]!.indexed_on);
    const { body } = await getJson(
      `${sandbox.url}/a/demo/api/form/v1/?limit=100&order_by=indexed_on&include_archived&indexed_on_start=${start}&indexed_on_end=${end}`,
    );
    const got = objects(body).map((f) => f.id);
    const expected = all
      .filter((f) => naive(f.indexed_on) >= start && naive(f.indexed_on) <= end)
      .map((f) => f.id);
    expect(got).toEqual(expected);
    expect(got.length).toBeGreaterThanOrEqual(31);
  });

  it('accepts date-only and legacy HH:MMZ values and applies received_on bounds', async () => {
    const dateOnly = await getJson(
      `${sandbox.url}/a/demo/api/form/v1/?received_on_start=2024-06-01&received_on_end=2024-06-30`,
    );
    expect(dateOnly.status).toBe(200);
    const forms = objects(dateOnly.body);
    expect(
      forms.every(
        (f) => String(f.received_on) >= '2024-06-01' && String(f.received_on) < '2024-06-30T00:00:00.000001',
      ),
    ).toBe(true);
    const legacy = await getJson(`${sandbox.url}/a/demo/api/form/v1/?indexed_on_start=2024-06-01T10:00Z`);
    expect(legacy.status).toBe(200);
  });

  it('fails with 400 and an error object for a date with a UTC offset on v1', async () => {
    for (const value of ['2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00Z', 'yesterday']) {
      const { status, body } = await getJson(
        `${sandbox.url}/a/demo/api/form/v1/?indexed_on_start=${encodeURIComponent(value)}`,
      );
      expect(status, value).toBe(400);
      expect(String(body.error)).toContain(value);
    }
  });

  it('filters cases v1 by type, owner_id, closed and server_date_modified', async () => {
    const typed = objects(
      (await getJson(`${sandbox.url}/a/demo/api/case/v1/?limit=1000&type=household`)).body,
    );
    expect(typed.length).toBeGreaterThan(0);
    expect(typed.every((c) => (c.properties as JsonObject).case_type === 'household')).toBe(true);
    const owner = String((typed[0]!.properties as JsonObject).owner_id);
    const owned = objects(
      (await getJson(`${sandbox.url}/a/demo/api/case/v1/?limit=1000&owner_id=${owner}`)).body,
    );
    expect(owned.length).toBeGreaterThan(0);
    expect(owned.every((c) => (c.properties as JsonObject).owner_id === owner)).toBe(true);
    const closed = objects((await getJson(`${sandbox.url}/a/demo/api/case/v1/?limit=1000&closed=true`)).body);
    expect(closed.length).toBeGreaterThan(0);
    expect(closed.every((c) => c.closed === true)).toBe(true);
    const all = objects((await getJson(`${sandbox.url}/a/demo/api/case/v1/?limit=1000`)).body);
    const from = String(all[20]!.server_date_modified);
    const later = objects(
      (await getJson(`${sandbox.url}/a/demo/api/case/v1/?limit=1000&server_date_modified_start=${from}`))
        .body,
    );
    expect(later.map((c) => c.id)).toEqual(
      all.filter((c) => String(c.server_date_modified) >= from).map((c) => c.id),
    );
    expect(later.length).toBeGreaterThan(all.length - 21);
  });

  it('adds full case objects with cases__full=true', async () => {
    const forms = objects(
      (await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=30&cases__full=true`)).body,
    );
    const withCase = forms.find((f) => (f.form as JsonObject).case);
    expect(withCase).toBeDefined();
    const cases = withCase!.cases as JsonObject[];
    expect(cases[0]!.case_id).toBe(((withCase!.form as JsonObject).case as JsonObject)['@case_id']);
  });
});

describe('case API v2', () => {
  it('pages with an absolute cursor link to completion and omits next on the last page', async () => {
    const seen: JsonObject[] = [];
    let url: string | undefined = `${sandbox.url}/a/demo/api/case/v2/?limit=40`;
    let pages = 0;
    let firstMatching = 0;
    while (url) {
      const { status, body } = await getJson(url);
      expect(status).toBe(200);
      if (pages === 0) firstMatching = body.matching_records as number;
      seen.push(...(body.cases as JsonObject[]));
      url = body.next as string | undefined;
      if (url) expect(url.startsWith(`${sandbox.url}/a/demo/api/case/v2/?cursor=`)).toBe(true);
      pages++;
    }
    expect(seen).toHaveLength(firstMatching);
    const indexed = seen.map((c) => String(c.indexed_on));
    expect(indexed).toEqual([...indexed].sort());
    expect(pages).toBe(Math.ceil(firstMatching / 40));
  });

  it('ignores other parameters sent alongside a cursor', async () => {
    const first = await getJson(`${sandbox.url}/a/demo/api/case/v2/?limit=5&case_type=person`);
    const next = `${first.body.next as string}&case_type=household&limit=1`;
    const second = await getJson(next);
    expect(second.body.cases as JsonObject[]).toHaveLength(5);
    expect((second.body.cases as JsonObject[]).every((c) => c.case_type === 'person')).toBe(true);
  });

  it('fails with 400 for a limit above 5000 and for an unknown parameter', async () => {
    const big = await getJson(`${sandbox.url}/a/demo/api/case/v2/?limit=5001`);
    expect(big.status).toBe(400);
    const unknown = await getJson(`${sandbox.url}/a/demo/api/case/v2/?colour=red`);
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toBe("'colour' is not a valid parameter.");
  });

  it('filters by case_type, owner_id, closed and indexed_on with Z or an offset', async () => {
    const all = (await getJson(`${sandbox.url}/a/demo/api/case/v2/?limit=1000`)).body.cases as JsonObject[];
    const pivot = String(all[50]!.indexed_on);
    const gte = (await getJson(`${sandbox.url}/a/demo/api/case/v2/?limit=1000&indexed_on.gte=${pivot}`)).body
      .cases as JsonObject[];
    expect(gte.map((c) => c.case_id)).toEqual(
      all.filter((c) => String(c.indexed_on) >= pivot).map((c) => c.case_id),
    );
    const offset = pivot.replace('Z', '+00:00');
    const lt = (
      await getJson(
        `${sandbox.url}/a/demo/api/case/v2/?limit=1000&indexed_on.lt=${encodeURIComponent(offset)}`,
      )
    ).body.cases as JsonObject[];
    expect(lt.length + gte.length).toBe(all.length);
    const typed = (
      await getJson(`${sandbox.url}/a/demo/api/case/v2/?limit=1000&case_type=household&closed=false`)
    ).body.cases as JsonObject[];
    expect(typed.every((c) => c.case_type === 'household' && c.closed === false)).toBe(true);
    const owner = String(all[0]!.owner_id);
    const owned = (await getJson(`${sandbox.url}/a/demo/api/case/v2/?limit=1000&owner_id=${owner}`)).body
      .cases as JsonObject[];
    expect(owned.length).toBeGreaterThan(0);
    expect(owned.every((c) => c.owner_id === owner)).toBe(true);
  });
});

describe('other resources', () => {
  it('serves users with user_data and locations, and locations with a type hierarchy', async () => {
    const users = objects((await getJson(`${sandbox.url}/a/demo/api/user/v1/`)).body);
    expect(users).toHaveLength(6);
    expect(users[0]!.user_data).toBeTypeOf('object');
    const locations = objects((await getJson(`${sandbox.url}/a/demo/api/location/v2/?limit=100`)).body);
    const byId = new Map(locations.map((l) => [l.location_id, l]));
    const village = locations.find((l) => l.location_type_code === 'village')!;
    const chain: string[] = [];
    for (let l: JsonObject | undefined = village; l; l = byId.get(l.parent_location_id as string))
      chain.push(String(l.location_type_code));
    expect(chain).toEqual(['village', 'district', 'state', 'country']);
    const types = objects((await getJson(`${sandbox.url}/a/demo/api/location_type/v1/`)).body);
    expect(types.map((t) => t.code)).toEqual(['country', 'state', 'district', 'village']);
  });

  it('serves the application without pagination, its forms matching the served xmlns', async () => {
    const { body } = await getJson(`${sandbox.url}/a/demo/api/application/v1/?limit=1`);
    expect(meta(body).limit).toBeNull();
    const app = objects(body)[0]!;
    const xmlns = new Set(
      (app.modules as JsonObject[]).flatMap((m) => (m.forms as JsonObject[]).map((f) => String(f.xmlns))),
    );
    const forms = objects((await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=200`)).body);
    expect(forms.every((f) => xmlns.has(String((f.form as JsonObject)['@xmlns'])))).toBe(true);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCommCareClient } from '../../functions/commcare/index';
import type { JsonObject } from '../../functions/common/json';
import {
  DEFAULT_API_KEY,
  DEFAULT_USERNAME,
  type RunningSandbox,
  startSandbox,
} from '../../functions/sandbox/server';
import { getJson, meta, objects } from './support';

let sandbox: RunningSandbox;

beforeAll(async () => {
  sandbox = await startSandbox({
    projects: [{ name: 'demo', forms: 50, cases: 40, messagingEvents: 90, ucrRows: 70 }],
  });
});
afterAll(async () => {
  await sandbox.close();
});

/** Follows `meta.next` until HQ answers an empty page, as a cursor client must. */
async function followCursor(first: string): Promise<{ pages: JsonObject[][]; urls: string[] }> {
  const pages: JsonObject[][] = [];
  const urls: string[] = [];
  let url: string | null = first;
  while (url) {
    urls.push(url);
    const { status, body } = await getJson(url);
    expect(status, url).toBe(200);
    pages.push(objects(body));
    url = meta(body).next as string | null;
    expect(pages.length).toBeLessThan(100);
  }
  return { pages, urls };
}

describe('messaging events (cursor in meta.next)', () => {
  it('answers objects with meta {limit, next} only, and an absolute next link', async () => {
    const { status, body } = await getJson(`${sandbox.url}/a/demo/api/messaging-event/v1/?limit=10`);
    expect(status).toBe(200);
    expect(Object.keys(meta(body)).sort()).toEqual(['limit', 'next']);
    expect(meta(body).limit).toBe(10);
    expect(meta(body).next).toMatch(new RegExp(`^${sandbox.url}/a/demo/api/messaging-event/v1/\\?cursor=`));
    expect(objects(body)).toHaveLength(10);
  });

  it('keeps date and date_last_activity on separate time lines', () => {
    const events = sandbox.dataset.model('demo').messagingEvents.all();
    const byDate = events.map((e) => String(e.id));
    const byActivity = [...events]
      .sort((a, b) => String(a.date_last_activity).localeCompare(String(b.date_last_activity)))
      .map((e) => String(e.id));
    expect(byActivity).not.toEqual(byDate);
  });

  it('ends with an empty page whose next is null, and pages every event in date_last_activity order', async () => {
    const { pages } = await followCursor(
      `${sandbox.url}/a/demo/api/messaging-event/v1/?limit=25&order_by=date_last_activity`,
    );
    expect(pages.at(-1)).toEqual([]);
    const seen = pages.flat();
    const truth = sandbox.dataset.model('demo').messagingEvents.all();
    expect(new Set(seen.map((e) => e.id))).toEqual(new Set(truth.map((e) => e.id)));
    const activity = seen.map((e) => String(e.date_last_activity));
    expect([...activity].sort()).toEqual(activity);
  });

  it('fails with 400 for a limit that is not a positive integer and for an unknown ordering', async () => {
    for (const query of ['limit=0', 'limit=x', 'order_by=id']) {
      const { status, body } = await getJson(`${sandbox.url}/a/demo/api/messaging-event/v1/?${query}`);
      expect(status, query).toBe(400);
      expect(typeof body.error).toBe('string');
    }
  });

  it('is pulled completely by the client, without duplicates, even where ties straddle a page edge', async () => {
    const client = createCommCareClient({
      baseUrl: sandbox.url,
      username: DEFAULT_USERNAME,
      apiKey: DEFAULT_API_KEY,
      sleep: async () => {},
    });
    for (const pageSize of [3, 7, 1000]) {
      const ids: string[] = [];
      for await (const record of client.records({ project: 'demo', resource: 'messaging-event', pageSize }))
        ids.push(String(record.id));
      expect(new Set(ids).size, `page size ${pageSize}`).toBe(ids.length);
      expect(ids.length, `page size ${pageSize}`).toBe(90);
    }
  });
});

describe('UCR data-source rows (cursor of last_doc_id and last_inserted_at)', () => {
  const ucrUrl = (query: string) => `${sandbox.url}/a/demo/api/ucr/v1/?${query}`;

  it('pages rows in (inserted_at, doc_id) order with id copied from doc_id', async () => {
    const source = sandbox.dataset.model('demo').ucr.id;
    const { pages, urls } = await followCursor(ucrUrl(`data_source_id=${source}&limit=20`));
    expect(pages.map((p) => p.length)).toEqual([20, 20, 20, 10, 0]);
    const rows = pages.flat();
    for (const row of rows) expect(row.id).toBe(row.doc_id);
    const keys = rows.map((r) => `${String(r.inserted_at)} ${String(r.doc_id)}`);
    expect([...keys].sort()).toEqual(keys);
    expect(new Set(rows.map((r) => r.id)).size).toBe(70);
    expect(urls[1]).toContain(`data_source_id=${source}`);
  });

  it('fails with 400 without a data source and 404 for one the project does not have', async () => {
    expect((await getJson(ucrUrl('limit=5'))).status).toBe(400);
    expect((await getJson(ucrUrl('data_source_id=nope'))).status).toBe(404);
  });

  it('is pulled completely by the client', async () => {
    const client = createCommCareClient({
      baseUrl: sandbox.url,
      username: DEFAULT_USERNAME,
      apiKey: DEFAULT_API_KEY,
      sleep: async () => {},
    });
    const ids: string[] = [];
    for await (const record of client.records({
      project: 'demo',
      resource: 'ucr',
      params: { data_source_id: [sandbox.dataset.model('demo').ucr.id] },
      pageSize: 9,
    }))
      ids.push(String(record.id));
    expect(ids).toHaveLength(70);
    expect(new Set(ids).size).toBe(70);
  });
});

describe('filter dates HQ cannot parse', () => {
  it.each([
    ['form', 'indexed_on_start=2024-13-45'],
    ['form', 'indexed_on_start=2024-02-30'],
    ['form', 'received_on_end=2024-01-01T25:61:00'],
    ['case', 'indexed_on_start=2024-02-30'],
    ['case', 'server_date_modified_start=2023-02-29T00:00:00'],
  ])('fails with 400 on %s for %s', async (resource, query) => {
    const { status, body } = await getJson(`${sandbox.url}/a/demo/api/${resource}/v1/?${query}`);
    expect(status).toBe(400);
    expect(body.error).toMatch(/Unknown date format/);
  });

  it('fails with 400 on case v2 for an impossible date', async () => {
    const { status } = await getJson(
      `${sandbox.url}/a/demo/api/case/v2/?indexed_on.gte=2024-02-30T00:00:00Z`,
    );
    expect(status).toBe(400);
  });

  it('accepts a leap day that exists', async () => {
    const { status } = await getJson(
      `${sandbox.url}/a/demo/api/form/v1/?indexed_on_start=2024-02-29T23:59:59`,
    );
    expect(status).toBe(200);
  });
});

describe('case v2 cursor (indexed_on.gte and last_case_id)', () => {
  it('encodes the query, the last indexed_on and the last case id, and orders ties by case id', async () => {
    const seen: JsonObject[] = [];
    let url: string | null = `${sandbox.url}/a/demo/api/case/v2/?limit=4&case_type=person`;
    let pages = 0;
    while (url) {
      const { status, body } = await getJson(url);
      expect(status).toBe(200);
      const cases = body.cases as JsonObject[];
      seen.push(...cases);
      url = (body.next as string | undefined) ?? null;
      if (url) {
        const cursor = new URLSearchParams(
          Buffer.from(new URL(url).searchParams.get('cursor')!, 'base64').toString('utf8'),
        );
        const last = cases.at(-1)!;
        expect(cursor.get('case_type')).toBe('person');
        expect(cursor.get('indexed_on.gte')).toBe(last.indexed_on);
        expect(cursor.get('last_case_id')).toBe(last.case_id);
      }
      expect(++pages).toBeLessThan(100);
    }
    const keys = seen.map((c) => `${String(c.indexed_on)} ${String(c.case_id)}`);
    expect([...keys].sort()).toEqual(keys);
    expect(new Set(keys).size).toBe(keys.length);
    const truth = [...sandbox.dataset.timeline('demo', 'case-v2')].filter((c) => c.case_type === 'person');
    expect(seen).toHaveLength(truth.length);
  });
});

import { afterEach, describe, expect, it } from 'vitest';
import {
  CommCareAuthError,
  type CommCareClientOptions,
  CommCareConfigError,
  type CommCareLogEvent,
  CommCareRequestError,
  CommCareStuckError,
  CommCareThrottledError,
  CommCareUnavailableError,
  createCommCareClient,
  type Page,
  type PullRequest,
} from '../../functions/commcare/index';
import type { JsonObject } from '../../functions/common/json';
import { FAKE_KEY, FAKE_USER, type FakeHq, makeForms, reply, startFakeHq } from './fake-hq';

let hq: FakeHq | null = null;
afterEach(async () => {
  await hq?.close();
  hq = null;
});

/** A client whose sleeps only advance a fake clock, and a record of what it slept. */
function client(url: string, options: Partial<CommCareClientOptions> = {}) {
  const sleeps: number[] = [];
  const logs: CommCareLogEvent[] = [];
  let clock = 0;
  const c = createCommCareClient({
    baseUrl: url,
    username: FAKE_USER,
    apiKey: FAKE_KEY,
    sleep: async (ms) => {
      sleeps.push(ms);
      clock += ms;
    },
    now: () => clock,
    random: () => 0.5,
    logger: (e) => logs.push(e),
    ...options,
  });
  return { c, sleeps, logs };
}

async function collect(pages: AsyncIterable<Page>): Promise<Page[]> {
  const out: Page[] = [];
  for await (const page of pages) out.push(page);
  return out;
}

const ids = (pages: Page[]) => pages.flatMap((p) => [...p.records].map((r) => String(r.id)));
const forms = (extra: Partial<PullRequest> = {}): PullRequest => ({
  project: 'demo',
  resource: 'form',
  ...extra,
});

describe('requests', () => {
  it('sends the ApiKey header, the resource-first URL and DET keyset parameters', async () => {
    hq = await startFakeHq({ forms: makeForms(25) });
    const { c } = client(hq.url);
    const pages = await collect(c.pages(forms({ pageSize: 10, params: { 'xmlns.exact': ['x'] } })));
    expect(hq.authHeaders.every((h) => h === `ApiKey ${FAKE_USER}:${FAKE_KEY}`)).toBe(true);
    expect(hq.requests[0]).toBe('/a/demo/api/form/v1/?xmlns.exact=x&order_by=indexed_on&limit=10');
    expect(hq.requests[1]).toBe(
      '/a/demo/api/form/v1/?xmlns.exact=x&order_by=indexed_on&limit=10&indexed_on_start=2024-01-01T00%3A09%3A00.123456',
    );
    expect(hq.requests.some((r) => r.includes('Z'))).toBe(false);
    expect(ids(pages)).toEqual(makeForms(25).map((f) => f.id));
    expect(pages.map((p) => p.pageNumber)).toEqual([0, 1, 2]);
  });

  it("falls back to DET's /api/v0.5/ URLs when HQ answers 404 to the resource-first ones, and says so once", async () => {
    hq = await startFakeHq({ forms: makeForms(25) });
    // An older HQ: only the v0.5 spelling exists.
    hq.addFault((_req, res, url) => {
      if (!url.pathname.endsWith('/form/v1/')) return false;
      res.writeHead(404).end('not found');
      return true;
    });
    hq.addFault((_req, _res, url) => {
      if (url.pathname === '/a/demo/api/v0.5/form/') url.pathname = '/a/demo/api/form/v1/';
      return false;
    });
    const { c, logs } = client(hq.url);

    const first = await collect(c.pages(forms({ pageSize: 10 })));
    const second = await collect(c.pages(forms({ pageSize: 10 })));

    expect(ids(first)).toEqual(makeForms(25).map((f) => f.id));
    expect(ids(second)).toEqual(ids(first));
    expect(hq.requests.filter((r) => r.startsWith('/a/demo/api/form/v1/'))).toHaveLength(1);
    expect(hq.requests.slice(1).every((r) => r.startsWith('/a/demo/api/v0.5/form/'))).toBe(true);
    expect(logs.filter((l) => l.message.includes('/api/v0.5/'))).toHaveLength(1);
  });

  it('drops records already emitted at an inclusive boundary when many share one indexed_on', async () => {
    const data = makeForms(53, { tiesEvery: 4 });
    hq = await startFakeHq({ forms: data });
    const { c } = client(hq.url);
    const pages = await collect(c.pages(forms({ pageSize: 10 })));
    expect(ids(pages)).toEqual(data.map((f) => f.id));
  });

  it('resumes in a new client from a page position without losing or repeating a record', async () => {
    const data = makeForms(40, { tiesEvery: 3 });
    hq = await startFakeHq({ forms: data });
    const first = client(hq.url).c;
    const seen: string[] = [];
    let position = null;
    for await (const page of first.pages(forms({ pageSize: 7 }))) {
      seen.push(...[...page.records].map((r) => String(r.id)));
      position = page.position;
      if (page.pageNumber === 2) break;
    }
    expect(position?.boundaryIds.length).toBeGreaterThan(0);
    const second = client(hq.url).c;
    const rest = await collect(
      second.pages(forms({ pageSize: 7, from: JSON.parse(JSON.stringify(position)) })),
    );
    expect([...seen, ...ids(rest)]).toEqual(data.map((f) => f.id));
  });

  it('sends since and until as naive UTC bounds', async () => {
    hq = await startFakeHq({ forms: makeForms(30) });
    const { c } = client(hq.url);
    const pages = await collect(
      c.pages(forms({ since: '2024-01-01T00:10:00Z', until: '2024-01-01T02:00:00+02:00', pageSize: 100 })),
    );
    expect(hq.requests[0]).toContain('indexed_on_start=2024-01-01T00%3A10%3A00');
    expect(hq.requests[0]).toContain('indexed_on_end=2024-01-01T00%3A00%3A00');
    expect(ids(pages)).toEqual([]);
  });

  it('grows the page when more records share one indexed_on than fit, then fails once at the maximum', async () => {
    const data = makeForms(30, { tiesEvery: 30 });
    hq = await startFakeHq({ forms: data });
    const { c, logs } = client(hq.url);
    const pages = await collect(c.pages(forms({ pageSize: 8 })));
    expect(ids(pages)).toEqual(data.map((f) => f.id));
    expect(logs.some((l) => l.level === 'warn' && /growing the page/.test(l.message))).toBe(true);

    await hq.close();
    hq = await startFakeHq({ forms: makeForms(1001, { tiesEvery: 1001 }) });
    const stuck = client(hq.url).c;
    await expect(collect(stuck.pages(forms({ pageSize: 1000 })))).rejects.toThrow(CommCareStuckError);
  });

  it('follows relative offset links for users and absolute cursor links for case v2 on our own origin', async () => {
    const users = Array.from({ length: 5 }, (_, i) => ({ id: `u${i}` }));
    const cases = Array.from({ length: 5 }, (_, i) => ({
      case_id: `c${i}`,
      indexed_on: `2024-01-0${i + 1}T00:00:00Z`,
    }));
    hq = await startFakeHq({ users, cases });
    const { c } = client(hq.url);
    const userPages = await collect(c.pages({ project: 'demo', resource: 'user', pageSize: 2 }));
    expect(ids(userPages)).toEqual(['u0', 'u1', 'u2', 'u3', 'u4']);
    const casePages = await collect(c.pages({ project: 'demo', resource: 'case-v2', pageSize: 2 }));
    expect(casePages.flatMap((p) => [...p.records].map((r) => r.case_id))).toEqual([
      'c0',
      'c1',
      'c2',
      'c3',
      'c4',
    ]);
    expect(casePages[0]?.position?.cursor).toBeTruthy();
    expect(casePages[2]?.position).toEqual({
      indexedOn: '2024-01-05T00:00:00',
      boundaryIds: ['c4'],
      cursor: null,
    });
  });

  it('lists the project spaces the key reaches', async () => {
    hq = await startFakeHq();
    const { c } = client(hq.url);
    expect(await c.userDomains()).toEqual([{ domainName: 'demo', projectName: 'Demo' }]);
    expect(hq.requests).toEqual(['/api/user_domains/v1/?limit=1000']);
  });

  it('fails on params the pager owns', async () => {
    hq = await startFakeHq();
    const { c } = client(hq.url);
    await expect(collect(c.pages(forms({ params: { limit: ['5'] } })))).rejects.toThrow(CommCareConfigError);
  });
});

describe('faults', () => {
  it('waits Retry-After on a 429 and backs off from 1 s without one, not using up retries', async () => {
    hq = await startFakeHq({ forms: makeForms(3) });
    hq.addFault(reply(429, '', { 'retry-after': '3' }));
    for (let i = 0; i < 4; i += 1) hq.addFault(reply(429));
    const { c, sleeps } = client(hq.url, { maxRetries: 1 });
    const pages = await collect(c.pages(forms()));
    expect(ids(pages)).toHaveLength(3);
    expect(sleeps[0]).toBe(3000);
    expect(sleeps.slice(1).every((ms) => ms >= 1000)).toBe(true);
    expect(c.stats).toMatchObject({ throttled: 5, retries: 0, requests: 6, pages: 1, records: 3 });
    expect(c.stats.throttleWaitMs).toBe(sleeps.reduce((a, b) => a + b, 0));
  });

  it('fails with CommCareThrottledError when 429s outlast the throttle budget', async () => {
    hq = await startFakeHq({ forms: makeForms(3) });
    hq.addFault(reply(429, '', { 'retry-after': '20' }), false);
    const { c } = client(hq.url, { maxThrottleWaitMs: 50_000 });
    await expect(collect(c.pages(forms()))).rejects.toThrow(CommCareThrottledError);
    expect(c.stats.throttled).toBe(3);
  });

  it('retries 5xx, resets, truncated bodies and timeouts with jittered backoff', async () => {
    hq = await startFakeHq({ forms: makeForms(3) });
    hq.addFault(reply(502, '<html>bad gateway</html>'));
    hq.addFault((req) => {
      req.socket.destroy();
      return true;
    });
    hq.addFault((_q, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"meta": {"next": null}, "objects": [');
      return true;
    });
    hq.addFault(() => true); // never answers
    const { c, sleeps, logs } = client(hq.url, { timeoutMs: 300 });
    const pages = await collect(c.pages(forms()));
    expect(ids(pages)).toHaveLength(3);
    expect(c.stats.retries).toBe(4);
    // Full jitter with random() = 0.5: half of 1 s, 2 s, 4 s, 8 s.
    expect(sleeps).toEqual([500, 1000, 2000, 4000]);
    const reasons = logs.filter((l) => l.level === 'warn').map((l) => String(l.reason));
    expect(reasons[0]).toMatch(/HTTP 502/);
    expect(reasons[2]).toMatch(/not complete JSON/);
    expect(reasons[3]).toMatch(/no complete answer within 300 ms/);
  });

  it('gives up with CommCareUnavailableError after the retry cap', async () => {
    hq = await startFakeHq({ forms: makeForms(3) });
    hq.addFault(reply(500), false);
    const { c } = client(hq.url, { maxRetries: 2 });
    const error = await collect(c.pages(forms())).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CommCareUnavailableError);
    expect((error as CommCareUnavailableError).attempts).toBe(3);
    expect(String(error)).toMatch(/project "demo".*failed 3 times/);
    expect(hq.requests).toHaveLength(3);
  });

  it('fails at once on 401 with the likely causes, naming the user and project but not the key', async () => {
    hq = await startFakeHq({ forms: makeForms(3), apiKey: 'another-key' });
    const { c } = client(hq.url);
    const error = await collect(c.pages(forms())).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CommCareAuthError);
    const message = (error as Error).message;
    expect(message).toContain(FAKE_USER);
    expect(message).toContain('project "demo"');
    expect(message).toMatch(/expired/);
    expect(message).toMatch(/allow-list/);
    expect(message).toMatch(/another project/);
    expect(message).not.toContain(FAKE_KEY);
    expect(hq.requests).toHaveLength(1);
  });

  it('fails at once on 403 naming membership and the API permission', async () => {
    hq = await startFakeHq({ forms: makeForms(3) });
    hq.addFault(reply(403));
    const { c } = client(hq.url);
    const error = await collect(c.pages(forms())).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CommCareAuthError);
    expect((error as CommCareAuthError).status).toBe(403);
    expect((error as Error).message).toMatch(/not a member.*API Access/);
  });

  it('surfaces HQ error text from a 400', async () => {
    hq = await startFakeHq({ forms: makeForms(3) });
    hq.addFault(reply(400, JSON.stringify({ error: 'bad xmlns filter value' })));
    const { c } = client(hq.url);
    const error = await collect(c.pages(forms())).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CommCareRequestError);
    expect((error as CommCareRequestError).hqMessage).toBe('bad xmlns filter value');
    expect((error as Error).message).toMatch(/400: bad xmlns filter value/);
  });

  it('never lets the key reach a log line or an error, whatever HQ echoes back', async () => {
    hq = await startFakeHq({ forms: makeForms(3) });
    hq.addFault((req, res) => reply(500, `echo ${req.headers.authorization}`)(req, res, new URL('http://x')));
    hq.addFault((req, res) =>
      reply(400, `you sent ${req.headers.authorization}`)(req, res, new URL('http://x')),
    );
    const { c, logs } = client(hq.url);
    const error = await collect(c.pages(forms())).catch((e: unknown) => e);
    const everything =
      JSON.stringify(logs) + String(error) + JSON.stringify(error) + String((error as Error).stack);
    expect(everything).toContain('[redacted]');
    expect(everything).not.toContain(FAKE_KEY);
  });
});

describe('parallel windows', () => {
  it('gives the same records in the same order as a sequential pull, with resumable positions', async () => {
    const data: JsonObject[] = makeForms(230, { tiesEvery: 3 });
    hq = await startFakeHq({ forms: data });
    const sequential = await collect(client(hq.url).c.pages(forms({ pageSize: 10 })));
    const { c, logs } = client(hq.url, { concurrency: 4, pagesPerWindow: 2 });
    const parallel = await collect(c.pages(forms({ pageSize: 10 })));
    expect(ids(parallel)).toEqual(ids(sequential));
    expect(ids(parallel)).toEqual(data.map((f) => f.id));
    expect(logs.some((l) => /parallel/.test(l.message) && Number(l.windows) > 4)).toBe(true);
    expect(hq.requests.some((r) => r.includes('order_by=-indexed_on'))).toBe(true);

    // Every emitted position resumes a sequential pull at exactly the next record.
    const all = ids(parallel);
    let emitted = 0;
    for (const page of parallel.slice(0, 8)) {
      emitted += page.records.length;
      const rest = await collect(client(hq.url).c.pages(forms({ pageSize: 50, from: page.position! })));
      expect(ids(rest)).toEqual(all.slice(emitted));
    }
  });

  it("starts with DET's first page and the last page read newest first, and splits the range between them", async () => {
    const data = makeForms(100);
    hq = await startFakeHq({ forms: data });
    const { c } = client(hq.url, { concurrency: 4 });
    const pages = await collect(c.pages(forms({ pageSize: 10 })));

    expect(ids(pages)).toEqual(data.map((f) => f.id));
    // The first round trip: the sequential pull's first request and its last page, newest first.
    expect(hq.requests.slice(0, 2).sort()).toEqual([
      '/a/demo/api/form/v1/?order_by=-indexed_on&limit=10',
      '/a/demo/api/form/v1/?order_by=indexed_on&limit=10',
    ]);
    // Every later request is a window ending where the last page begins; the first window goes on from
    // the first page. 81 records lie between the pages (the last page owns 9 of its 10): 9 windows.
    const rest = hq.requests.slice(2);
    expect(rest).toHaveLength(9);
    expect(
      rest.every((r) => /order_by=indexed_on&limit=10&indexed_on_start=.*&indexed_on_end=/.test(r)),
    ).toBe(true);
    expect(rest.some((r) => r.includes('indexed_on_start=2024-01-01T00%3A09%3A00.123456'))).toBe(true);
    expect(rest.some((r) => r.includes('indexed_on_end=2024-01-01T01%3A30%3A00.123457'))).toBe(true);
    // The first page is the first page a sequential pull gives; the last, the last ten records.
    expect([...pages[0]!.records].map((r) => r.id)).toEqual(data.slice(0, 10).map((f) => f.id));
    expect([...pages.at(-1)!.records].map((r) => r.id)).toEqual(data.slice(91).map((f) => f.id));
  });

  it('sends nothing more when the first page is the last, windows or not', async () => {
    hq = await startFakeHq({ forms: makeForms(7) });
    const { c } = client(hq.url, { concurrency: 4 });
    const pages = await collect(c.pages(forms({ pageSize: 10 })));

    expect(ids(pages)).toEqual(makeForms(7).map((f) => f.id));
    expect(hq.requests.filter((r) => r.includes('order_by=indexed_on'))).toEqual([
      '/a/demo/api/form/v1/?order_by=indexed_on&limit=10',
    ]);
  });

  it('keeps the caller bounds: since and until with windows', async () => {
    const data = makeForms(120);
    hq = await startFakeHq({ forms: data });
    const request = forms({ pageSize: 5, since: '2024-01-01T00:10:00', until: '2024-01-01T01:30:00' });
    const sequential = ids(await collect(client(hq.url).c.pages(request)));
    const parallel = ids(await collect(client(hq.url, { concurrency: 3 }).c.pages(request)));
    expect(parallel).toEqual(sequential);
    expect(parallel[0]).toBe('form-00010');
    expect(parallel.at(-1)).toBe('form-00089'); // form-00090 is at 01:30:00.123456
  });

  it('lowers its concurrency on 429s and still delivers everything in order', async () => {
    const data = makeForms(200);
    hq = await startFakeHq({ forms: data });
    let n = 0;
    hq.addFault((_q, res) => {
      n += 1;
      if (n % 5 !== 0) return false;
      res.writeHead(429).end();
      return true;
    }, false);
    const { c } = client(hq.url, { concurrency: 4, maxConcurrency: 6, increaseAfter: 3 });
    const pages = await collect(c.pages(forms({ pageSize: 10 })));
    expect(ids(pages)).toEqual(data.map((f) => f.id));
    expect(c.stats.throttled).toBeGreaterThan(0);
  });

  it('retries a 429 without Retry-After after 250–500 ms in a windowed pull, longer when it repeats', async () => {
    const data = makeForms(100);
    hq = await startFakeHq({ forms: data });
    let n = 0;
    // The 4th and 5th data requests (after the two probes) are refused: one request refused twice.
    hq.addFault((_q, res) => {
      n += 1;
      if (n !== 4 && n !== 5) return false;
      res.writeHead(429).end();
      return true;
    }, false);
    const { c, sleeps } = client(hq.url, { concurrency: 1, maxConcurrency: 1 });
    expect(ids(await collect(c.pages(forms({ pageSize: 10 }))))).toEqual(data.map((f) => f.id));
    // maxConcurrency 1 is DET's sequential pull: at least 1 s.
    expect(sleeps.every((ms) => ms >= 1000)).toBe(true);

    n = 0;
    const windowed = client(hq.url, { concurrency: 2, maxConcurrency: 2 });
    expect(ids(await collect(windowed.c.pages(forms({ pageSize: 10 }))))).toEqual(data.map((f) => f.id));
    expect(windowed.c.stats.throttled).toBe(2);
    const [first, second] = windowed.sleeps;
    expect(first).toBeGreaterThanOrEqual(250);
    expect(first).toBeLessThanOrEqual(500);
    expect(second).toBeGreaterThanOrEqual(250);
    expect(second).toBeLessThanOrEqual(1000);
  });

  it('falls back to the sequential pull when the server ignores descending order', async () => {
    const data = makeForms(50);
    hq = await startFakeHq({ forms: data, supportsDescending: false });
    const { c } = client(hq.url, { concurrency: 4 });
    expect(ids(await collect(c.pages(forms({ pageSize: 10 }))))).toEqual(data.map((f) => f.id));
  });
});

/**
 * A slow answer of a windowed pull's first round trip gives its request slot back once its body is in,
 * before the page is read, and a retry takes a slot again: at the HTTP layer against a loopback HQ held
 * back by the counting proxy, in the budget's own terms, and through the client's pulls, counted at the
 * proxy.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createCommCareClient, type Page } from '../../functions/commcare';
import { CommCareHttp, type RequestHooks } from '../../functions/commcare/http';
import { parseWhole } from '../../functions/commcare/page-body';
import {
  AimdLimiter,
  EARLY_RELEASE_AFTER_MS,
  earlyReleaseHooks,
  FIRST_ROUND_PEERS_MS,
  FirstRoundReads,
  HeldSlot,
  RequestBudget,
} from '../../functions/commcare/windows';
import { type CountingProxy, startCountingProxy } from '../support/counting-proxy';
import { FAKE_KEY, FAKE_USER, type FakeHq, makeForms, startFakeHq } from './fake-hq';

let hq: FakeHq | null = null;
let proxy: CountingProxy | null = null;

afterEach(async () => {
  await proxy?.close();
  proxy = null;
  await hq?.close();
  hq = null;
});

/** HQ with 100 forms and 60 cases behind the counting proxy, every answer held `latencyMs` after its request. */
async function slowHq(latencyMs: number): Promise<{ hq: FakeHq; proxy: CountingProxy }> {
  hq = await startFakeHq({ forms: makeForms(100), cases: makeForms(60) });
  proxy = await startCountingProxy(hq.url, latencyMs);
  return { hq, proxy };
}

/** The first answer to the forms' first page: 200 with half a list, which only reading the body finds out. */
function truncateFirstFormPage(fake: FakeHq): void {
  fake.addFault((_req, res, url) => {
    if (!url.pathname.includes('/form/') || url.searchParams.get('order_by') !== 'indexed_on') return false;
    if (url.searchParams.has('indexed_on_start')) return false;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"meta": {"next": null, "limit": 10}, "objects": [{"id": "x", "indexed_on": ');
    return true;
  }, true);
}

function http(baseUrl: string): CommCareHttp {
  return new CommCareHttp({
    baseUrl,
    username: FAKE_USER,
    apiKey: FAKE_KEY,
    timeoutMs: 10_000,
    maxRetries: 2,
    maxRetryTimeMs: 10_000,
    maxThrottleWaitMs: 10_000,
    backoffBaseMs: 1,
    backoffMaxMs: 1,
    userAgent: 'test',
    maxResponseBytes: 2 ** 20,
    sleep: async () => undefined,
    random: () => 0,
    now: Date.now,
    logger: undefined,
  });
}

describe('the answered and resending hooks', () => {
  it('tell how long HQ took, before the body is decoded, which then waits a turn when the hook asks', async () => {
    const { proxy } = await slowHq(250);
    const url = `${proxy.url}/a/demo/api/form/v1/?order_by=indexed_on&limit=10`;
    const events: string[] = [];
    const waited: number[] = [];
    const hooks = (release: boolean): RequestHooks => ({
      answered: (ms) => {
        waited.push(ms);
        events.push('answered');
        // Runs before the decode only when the decode waits for a later turn.
        setImmediate(() => events.push('next turn'));
        return release ? new Promise((resolve) => setImmediate(resolve)) : undefined;
      },
    });
    const decode = () => events.push('decode');

    await http(proxy.url).get(url, 'demo', hooks(true), decode);
    expect(events).toEqual(['answered', 'next turn', 'decode']);
    events.length = 0;
    await http(proxy.url).get(url, 'demo', hooks(false), decode);
    expect(events).toEqual(['answered', 'decode']);
    expect(waited.every((ms) => ms >= 240)).toBe(true);
  });

  it('are called again for a retry of a body that is not JSON, resending first', async () => {
    const { hq, proxy } = await slowHq(0);
    hq.addFault((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"objects": [');
      return true;
    }, true);
    const events: string[] = [];
    const hooks: RequestHooks = {
      answered: () => {
        events.push('answered');
        return undefined;
      },
      resending: async () => {
        events.push('resending');
      },
    };
    const body = await http(proxy.url).get(
      `${proxy.url}/a/demo/api/form/v1/?limit=1`,
      'demo',
      hooks,
      parseWhole,
    );
    expect(body).toHaveProperty('objects');
    expect(events).toEqual(['answered', 'resending', 'answered']);
  });
});

describe('a request slot given back early', () => {
  it(`is given back only for an answer that took ${EARLY_RELEASE_AFTER_MS} ms or more, and once`, () => {
    const budget = new RequestBudget(new AimdLimiter({ initial: 2, max: 2 }));
    const slot = new HeldSlot(budget);
    const hooks = earlyReleaseHooks(slot);
    slot.take();
    expect(hooks.answered!(EARLY_RELEASE_AFTER_MS - 1)).toBeUndefined();
    expect(budget.inFlight).toBe(1);
    expect(hooks.answered!(EARLY_RELEASE_AFTER_MS)).toBeInstanceOf(Promise);
    expect(budget.inFlight).toBe(0);
    // The page read after it, and a second give, count nothing more.
    expect(hooks.answered!(EARLY_RELEASE_AFTER_MS * 2)).toBeUndefined();
    slot.give();
    expect(budget.inFlight).toBe(0);
  });

  it("has its page read at its turn, the page that completes its pull's first round first", async () => {
    const reads = new FirstRoundReads();
    const order: string[] = [];
    const pulls = { a: false, b: false };
    // Pull a's first page, pull b's first page, then pull a's last page (first once a's first is read),
    // and the caller's work (idle), which waits for every page.
    const turns = [
      reads.idle().then(() => order.push('caller')),
      reads
        .turn(() => 0, 0)
        .then(() => {
          order.push('a first');
          pulls.a = true;
        }),
      reads.turn(() => (pulls.b ? 1 : 0), 0).then(() => order.push('b first')),
      reads.turn(() => (pulls.a ? 1 : 0), 0).then(() => order.push('a last')),
      reads.turn(() => 0, 0).then(() => order.push('b last')),
    ];
    await Promise.all(turns);
    expect(order).toEqual(['a first', 'a last', 'b first', 'b last', 'caller']);
  });

  it("waits for the answers of its own round trip before a page is read, not for a later round's", async () => {
    let now = 0;
    const reads = new FirstRoundReads(() => now);
    const order: string[] = [];
    const peer = reads.request();
    const later = reads.request();
    peer.sent();
    now = FIRST_ROUND_PEERS_MS + 1;
    later.sent();
    const read = reads.turn(() => 0, 0).then(() => order.push('read'));
    await new Promise((resolve) => setTimeout(resolve, 30));
    // The peer (sent with it) is still unanswered: the page waits.
    expect(order).toEqual([]);
    peer.done();
    await read;
    // The request sent a round trip later was not waited for.
    expect(order).toEqual(['read']);

    // A peer that never answers holds a page back for FIRST_ROUND_PEERS_MS at most.
    const slow = reads.request();
    slow.sent();
    const since = now;
    const held = reads.turn(() => 0, now);
    await new Promise((resolve) => setTimeout(resolve, 30));
    now = since + FIRST_ROUND_PEERS_MS;
    await held;
  });

  it('is taken again for a retry, waiting while the budget is full', async () => {
    const budget = new RequestBudget(new AimdLimiter({ initial: 1, max: 1 }));
    const slot = new HeldSlot(budget);
    const other = new HeldSlot(budget);
    slot.take();
    slot.give();
    other.take();
    let retaken = false;
    const retry = earlyReleaseHooks(slot).resending!().then(() => {
      retaken = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(retaken).toBe(false);
    other.give();
    await retry;
    expect(retaken).toBe(true);
    expect(slot.isHeld).toBe(true);
    expect(budget.inFlight).toBe(1);
    // A slot still held is not taken twice.
    await earlyReleaseHooks(slot).resending!();
    expect(budget.inFlight).toBe(1);
  });
});

describe('windowed pulls from a slow HQ', () => {
  it('keep within their shared requests in flight at HQ, a retried first page included, and give every record in order', async () => {
    const { hq, proxy } = await slowHq(EARLY_RELEASE_AFTER_MS + 50);
    truncateFirstFormPage(hq);
    const client = createCommCareClient({
      baseUrl: proxy.url,
      username: FAKE_USER,
      apiKey: FAKE_KEY,
      concurrency: 2,
      maxConcurrency: 2,
      backoffBaseMs: 1,
      backoffMaxMs: 1,
    });
    const pull = async (resource: 'form' | 'case') => {
      const pages: Page[] = [];
      for await (const page of client.pages({ project: 'demo', resource, pageSize: 10 })) pages.push(page);
      return pages.flatMap((p) => [...p.records].map((r) => r.id));
    };
    // The case pull waits for a slot the forms' first round gives back; the forms' retry must wait too.
    const [forms, cases] = await Promise.all([pull('form'), pull('case')]);

    expect(forms).toEqual(makeForms(100).map((f) => f.id));
    expect(cases).toEqual(makeForms(60).map((f) => f.id));
    expect(client.stats.retries).toBe(1);
    expect(proxy.maxInFlight()).toBe(2);
    expect(proxy.requests().some((path) => path.includes('indexed_on_end'))).toBe(true);
  });
});

describe('a last page that peeks well but is broken further on', () => {
  it('leaves the final window open, so every record still comes, once and in order', async () => {
    const forms = makeForms(100);
    const newest = forms.at(-1)!;
    const { hq, proxy } = await slowHq(EARLY_RELEASE_AFTER_MS + 50);
    hq.addFault((_req, res, url) => {
      if (url.searchParams.get('order_by') !== '-indexed_on') return false;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        `{"meta": {"next": null, "limit": 10, "total_count": 100}, "objects": [${JSON.stringify(newest)}, {"id": `,
      );
      return true;
    }, true);
    const client = createCommCareClient({
      baseUrl: proxy.url,
      username: FAKE_USER,
      apiKey: FAKE_KEY,
      concurrency: 4,
      maxConcurrency: 4,
    });
    const ids: string[] = [];
    for await (const page of client.pages({ project: 'demo', resource: 'form', pageSize: 10 }))
      for (const record of page.records) ids.push(String(record.id));

    expect(ids).toEqual(forms.map((f) => f.id));
    // The last page was not asked for again: its records came through the open final window.
    expect(proxy.requests().filter((r) => r.includes('order_by=-indexed_on'))).toHaveLength(1);
  });
});

/** Forms indexed at `offsets` (ms after 2024-01-01), in that order. */
function formsAt(offsets: readonly number[]) {
  const base = Date.UTC(2024, 0, 1);
  return offsets.map((offset, i) => ({
    id: `form-${String(i).padStart(5, '0')}`,
    indexed_on: `${new Date(base + offset).toISOString().slice(0, 19)}.${String(offset % 1000).padStart(3, '0')}000Z`,
  }));
}

describe('windows planned before the last page is read', () => {
  const minute = 60_000;
  const day = 1440 * minute;
  const layouts: Record<string, number[]> = {
    // The last page spans far less time than an even spread gives it: the windows are re-cut to it.
    'dense at the end': [
      ...Array.from({ length: 100 }, (_, i) => i * day),
      ...Array.from({ length: 40 }, (_, i) => 100 * day + i * minute),
    ],
    // The last page reaches back far before its estimated start: cuts past it are dropped.
    'sparse at the end': [
      ...Array.from({ length: 100 }, (_, i) => i * minute),
      ...Array.from({ length: 20 }, (_, i) => 100 * minute + (i + 1) * day),
    ],
    even: Array.from({ length: 120 }, (_, i) => i * minute),
  };

  for (const [layout, offsets] of Object.entries(layouts)) {
    it(`give every record once, in order, from a slow HQ (${layout})`, async () => {
      const forms = formsAt(offsets);
      hq = await startFakeHq({ forms });
      proxy = await startCountingProxy(hq.url, EARLY_RELEASE_AFTER_MS + 50);
      const client = createCommCareClient({
        baseUrl: proxy.url,
        username: FAKE_USER,
        apiKey: FAKE_KEY,
        concurrency: 4,
        maxConcurrency: 4,
      });
      const pages: Page[] = [];
      for await (const page of client.pages({ project: 'demo', resource: 'form', pageSize: 10 }))
        pages.push(page);

      expect(pages.flatMap((p) => [...p.records].map((r) => r.id))).toEqual(forms.map((f) => f.id));
      // The last page is the pull's newest records, read newest first in the first round trip.
      expect(proxy.requests().filter((r) => r.includes('order_by=-indexed_on'))).toHaveLength(1);
      expect(proxy.maxInFlight()).toBeLessThanOrEqual(4);
    });
  }
});

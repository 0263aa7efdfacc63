import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatNaiveUtc, parseTimestamp, toNaiveUtc } from '../../functions/commcare/dates';
import { CommCareConfigError, redact } from '../../functions/commcare/errors';
import { parseRetryAfter } from '../../functions/commcare/http';
import {
  buildQuery,
  parseEnvelope,
  resolveBaseUrl,
  resolveNext,
  resourceSpec,
  resourceUrl,
} from '../../functions/commcare/resources';
import { AimdLimiter, orderedMerge, RequestBudget, splitRange } from '../../functions/commcare/windows';
import { timestampTexts } from '../support/timestamp-text';

describe('naive UTC dates', () => {
  it('drops the Z and keeps microseconds only when they are not zero, like DET', () => {
    expect(toNaiveUtc('2024-01-01T00:09:00Z', 'x')).toBe('2024-01-01T00:09:00');
    expect(toNaiveUtc('2024-01-01T00:09:00.000000Z', 'x')).toBe('2024-01-01T00:09:00');
    expect(toNaiveUtc('2017-09-02T20:05:35.459547Z', 'x')).toBe('2017-09-02T20:05:35.459547');
    expect(toNaiveUtc('2017-09-02T20:05:35.4Z', 'x')).toBe('2017-09-02T20:05:35.400000');
  });

  it('converts a real offset to UTC instead of ignoring it', () => {
    expect(toNaiveUtc('2024-01-01T02:00:00+02:00', 'x')).toBe('2024-01-01T00:00:00');
    expect(toNaiveUtc('2023-12-31T19:30:00-0430', 'x')).toBe('2024-01-01T00:00:00');
  });

  it('reads a bare date as midnight UTC', () => {
    expect(toNaiveUtc('2024-03-05', 'since')).toBe('2024-03-05T00:00:00');
  });

  it('orders instants exactly, to the microsecond', () => {
    const a = parseTimestamp('2024-01-01T00:00:00.000001Z')!;
    const b = parseTimestamp('2024-01-01T00:00:00.000002')!;
    expect(b - a).toBe(1);
    expect(formatNaiveUtc(a)).toBe('2024-01-01T00:00:00.000001');
  });

  it("reads HQ's usual shape without its regular expression, to the same instant or null", () => {
    // A trailing space always takes the general path (which trims it), so both paths meet here.
    const general = (text: string) => parseTimestamp(`${text} `);
    const usual = timestampTexts({
      fraction: /^([.,][0-9]{0,11})?$/,
      zones: ['', 'Z', 'z', '+01:00', ' Z', 'ZZ'],
    });
    const edited = fc
      .tuple(usual, fc.nat(30), fc.constantFrom('', '-', '9', 'a', ':', '.'))
      .map(([text, at, insert]) => text.slice(0, at) + insert + text.slice(at + 1));
    fc.assert(
      fc.property(fc.oneof(usual, edited), (text) => {
        expect(parseTimestamp(text), text).toBe(general(text));
      }),
      { numRuns: 5000 },
    );
    expect(parseTimestamp('2025-06-23T23:31:01.304872Z')).toBe(
      Date.UTC(2025, 5, 23, 23, 31, 1) * 1000 + 304872,
    );
    expect(parseTimestamp('2024-02-29T00:00:00.1234567891Z')).toBeNull();
  });

  it('fails on a value that is not a date, naming the value', () => {
    expect(() => toNaiveUtc('yesterday', 'since')).toThrow(CommCareConfigError);
    expect(() => toNaiveUtc('yesterday', 'since')).toThrow(/since .*"yesterday"/);
    expect(parseTimestamp('2024-02-31')).toBeNull();
  });
});

describe('URLs', () => {
  it('resolves DET base URL aliases and strips a trailing slash', () => {
    expect(resolveBaseUrl('prod')).toBe('https://www.commcarehq.org');
    expect(resolveBaseUrl('local')).toBe('http://localhost:8000');
    expect(resolveBaseUrl('https://india.commcarehq.org/')).toBe('https://india.commcarehq.org');
  });

  it('fails on base URLs carrying credentials or a query', () => {
    expect(() => resolveBaseUrl('https://me:secret@www.commcarehq.org')).toThrow(CommCareConfigError);
    expect(() => resolveBaseUrl('https://www.commcarehq.org/?api_key=x')).toThrow(CommCareConfigError);
    expect(() => resolveBaseUrl('ftp://x')).toThrow(/http or https/);
  });

  it('builds resource-first URLs by default and legacy ones on request', () => {
    const base = 'https://www.commcarehq.org';
    expect(resourceUrl(base, 'demo', resourceSpec('form'), 'resource-first')).toBe(
      `${base}/a/demo/api/form/v1/`,
    );
    expect(resourceUrl(base, 'demo', resourceSpec('case-v2'), 'resource-first')).toBe(
      `${base}/a/demo/api/case/v2/`,
    );
    expect(resourceUrl(base, 'demo', resourceSpec('location-v2'), 'legacy')).toBe(
      `${base}/a/demo/api/v0.6/location/`,
    );
    expect(resourceUrl(base, 'demo', resourceSpec('web-user'), 'legacy')).toBe(
      `${base}/a/demo/api/v0.5/web-user/`,
    );
  });

  it('fails on a project name that would change the path', () => {
    expect(() => resourceUrl('https://x.org', '../admin', resourceSpec('form'), 'legacy')).toThrow(
      /project space name/,
    );
  });

  it('fails on an unknown resource, listing the known ones', () => {
    expect(() => resourceSpec('ledger')).toThrow(/unknown CommCare resource "ledger".*form, case/);
  });

  it('keeps repeated query parameters in order', () => {
    expect(buildQuery({ 'xmlns.exact': ['a', 'b'], limit: ['10'] })).toBe(
      'xmlns.exact=a&xmlns.exact=b&limit=10',
    );
  });

  it('prefixes relative next links and keeps our own origin for absolute ones', () => {
    expect(resolveNext('https://hq.org', '/a/d/api/user/v1/?limit=2&offset=2')).toBe(
      'https://hq.org/a/d/api/user/v1/?limit=2&offset=2',
    );
    expect(resolveNext('http://127.0.0.1:9', 'https://evil.example/a/d/api/case/v2/?cursor=abc')).toBe(
      'http://127.0.0.1:9/a/d/api/case/v2/?cursor=abc',
    );
  });

  it('knows each resource maximum page', () => {
    expect(resourceSpec('form').maxLimit).toBe(1000);
    expect(resourceSpec('case').maxLimit).toBe(5000);
    expect(resourceSpec('case-v2').maxLimit).toBe(5000);
    expect(resourceSpec('location-v2').maxLimit).toBe(5000);
    expect(resourceSpec('user').maxLimit).toBe(1000);
  });
});

describe('envelopes', () => {
  it('reads tastypie and case v2 envelopes, tolerating a null total_count', () => {
    const t = parseEnvelope(
      resourceSpec('form'),
      { meta: { next: null, total_count: null, limit: 2 }, objects: [{ id: 'a' }] },
      '/p',
    );
    expect(t).toEqual({ records: [{ id: 'a' }], next: null, totalCount: null, limit: 2 });
    const v2 = parseEnvelope(resourceSpec('case-v2'), { matching_records: 3, cases: [], next: 'x' }, '/p');
    expect(v2).toEqual({ records: [], next: 'x', totalCount: 3, limit: null });
  });

  it('fails on a body that is not the envelope, naming the path', () => {
    expect(() => parseEnvelope(resourceSpec('form'), { cases: [] }, '/a/d/api/form/v1/')).toThrow(
      /\/a\/d\/api\/form\/v1\/.*"objects" is not an array/,
    );
  });
});

describe('retry helpers', () => {
  it('reads Retry-After as seconds rounded up, or as an HTTP date', () => {
    expect(parseRetryAfter('2', 0)).toBe(2000);
    expect(parseRetryAfter('0.2', 0)).toBe(1000);
    expect(parseRetryAfter(undefined, 0)).toBeNull();
    expect(parseRetryAfter('Wed, 21 Oct 2015 07:28:05 GMT', Date.parse('2015-10-21T07:28:00Z'))).toBe(5000);
  });

  it('redacts every occurrence of a secret', () => {
    expect(redact('a KEY1234 b KEY1234', ['KEY1234'])).toBe('a [redacted] b [redacted]');
  });
});

describe('AIMD limiter', () => {
  it('cuts to 0.7 of the limit (at least one less) on a 429 and grows back by one after a run of successes', () => {
    const limiter = new AimdLimiter({ initial: 4, max: 6, increaseAfter: 3 });
    limiter.onThrottle();
    expect(limiter.limit).toBe(3);
    limiter.onThrottle();
    expect(limiter.limit).toBe(2);
    limiter.onThrottle();
    expect(limiter.limit).toBe(1);
    limiter.onThrottle();
    expect(limiter.limit).toBe(1);
    for (let i = 0; i < 3; i += 1) limiter.onSuccess();
    expect(limiter.limit).toBe(2);
    limiter.onSuccess();
    limiter.onThrottle();
    expect(limiter.limit).toBe(1);
    for (let i = 0; i < 100; i += 1) limiter.onSuccess();
    expect(limiter.limit).toBe(6);
  });
});

describe('AIMD limiter in rounds', () => {
  it('decreases at most once per round: 429s of requests sent before the decrease are ignored', () => {
    const limiter = new AimdLimiter({ initial: 8, max: 8 });
    const tickets = Array.from({ length: 8 }, () => limiter.begin());
    limiter.onThrottle(tickets[3]);
    expect(limiter.limit).toBe(6);
    for (const ticket of tickets) limiter.onThrottle(ticket);
    expect(limiter.limit).toBe(6);
    // A request sent after the decrease that is refused again is a new congestion event.
    limiter.onThrottle(limiter.begin());
    expect(limiter.limit).toBe(4);
  });

  it('grows by one per round of `limit` successes, up to the maximum', () => {
    const limiter = new AimdLimiter({ initial: 2, max: 4 });
    limiter.onSuccess(limiter.begin());
    expect(limiter.limit).toBe(2);
    limiter.onSuccess(limiter.begin());
    expect(limiter.limit).toBe(3);
    for (let i = 0; i < 3; i += 1) limiter.onSuccess(limiter.begin());
    expect(limiter.limit).toBe(4);
    for (let i = 0; i < 50; i += 1) limiter.onSuccess(limiter.begin());
    expect(limiter.limit).toBe(4);
  });

  it('stays near its maximum when every tenth request is refused, and backs off under a persistent throttle', () => {
    const run = (refused: (n: number) => boolean) => {
      const limiter = new AimdLimiter({ initial: 4, max: 4 });
      let n = 0;
      let sum = 0;
      const rounds = 200;
      for (let round = 0; round < rounds; round += 1) {
        // One round: `limit` requests in flight together, answered after all were sent.
        const tickets = Array.from({ length: limiter.limit }, () => limiter.begin());
        sum += tickets.length;
        for (const ticket of tickets) {
          n += 1;
          if (refused(n)) limiter.onThrottle(ticket);
          else limiter.onSuccess(ticket);
        }
      }
      return sum / rounds;
    };
    expect(run(() => false)).toBe(4);
    expect(run((n) => n % 10 === 0)).toBeGreaterThan(3);
    expect(run(() => true)).toBeLessThan(1.1);
  });

  it('never leaves 1 when its maximum is 1', () => {
    const limiter = new AimdLimiter({ initial: 1, max: 1 });
    limiter.onThrottle(limiter.begin());
    for (let i = 0; i < 10; i += 1) limiter.onSuccess(limiter.begin());
    expect(limiter.limit).toBe(1);
  });
});

describe('window splitting', () => {
  it('cuts a range into strictly increasing interior boundaries', () => {
    expect(splitRange(0, 100, 4)).toEqual([25, 50, 75]);
    expect(splitRange(0, 2, 10)).toEqual([1, 2]);
    expect(splitRange(5, 5, 4)).toEqual([]);
    expect(splitRange(0, 100, 1)).toEqual([]);
  });
});

async function* produce(name: string, count: number, log: string[], delayMs: number) {
  for (let i = 0; i < count; i += 1) {
    await new Promise((r) => setTimeout(r, delayMs));
    log.push(`${name}${i}`);
    yield `${name}${i}`;
  }
}

describe('ordered merge', () => {
  it('yields items in source order even when later sources finish first', async () => {
    const produced: string[] = [];
    const sources = [
      () => produce('a', 3, produced, 15),
      () => produce('b', 2, produced, 1),
      () => produce('c', 2, produced, 1),
    ];
    const out: string[] = [];
    for await (const item of orderedMerge(sources, {
      limiter: new AimdLimiter({ initial: 3, max: 3, increaseAfter: 10 }),
      queuePages: 5,
    })) {
      out.push(item);
    }
    expect(out).toEqual(['a0', 'a1', 'a2', 'b0', 'b1', 'c0', 'c1']);
    expect(produced.indexOf('b1')).toBeLessThan(produced.indexOf('a2'));
  });

  it('runs one source at a time when the limit is 1', async () => {
    const produced: string[] = [];
    const sources = [() => produce('a', 2, produced, 5), () => produce('b', 2, produced, 1)];
    const out: string[] = [];
    for await (const item of orderedMerge(sources, {
      limiter: new AimdLimiter({ initial: 1, max: 1, increaseAfter: 10 }),
      queuePages: 5,
    })) {
      out.push(item);
    }
    expect(produced).toEqual(['a0', 'a1', 'b0', 'b1']);
    expect(out).toEqual(produced);
  });

  it('holds at most the queue capacity of a window ahead of the head', async () => {
    const produced: string[] = [];
    const sources = [() => produce('a', 1, produced, 60), () => produce('b', 10, produced, 1)];
    const iterator = orderedMerge(sources, {
      limiter: new AimdLimiter({ initial: 2, max: 2, increaseAfter: 10 }),
      queuePages: 2,
    });
    const first = await iterator.next();
    expect(first.value).toBe('a0');
    // b may have produced its 2 queued items plus the one waiting to be pushed, never all 10.
    expect(produced.filter((p) => p.startsWith('b')).length).toBeLessThanOrEqual(3);
    await iterator.return(undefined);
  });

  it('keeps `limit` fetches going while the head is the slow one, within a page budget', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    let produced = 0;
    let consumed = 0;
    let maxHeld = 0;
    const started: string[] = [];
    const source = (name: string, delayMs: number) =>
      async function* () {
        started.push(name);
        inFlight += 1;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise((r) => setTimeout(r, delayMs));
        inFlight -= 1;
        produced += 1;
        maxHeld = Math.max(maxHeld, produced - consumed);
        yield name;
      };
    // The head takes as long as the next seven windows together: they must not wait for it.
    const sources = Array.from({ length: 16 }, (_, i) => source(`w${i}`, i === 0 ? 120 : 20));
    const iterator = orderedMerge(sources, {
      limiter: new AimdLimiter({ initial: 4, max: 4 }),
      queuePages: 1,
    });
    const out: string[] = [];
    const first = await iterator.next();
    out.push(first.value as string);
    consumed += 1;
    // While w0 was outstanding, windows beyond the first four were fetched: up to 2·4 − 1 ahead.
    expect(started.length).toBe(8);
    for (;;) {
      const step = await iterator.next();
      if (step.done) break;
      consumed += 1;
      out.push(step.value);
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(out).toEqual(sources.map((_, i) => `w${i}`));
    expect(maxInFlight).toBe(4);
    // The head's page plus at most seven pages held or fetched ahead of it.
    expect(maxHeld).toBeLessThanOrEqual(8);
  });

  it('lets windows ahead of the head fetch nothing more once the limit drops to 1', async () => {
    const limiter = new AimdLimiter({ initial: 3, max: 3 });
    const fetched: string[] = [];
    const sources = ['a', 'b', 'c'].map(
      (name) =>
        async function* () {
          for (let i = 0; i < 3; i += 1) {
            fetched.push(`${name}${i}`);
            await new Promise((r) => setTimeout(r, 5));
            yield `${name}${i}`;
          }
        },
    );
    const iterator = orderedMerge(sources, { limiter, queuePages: 1 });
    expect((await iterator.next()).value).toBe('a0');
    limiter.onThrottle();
    limiter.onThrottle();
    expect(limiter.limit).toBe(1);
    await new Promise((r) => setTimeout(r, 50));
    // b and c hold the one page each fetched before the drop, and fetch no further.
    expect(fetched.filter((f) => !f.startsWith('a'))).toEqual(['b0', 'c0']);
    const rest: string[] = [];
    for (;;) {
      const step = await iterator.next();
      if (step.done) break;
      rest.push(step.value);
    }
    expect(rest).toEqual(['a1', 'a2', 'b0', 'b1', 'b2', 'c0', 'c1', 'c2']);
  });

  it('shares one budget between merges: never more than the limit in flight, and each gets every item', async () => {
    const budget = new RequestBudget(new AimdLimiter({ initial: 2, max: 2 }));
    let inFlight = 0;
    let maxInFlight = 0;
    const windows = (name: string) =>
      [0, 1, 2].map(
        (w) =>
          async function* () {
            for (let i = 0; i < 2; i += 1) {
              inFlight += 1;
              maxInFlight = Math.max(maxInFlight, inFlight);
              await new Promise((r) => setTimeout(r, 3));
              inFlight -= 1;
              yield `${name}${w}.${i}`;
            }
          },
      );
    const drain = async (name: string) => {
      const out: string[] = [];
      for await (const item of orderedMerge(windows(name), { budget, queuePages: 1 })) out.push(item);
      return out;
    };
    // The first merge takes both requests at once; the others start with none free.
    const [a, b, c] = await Promise.all([drain('a'), drain('b'), drain('c')]);
    const expected = (name: string) => [0, 1, 2].flatMap((w) => [`${name}${w}.0`, `${name}${w}.1`]);
    expect(a).toEqual(expected('a'));
    expect(b).toEqual(expected('b'));
    expect(c).toEqual(expected('c'));
    expect(maxInFlight).toBe(2);
    expect(budget.inFlight).toBe(0);
  });

  it('fails fast when any source fails, before the head finishes', async () => {
    const sources = [
      () => produce('a', 50, [], 5),
      async function* () {
        yield 'b0';
        throw new Error('window b broke');
      },
    ];
    const started = Date.now();
    const run = async () => {
      for await (const _ of orderedMerge(sources, {
        limiter: new AimdLimiter({ initial: 2, max: 2, increaseAfter: 10 }),
        queuePages: 2,
      })) {
        // consume
      }
    };
    await expect(run()).rejects.toThrow('window b broke');
    expect(Date.now() - started).toBeLessThan(200);
  });
});

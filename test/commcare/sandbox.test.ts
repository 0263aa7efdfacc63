import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CommCareAuthError,
  type CommCareClient,
  type CommCareClientOptions,
  type CommCareLogEvent,
  createCommCareClient,
  type PullRequest,
  type ResourceName,
} from '../../functions/commcare/index';
import { resourceSpec } from '../../functions/commcare/resources';
import type { JsonObject } from '../../functions/common/json';
import { SANDBOX_RESOURCES } from '../../functions/sandbox/dataset';
import {
  DEFAULT_API_KEY,
  DEFAULT_USERNAME,
  type RunningSandbox,
  startSandbox,
} from '../../functions/sandbox/server';

const PROJECT = { name: 'demo', forms: 1200, cases: 700, mobileUsers: 25, groups: 4, locations: 12 };

function client(sandbox: RunningSandbox, options: Partial<CommCareClientOptions> = {}): CommCareClient {
  return createCommCareClient({
    baseUrl: sandbox.url,
    username: DEFAULT_USERNAME,
    apiKey: DEFAULT_API_KEY,
    // Retries and 429s wait in fake time: fault runs stay fast.
    sleep: async () => {},
    backoffBaseMs: 1,
    ...options,
  });
}

async function pull(c: CommCareClient, request: PullRequest): Promise<JsonObject[]> {
  const out: JsonObject[] = [];
  for await (const record of c.records(request)) out.push(record);
  return out;
}

const idOf = (resource: ResourceName, record: JsonObject) => String(record[resourceSpec(resource).idField]);

/**
 * The sandbox serves every version of a re-indexed record at its own indexed_on (its timeline), so a
 * keyset pull must return exactly that timeline, in order: each (id, indexed_on) once, nothing missing,
 * and every id of the final state.
 */
function expectExactly(sandbox: RunningSandbox, resource: ResourceName, records: JsonObject[]): void {
  const version = (r: JsonObject) => `${idOf(resource, r)}@${String(r.indexed_on ?? '')}`;
  const versions = records.map(version);
  expect(new Set(versions).size).toBe(versions.length);
  if (resource === 'form' || resource === 'case') {
    expect(versions).toEqual([...sandbox.dataset.timeline('demo', resource)].map(version));
  }
  if (resource === 'case-v2') {
    // Case v2 orders a tie group by case id (HQ sorts on indexed_on, then _id).
    expect([...versions].sort()).toEqual([...sandbox.dataset.timeline('demo', resource)].map(version).sort());
  }
  const ids = new Set(records.map((r) => idOf(resource, r)));
  const truth = [...sandbox.dataset.finalState('demo', resource as never)].map(([id]) => id);
  expect([...ids].sort()).toEqual([...truth].sort());
}

/** Forms with archived ones too, so that the pull can be compared with the whole dataset. */
const ALL_FORMS = { include_archived: ['true'] };

describe('against the sandbox', () => {
  let sandbox: RunningSandbox;
  beforeAll(async () => {
    sandbox = await startSandbox({ projects: [PROJECT] });
  });
  afterAll(async () => {
    await sandbox.close();
  });

  it.each(SANDBOX_RESOURCES)('pages %s to completion with nothing lost or duplicated', async (resource) => {
    const params: Record<string, string[]> =
      resource === 'form'
        ? ALL_FORMS
        : resource === 'ucr'
          ? { data_source_id: [sandbox.dataset.model('demo').ucr.id] }
          : {};
    const records = await pull(client(sandbox), { project: 'demo', resource, params, pageSize: 100 });
    expectExactly(sandbox, resource, records);
  });

  it('pages forms with the largest page and with ties at page boundaries', async () => {
    for (const pageSize of [1000, 7]) {
      const records = await pull(client(sandbox), {
        project: 'demo',
        resource: 'form',
        params: ALL_FORMS,
        pageSize,
      });
      expectExactly(sandbox, 'form', records);
    }
  });

  it('gives the same records in the same order with concurrency 4 as with concurrency 1', async () => {
    for (const resource of ['form', 'case'] as const) {
      const request: PullRequest = {
        project: 'demo',
        resource,
        pageSize: 50,
        params: resource === 'form' ? ALL_FORMS : {},
      };
      const one = await pull(client(sandbox), request);
      const logs: CommCareLogEvent[] = [];
      const four = await pull(client(sandbox, { concurrency: 4, logger: (e) => logs.push(e) }), request);
      expect(logs.find((e) => /parallel/.test(e.message))?.windows).toBeGreaterThanOrEqual(4);
      expect(four.map((r) => r.id)).toEqual(one.map((r) => r.id));
      expectExactly(sandbox, resource, four);
    }
  });

  it('leaves the tie group where the last page begins to the last window: nothing lost, nothing twice', async () => {
    // Prepare: a page size whose last page, read newest first, begins inside a tie group, so records
    // at its oldest indexed_on go on below it and only the windows before it may emit them.
    const keys = [...sandbox.dataset.timeline('demo', 'form')].map((r) => String(r.indexed_on));
    const n = keys.length;
    let pageSize = 0;
    for (let p = 20; p < n / 4 && pageSize === 0; p += 1)
      if (keys[n - p] === keys[n - p - 1] && keys[n - p] !== keys[n - 1]) pageSize = p;
    expect(pageSize).toBeGreaterThan(0);
    const request: PullRequest = { project: 'demo', resource: 'form', pageSize, params: ALL_FORMS };
    const paths: string[] = [];
    const logger = (e: CommCareLogEvent) => {
      if (e.message === 'GET') paths.push(String(e.path));
    };

    // Act
    const one = await pull(client(sandbox), request);
    const four = await pull(client(sandbox, { concurrency: 4, logger }), request);

    // Assert
    expect(four.map((r) => r.id)).toEqual(one.map((r) => r.id));
    expectExactly(sandbox, 'form', four);
    // The last page came in the first round trip and ended the windows: none was left open.
    expect(paths.filter((p) => p.includes('order_by=-indexed_on'))).toEqual([
      expect.stringContaining(`limit=${pageSize}`),
    ]);
    const windows = paths.filter((p) => p.includes('indexed_on_start='));
    expect(windows.length).toBeGreaterThan(2);
    expect(windows.every((p) => p.includes('indexed_on_end='))).toBe(true);
  });

  it('recovers from each fault the sandbox can inject', async () => {
    const faults = [
      { throttleEvery: 3, retryAfterSeconds: null },
      { throttleEvery: 4, retryAfterSeconds: 1 },
      { serverErrorEvery: 4, serverErrorBurst: 2 },
      { resetEvery: 3 },
      { truncateEvery: 3 },
      { hangEvery: 5 },
    ];
    for (const fault of faults) {
      sandbox.setFaults(fault);
      const c = client(sandbox, { timeoutMs: 400 });
      const records = await pull(c, { project: 'demo', resource: 'form', params: ALL_FORMS, pageSize: 200 });
      expectExactly(sandbox, 'form', records);
      const stats = c.stats;
      expect(stats.retries + stats.throttled, JSON.stringify(fault)).toBeGreaterThan(0);
    }
    sandbox.setFaults({});
  });

  it('recovers from faults while pulling windows in parallel', async () => {
    sandbox.setFaults({ throttleEvery: 5, serverErrorEvery: 7 });
    const records = await pull(client(sandbox, { concurrency: 3 }), {
      project: 'demo',
      resource: 'case',
      pageSize: 60,
    });
    sandbox.setFaults({});
    expectExactly(sandbox, 'case', records);
  });

  it('lists the project spaces of the key', async () => {
    expect((await client(sandbox).userDomains()).map((d) => d.domainName)).toEqual(['demo']);
  });
});

describe('sandbox auth errors', () => {
  let sandbox: RunningSandbox;
  beforeAll(async () => {
    sandbox = await startSandbox({
      projects: [PROJECT, { name: 'other', forms: 5, cases: 5 }],
      credentials: [
        { username: DEFAULT_USERNAME, apiKey: DEFAULT_API_KEY },
        { username: 'scoped@example.org', apiKey: 'scoped-key-123456', domain: 'other' },
        { username: 'old@example.org', apiKey: 'expired-key-123456', expired: true },
        { username: 'outsider@example.org', apiKey: 'outsider-key-123456', projects: ['other'] },
      ],
    });
  });
  afterAll(async () => {
    await sandbox.close();
  });

  const attempt = async (username: string, apiKey: string) => {
    const c = client(sandbox, { username, apiKey });
    return pull(c, { project: 'demo', resource: 'form' }).catch((e: unknown) => e);
  };

  it('fails with CommCareAuthError for a wrong, an expired and a project-scoped key', async () => {
    for (const [username, key] of [
      [DEFAULT_USERNAME, 'wrong-key-123456'],
      ['old@example.org', 'expired-key-123456'],
      ['scoped@example.org', 'scoped-key-123456'],
    ] as const) {
      const error = await attempt(username, key);
      expect(error).toBeInstanceOf(CommCareAuthError);
      expect((error as CommCareAuthError).status).toBe(401);
      expect((error as Error).message).toContain(username);
      expect((error as Error).message).not.toContain(key);
    }
  });

  it('fails with a 403 CommCareAuthError for a user outside the project', async () => {
    const error = await attempt('outsider@example.org', 'outsider-key-123456');
    expect(error).toBeInstanceOf(CommCareAuthError);
    expect((error as CommCareAuthError).status).toBe(403);
    expect((error as Error).message).toMatch(/not a member/);
  });
});

describe('records re-indexed during a pull', () => {
  let sandbox: RunningSandbox;
  beforeAll(async () => {
    sandbox = await startSandbox({ projects: [PROJECT], liveReindexAfterRequests: 3 });
  });
  afterAll(async () => {
    await sandbox.close();
  });

  it('loses none and ends with the latest version of each', async () => {
    for (const resource of ['form', 'case', 'case-v2'] as const) {
      const params = resource === 'form' ? ALL_FORMS : {};
      const records = await pull(client(sandbox), { project: 'demo', resource, params, pageSize: 100 });
      const latest = new Map<string, JsonObject>();
      for (const record of records) latest.set(idOf(resource, record), record);
      const truth = new Map(sandbox.dataset.finalState('demo', resource));
      expect([...latest.keys()].sort()).toEqual([...truth.keys()].sort());
      for (const [id, record] of truth) expect(latest.get(id)?.indexed_on, id).toEqual(record.indexed_on);
    }
  });
});

describe('secrets', () => {
  it('never writes the key to a log line, an error or the console during a faulty run', async () => {
    const key = 'leak-canary-key-8d7f6e5c4b3a';
    const sandbox = await startSandbox({
      projects: [PROJECT],
      credentials: [{ username: DEFAULT_USERNAME, apiKey: key }],
      faults: { throttleEvery: 4, serverErrorEvery: 5, resetEvery: 7, truncateEvery: 9, hangEvery: 11 },
    });
    const captured: string[] = [];
    const original = { log: console.log, warn: console.warn, error: console.error, info: console.info };
    const stdoutWrite = process.stdout.write.bind(process.stdout);
    const stderrWrite = process.stderr.write.bind(process.stderr);
    const capture = (...args: unknown[]) => {
      captured.push(args.map(String).join(' '));
    };
    console.log = console.warn = console.error = console.info = capture;
    const swallow = (chunk: unknown): boolean => {
      captured.push(String(chunk));
      return true;
    };
    process.stdout.write = swallow as typeof process.stdout.write;
    process.stderr.write = swallow as typeof process.stderr.write;
    const events: CommCareLogEvent[] = [];
    const errors: unknown[] = [];
    try {
      const c = client(sandbox, { apiKey: key, timeoutMs: 400, logger: (e) => events.push(e) });
      await pull(c, { project: 'demo', resource: 'form', pageSize: 300 });
      await pull(c, { project: 'demo', resource: 'case', pageSize: 100 }).catch((e: unknown) =>
        errors.push(e),
      );
      const wrong = client(sandbox, { apiKey: `${key}-x`, logger: (e) => events.push(e) });
      await pull(wrong, { project: 'demo', resource: 'form' }).catch((e: unknown) => errors.push(e));
      const missing = client(sandbox, { apiKey: key, logger: (e) => events.push(e) });
      await pull(missing, { project: 'nope', resource: 'form' }).catch((e: unknown) => errors.push(e));
    } finally {
      Object.assign(console, original);
      process.stdout.write = stdoutWrite;
      process.stderr.write = stderrWrite;
      await sandbox.close();
    }
    expect(events.length).toBeGreaterThan(0);
    expect(errors.length).toBeGreaterThanOrEqual(2);
    const dump = (e: unknown): string => {
      if (!(e instanceof Error)) return JSON.stringify(e);
      return `${e.name} ${e.message} ${e.stack} ${JSON.stringify(e)} ${dump(e.cause)}`;
    };
    const everything = [
      JSON.stringify(events),
      ...errors.map(dump),
      ...captured,
      JSON.stringify(sandbox.requestLog.map((r) => ({ path: r.path, query: r.query }))),
    ].join('\n');
    expect(everything).not.toContain(key);
    expect(everything).not.toContain(encodeURIComponent(key));
  });
});

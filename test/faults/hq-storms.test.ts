import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { CommCareClient, CommCareUnavailableError } from '../../functions/commcare';
import { type RunningSandbox, type SandboxFaults, startSandbox } from '../../functions/sandbox';
import { CHAOS_KEY, CHAOS_USER, createDatabase, dropDatabase, HOUSEHOLD_QUERY } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { diffToCheckpoint, diffWhole, exportToPostgres } from './support';

const PROJECT = 'storm';
let sandbox: RunningSandbox;
const databases: string[] = [];

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 5,
    projects: [{ name: PROJECT, forms: 300, cases: 10 }],
    credentials: [{ username: CHAOS_USER, apiKey: CHAOS_KEY }],
  });
});

afterAll(async () => {
  await sandbox.close();
  for (const name of databases) await dropDatabase(inject('pgUrl'), name).catch(() => undefined);
});

async function freshDatabase(label: string): Promise<string> {
  const name = `storm_${label}_${process.pid}`;
  databases.push(name);
  return await createDatabase(inject('pgUrl'), name);
}

async function withFaults<T>(faults: SandboxFaults, body: () => Promise<T>): Promise<T> {
  sandbox.setFaults(faults);
  try {
    return await body();
  } finally {
    sandbox.setFaults({});
  }
}

describe('an export to PostgreSQL under a storm of HQ faults', () => {
  const storms: [string, SandboxFaults, 'retries' | 'throttled'][] = [
    [
      '429 on every other request with Retry-After: 0',
      { throttleEvery: 2, retryAfterSeconds: 0 },
      'throttled',
    ],
    [
      '429 on every other request without Retry-After',
      { throttleEvery: 2, retryAfterSeconds: null },
      'throttled',
    ],
    ['bursts of three 5xx answers', { serverErrorEvery: 4, serverErrorBurst: 3 }, 'retries'],
    ['connections reset in the middle of the body', { resetEvery: 3 }, 'retries'],
    ['truncated JSON bodies', { truncateEvery: 3 }, 'retries'],
  ];
  for (const [index, [label, faults, counter]] of storms.entries()) {
    it(`completes exactly with ${label}`, async () => {
      const dbUrl = await freshDatabase(`storm${index}`);
      const result = await withFaults(faults, () => exportToPostgres({ sandbox, project: PROJECT, dbUrl }));
      expect(result.error).toBeUndefined();
      expect(result.summary?.done).toBe(true);
      expect(result.client.stats[counter]).toBeGreaterThan(0);
      expect(await diffWhole(sandbox, PROJECT, dbUrl)).toEqual([]);
    });
  }

  it('waits at least a second on a 429 without Retry-After, and the 0 s HQ asks for when it sends one', async () => {
    const waits = async (retryAfterSeconds: number | null) => {
      const sleeps: number[] = [];
      const client = new CommCareClient({
        baseUrl: sandbox.url,
        username: CHAOS_USER,
        apiKey: CHAOS_KEY,
        sleep: async (ms) => {
          sleeps.push(ms);
        },
      });
      await withFaults({ throttleEvery: 2, retryAfterSeconds }, async () => {
        for await (const _page of client.pages({ project: PROJECT, resource: 'form', pageSize: 50 })) {
          // drain
        }
      });
      return sleeps;
    };
    const without = await waits(null);
    expect(without.length).toBeGreaterThan(0);
    expect(Math.min(...without)).toBeGreaterThanOrEqual(1000);
    const withHeader = await waits(0);
    expect(withHeader.length).toBeGreaterThan(0);
    expect(Math.max(...withHeader)).toBe(0);
  });

  it('retries a page that hangs past the client timeout and completes exactly', async () => {
    const dbUrl = await freshDatabase('hang');
    const result = await withFaults({ hangEvery: 4 }, () =>
      exportToPostgres({ sandbox, project: PROJECT, dbUrl, client: { timeoutMs: 500 } }),
    );
    expect(result.error).toBeUndefined();
    expect(result.client.stats.retries).toBeGreaterThan(0);
    expect(await diffWhole(sandbox, PROJECT, dbUrl)).toEqual([]);
  });

  it('fails clearly when 5xx outlast the retries, leaves only what its checkpoint covers, and the next run completes exactly', async () => {
    const dbUrl = await freshDatabase('outage');
    // Requests 9..14 fail: more than two retries, after some pages were committed.
    const failed = await withFaults({ serverErrorEvery: 9, serverErrorBurst: 6 }, () =>
      exportToPostgres({ sandbox, project: PROJECT, dbUrl, client: { maxRetries: 2 } }),
    );
    expect(failed.error).toBeInstanceOf(CommCareUnavailableError);
    expect(failed.error?.message).toMatch(/storm/);
    expect(failed.error?.message).toMatch(/form/);
    expect(failed.error?.message).not.toContain(CHAOS_KEY);
    expect(await diffToCheckpoint(sandbox, PROJECT, dbUrl)).toEqual([]);
    const again = await exportToPostgres({ sandbox, project: PROJECT, dbUrl });
    expect(again.error).toBeUndefined();
    expect(await diffWhole(sandbox, PROJECT, dbUrl)).toEqual([]);
  });

  it('completes exactly through the command line with every retryable fault on at once', async () => {
    const dbUrl = await freshDatabase('cli');
    const io = captureIO({ CCEXPORT_API_KEY: CHAOS_KEY });
    const code = await withFaults(
      { throttleEvery: 2, retryAfterSeconds: 0, serverErrorEvery: 11, truncateEvery: 5, resetEvery: 7 },
      () =>
        main(
          [
            '--project',
            PROJECT,
            '--commcare-hq',
            sandbox.url,
            '--username',
            CHAOS_USER,
            '--query',
            HOUSEHOLD_QUERY,
            '--output-format',
            'sql',
            '--output',
            dbUrl,
            '--batch-size',
            '10',
          ],
          io,
        ),
    );
    expect(io.err()).not.toContain('"level":"error"');
    expect(code).toBe(0);
    expect(io.out()).toMatch(/Export finished: .* [1-9]\d* retries, [1-9]\d* throttled/);
    expect(await diffWhole(sandbox, PROJECT, dbUrl)).toEqual([]);
  });
});

describe('records re-indexed while the export is pulling', () => {
  it('are either in the first run or picked up by the next, and the result is exact', async () => {
    const live = await startSandbox({
      seed: 6,
      projects: [{ name: PROJECT, forms: 300, cases: 10 }],
      credentials: [{ username: CHAOS_USER, apiKey: CHAOS_KEY }],
      liveReindexAfterRequests: 6,
    });
    try {
      const name = `storm_live_${process.pid}`;
      databases.push(name);
      const dbUrl = await createDatabase(inject('pgUrl'), name);
      const first = await exportToPostgres({ sandbox: live, project: PROJECT, dbUrl });
      expect(first.error).toBeUndefined();
      expect(await diffToCheckpoint(live, PROJECT, dbUrl)).toEqual([]);
      const second = await exportToPostgres({ sandbox: live, project: PROJECT, dbUrl });
      expect(second.error).toBeUndefined();
      expect(await diffWhole(live, PROJECT, dbUrl)).toEqual([]);
    } finally {
      await live.close();
    }
  });
});

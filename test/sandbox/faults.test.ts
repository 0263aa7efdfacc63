import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { DEMO_AUTH } from './support';

let sandbox: RunningSandbox;

beforeAll(async () => {
  sandbox = await startSandbox({ projects: [{ name: 'demo', forms: 200, cases: 50 }] });
});
afterAll(async () => {
  await sandbox.close();
});
beforeEach(() => {
  sandbox.setFaults({});
});

async function statuses(path: string, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let k = 0; k < n; k++) {
    const response = await fetch(`${sandbox.url}${path}`, { headers: DEMO_AUTH });
    await response.arrayBuffer();
    out.push(response.status);
  }
  return out;
}

describe('fault injection', () => {
  it('answers every nth data request with 429 and no Retry-After on tastypie resources', async () => {
    sandbox.setFaults({ throttleEvery: 3 });
    expect(await statuses('/a/demo/api/form/v1/', 6)).toEqual([200, 200, 429, 200, 200, 429]);
    const response = await fetch(`${sandbox.url}/a/demo/api/form/v1/`, { headers: DEMO_AUTH });
    await response.arrayBuffer();
    sandbox.setFaults({ throttleEvery: 1 });
    const throttled = await fetch(`${sandbox.url}/a/demo/api/form/v1/`, { headers: DEMO_AUTH });
    expect(throttled.status).toBe(429);
    expect(throttled.headers.get('retry-after')).toBeNull();
    expect(await throttled.text()).toBe('');
  });

  it('sends Retry-After on case v2 throttling, and everywhere when retryAfterSeconds is set', async () => {
    sandbox.setFaults({ throttleEvery: 1 });
    const v2 = await fetch(`${sandbox.url}/a/demo/api/case/v2/`, { headers: DEMO_AUTH });
    expect(v2.status).toBe(429);
    expect(v2.headers.get('retry-after')).toBe('1');
    sandbox.setFaults({ throttleEvery: 1, retryAfterSeconds: 7 });
    const form = await fetch(`${sandbox.url}/a/demo/api/form/v1/`, { headers: DEMO_AUTH });
    expect(form.headers.get('retry-after')).toBe('7');
    sandbox.setFaults({ throttleEvery: 1, retryAfterSeconds: null });
    const none = await fetch(`${sandbox.url}/a/demo/api/case/v2/`, { headers: DEMO_AUTH });
    expect(none.headers.get('retry-after')).toBeNull();
  });

  it('answers bursts of consecutive 5xx', async () => {
    sandbox.setFaults({ serverErrorEvery: 4, serverErrorBurst: 2 });
    const got = await statuses('/a/demo/api/form/v1/', 10);
    expect(got.map((s) => s >= 500)).toEqual([
      false,
      false,
      false,
      true,
      true,
      false,
      false,
      true,
      true,
      false,
    ]);
  });

  it('destroys the connection mid-body', async () => {
    sandbox.setFaults({ resetEvery: 1 });
    const response = await fetch(`${sandbox.url}/a/demo/api/form/v1/?limit=100`, { headers: DEMO_AUTH });
    expect(response.status).toBe(200);
    await expect(response.text()).rejects.toThrow();
  });

  it('sends half of the JSON body and ends the response cleanly', async () => {
    sandbox.setFaults({ truncateEvery: 1 });
    const response = await fetch(`${sandbox.url}/a/demo/api/form/v1/?limit=100`, { headers: DEMO_AUTH });
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text.startsWith('{"meta":')).toBe(true);
    expect(() => JSON.parse(text)).toThrow();
  });

  it('never answers a hanging request, and close() still terminates', async () => {
    const local = await startSandbox({
      projects: [{ name: 'demo', forms: 10, cases: 5 }],
      faults: { hangEvery: 1 },
    });
    const aborted = fetch(`${local.url}/a/demo/api/form/v1/`, {
      headers: DEMO_AUTH,
      signal: AbortSignal.timeout(300),
    });
    await expect(aborted).rejects.toThrow();
    const pending = fetch(`${local.url}/a/demo/api/form/v1/`, { headers: DEMO_AUTH }).catch(
      (e: unknown) => e,
    );
    await new Promise((r) => setTimeout(r, 50));
    await local.close();
    expect(await pending).toBeInstanceOf(Error);
    expect(local.requestLog.every((e) => e.status === 0)).toBe(true);
  });

  it('delays data requests by latencyMs', async () => {
    sandbox.setFaults({ latencyMs: 150 });
    const started = Date.now();
    await statuses('/a/demo/api/form/v1/', 1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  });

  it('never faults user_domains', async () => {
    sandbox.setFaults({ throttleEvery: 1, serverErrorEvery: 1, hangEvery: 1 });
    expect(await statuses('/api/user_domains/v1/', 3)).toEqual([200, 200, 200]);
  });
});

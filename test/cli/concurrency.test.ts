import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { type CountingProxy, startCountingProxy } from '../support/counting-proxy';
import { captureIO } from './capture';

const KEY = 'concurrency-test-key-4b8d2f';
const USER = 'analyst@example.org';

let sandbox: RunningSandbox;
let proxy: CountingProxy;
let work: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 11,
    projects: [{ name: 'clinic', forms: 600, cases: 300 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  // A little latency at HQ, so that requests sent together are in flight together.
  proxy = await startCountingProxy(sandbox.url, 15);
  work = mkdtempSync(join(tmpdir(), 'ccexport-concurrency-'));
});

afterAll(async () => {
  await proxy.close();
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

/** Raw forms and cases of the clinic project through the proxy, 50 a page, with the given extra flags. */
async function exportRaw(name: string, ...extra: string[]) {
  return await exportRawPaged(name, ['--batch-size', '50'], ...extra);
}

async function exportRawPaged(name: string, paging: readonly string[], ...extra: string[]) {
  const output = join(work, name);
  const io = captureIO({ CCEXPORT_API_KEY: KEY });
  proxy.reset();
  const code = await main(
    [
      ...['--project', 'clinic', '--commcare-hq', proxy.url, '--username', USER],
      ...['--resource', 'form', '--resource', 'case', '--output-format', 'jsonl', ...paging],
      ...['--output', output, ...extra],
    ],
    io,
  );
  const lines = (file: string) => readFileSync(join(output, file), 'utf8').trim().split('\n');
  return {
    code,
    io,
    forms: lines('form.jsonl'),
    cases: lines('case.jsonl'),
    requests: [...proxy.requests()],
  };
}

const isForm = (path: string) => path.includes('/api/form/');
const isCase = (path: string) => path.includes('/api/case/');

describe('data sources pulled together within one request budget per project', () => {
  it('pulls every source at once, with never more than --max-concurrency requests of the project in flight at HQ', async () => {
    const sequential = await exportRaw('sequential', '--max-concurrency', '1', '--progress', 'none');
    const parallel = await exportRaw('parallel', '--max-concurrency', '3', '--progress', 'none');

    expect(parallel.code).toBe(0);
    expect(proxy.maxInFlight()).toBeLessThanOrEqual(3);
    expect(proxy.maxInFlight()).toBeGreaterThan(1);
    // The case pull starts before the form pull ends.
    const firstCase = parallel.requests.findIndex(isCase);
    const lastForm = parallel.requests.findLastIndex(isForm);
    expect(firstCase).toBeLessThan(lastForm);
    // The same records in the same order as the sequential export.
    expect(parallel.forms).toEqual(sequential.forms);
    expect(parallel.cases).toEqual(sequential.cases);
  });

  it('sends exactly the sequential requests with --max-concurrency 1: one source after another, DET keyset pages only', async () => {
    const { code, requests } = await exportRaw('det-order', '--max-concurrency', '1', '--progress', 'none');

    expect(code).toBe(0);
    expect(proxy.maxInFlight()).toBe(1);
    const firstCase = requests.findIndex(isCase);
    expect(requests.slice(0, firstCase).every(isForm)).toBe(true);
    expect(requests.slice(firstCase).every(isCase)).toBe(true);
    for (const path of requests) {
      const query = new URL(path, 'http://hq').searchParams;
      expect(query.get('order_by')).toBe('indexed_on');
      expect(query.get('limit')).toBe('50');
      expect(query.has('indexed_on_end')).toBe(false);
    }
    // Each request starts where the previous page of its source ended.
    const starts = requests
      .filter(isForm)
      .map((p) => new URL(p, 'http://hq').searchParams.get('indexed_on_start'));
    expect(starts[0]).toBeNull();
    expect(starts.slice(1).every((s, i) => s !== null && (i === 0 || s >= starts[i]!))).toBe(true);
  });

  it('reports the whole pull as its total in a windowed pull, so the ETA does not read 0s after the first page', async () => {
    const { code, io } = await exportRaw('eta', '--max-concurrency', '4', '--progress', 'json');

    expect(code).toBe(0);
    const pages = io
      .err()
      .trim()
      .split('\n')
      .map(
        (line) =>
          JSON.parse(line) as { event?: string; dataSource?: string; totalCount?: number; records?: number },
      )
      .filter((e) => e.event === 'page' && e.dataSource === 'form');
    expect(pages.length).toBeGreaterThan(3);
    const total = pages[0]!.totalCount!;
    expect(pages.every((p) => p.totalCount === total)).toBe(true);
    // The last page's records reach the total the first request counted.
    expect(pages.at(-1)!.records).toBeGreaterThanOrEqual(total);
  });

  it('asks each resource for its largest page when --batch-size is not given (1000 forms, 5000 cases), for the same records', async () => {
    const paged = await exportRaw('paged-50', '--max-concurrency', '1', '--progress', 'none');
    const largest = await exportRawPaged('largest-page', [], '--max-concurrency', '1', '--progress', 'none');

    expect(largest.code).toBe(0);
    const limits = (keep: (path: string) => boolean) =>
      new Set(largest.requests.filter(keep).map((p) => new URL(p, 'http://hq').searchParams.get('limit')));
    expect(limits(isForm)).toEqual(new Set(['1000']));
    expect(limits(isCase)).toEqual(new Set(['5000']));
    // 600 forms and 300 cases: one page each, where 50 a page took 18.
    expect(largest.requests.length).toBeLessThan(paged.requests.length);
    expect(largest.forms).toEqual(paged.forms);
    expect(largest.cases).toEqual(paged.cases);
  });
});

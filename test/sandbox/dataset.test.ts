import { execFileSync, spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import { createDataset, runSandboxCommand, servePageDirect, startSandbox } from '../../functions/sandbox';
import { getJson, meta, naive, objects } from './support';

/** commcare-export's DatePaginator: inclusive indexed_on_start, drop the ids seen on the boundary. */
async function pullByIndexedOn(
  base: string,
  limit: number,
  extra = '&include_archived',
): Promise<{ rows: JsonObject[]; requests: number }> {
  const rows: JsonObject[] = [];
  let start: string | null = null;
  let boundary = new Set<string>();
  let requests = 0;
  for (;;) {
    const query = `order_by=indexed_on${extra}&limit=${limit}${start ? `&indexed_on_start=${start}` : ''}`;
    const { status, body } = await getJson(`${base}?${query}`);
    requests++;
    expect(status).toBe(200);
    const page = objects(body);
    const fresh = page.filter((r) => !boundary.has(String(r.id)));
    rows.push(...fresh);
    if (page.length < limit) break;
    const last = String(page[page.length - 1]!.indexed_on);
    const onLast = page.filter((r) => r.indexed_on === last).map((r) => String(r.id));
    boundary = naive(last) === start ? new Set([...boundary, ...onLast]) : new Set(onLast);
    start = naive(last);
  }
  return { rows, requests };
}

function latestById(rows: JsonObject[]): Map<string, JsonObject> {
  const out = new Map<string, JsonObject>();
  for (const row of rows) out.set(String(row.id), row);
  return out;
}

describe('dataset ground truth', () => {
  it('is deterministic for a seed and differs between seeds', () => {
    const projects = [{ name: 'demo', forms: 50, cases: 20 }];
    const a = [...createDataset(7, projects).timeline('demo', 'form')];
    const b = [...createDataset(7, projects).timeline('demo', 'form')];
    const c = [...createDataset(8, projects).timeline('demo', 'form')];
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
    expect(JSON.stringify(a)).not.toBe(JSON.stringify(c));
  });

  it('has re-indexed records that come back later in the history with changed fields', () => {
    const dataset = createDataset(1, [{ name: 'demo', forms: 400, cases: 10, reindexedShare: 0.1 }]);
    const timeline = [...dataset.history('demo', 'form')];
    const ids = timeline.map((f) => String(f.id));
    expect(new Set(ids).size).toBe(400);
    expect(timeline.length).toBeGreaterThan(400);
    const repeated = ids.find((id, k) => ids.indexOf(id) !== k)!;
    const versions = timeline.filter((f) => f.id === repeated);
    expect((versions[1]!.indexed_on as string) > (versions[0]!.indexed_on as string)).toBe(true);
    expect(versions[1]!.edited_on).not.toBeNull();
    const final = new Map(dataset.finalState('demo', 'form'));
    expect(final.size).toBe(400);
    expect(final.get(repeated)).toEqual(versions[versions.length - 1]);
  });

  it('equals what paging by indexed_on yields after dedupe by id keeping the latest', async () => {
    const sandbox = await startSandbox({
      projects: [{ name: 'demo', forms: 700, cases: 300, tieRun: 4, reindexedShare: 0.1 }],
    });
    try {
      const forms = await pullByIndexedOn(`${sandbox.url}/a/demo/api/form/v1/`, 50);
      const truth = new Map(sandbox.dataset.finalState('demo', 'form'));
      expect(latestById(forms.rows)).toEqual(truth);
      const cases = await pullByIndexedOn(`${sandbox.url}/a/demo/api/case/v1/`, 64, '');
      expect(latestById(cases.rows)).toEqual(new Map(sandbox.dataset.finalState('demo', 'case')));
    } finally {
      await sandbox.close();
    }
  });

  it('reveals records updated during a pull only after the configured number of data requests', async () => {
    const sandbox = await startSandbox({
      projects: [{ name: 'demo', forms: 600, cases: 10 }],
      liveReindexAfterRequests: 3,
    });
    try {
      const before = await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=1&include_archived`);
      const { rows, requests } = await pullByIndexedOn(`${sandbox.url}/a/demo/api/form/v1/`, 100);
      expect(requests).toBeGreaterThan(3);
      const after = await getJson(`${sandbox.url}/a/demo/api/form/v1/?limit=1&include_archived`);
      // One document per id: a record updated during the pull moves to the end, the count stays.
      expect(meta(after.body).total_count).toBe(meta(before.body).total_count);
      const truth = new Map(sandbox.dataset.finalState('demo', 'form'));
      expect(latestById(rows)).toEqual(truth);
      expect(
        [...truth.values()].some((f) => String((f.form as JsonObject).notes ?? '').startsWith('edited')),
      ).toBe(true);
    } finally {
      await sandbox.close();
    }
  });
});

describe('lazy generation', () => {
  it('starts a 1,000,000-form project at once and serves a page near the end by indexed_on_start', async () => {
    const sandbox = await startSandbox({ projects: [{ name: 'big', forms: 1_000_000, cases: 1_000_000 }] });
    try {
      const truth = createDataset(1, [{ name: 'big', forms: 1_000_000, cases: 1_000_000 }]);
      const t = truth.model('big').forms;
      const target = t.event(t.baseLength - 500);
      const record = truth.model('big').form(target.record, t.baseLength - 500, target.kind);
      const start = naive(record.indexed_on);
      const { status, body } = await getJson(
        `${sandbox.url}/a/big/api/form/v1/?order_by=indexed_on&include_archived&limit=1000&indexed_on_start=${start}`,
      );
      expect(status).toBe(200);
      const page = objects(body);
      expect(page.length).toBeGreaterThanOrEqual(500);
      expect(page.length).toBeLessThanOrEqual(503);
      expect(page.some((f) => f.id === record.id)).toBe(true);
      const cases = await getJson(
        `${sandbox.url}/a/big/api/case/v2/?limit=5&indexed_on.gte=2025-06-01T00:00:00Z`,
      );
      expect(cases.status).toBe(200);
    } finally {
      await sandbox.close();
    }
  });

  it('serves a page without HTTP through servePageDirect', () => {
    const dataset = createDataset(1, [{ name: 'demo', forms: 100, cases: 10 }]);
    const body = JSON.parse(
      servePageDirect(dataset, 'demo', 'form', new URLSearchParams('limit=7&order_by=indexed_on')),
    );
    expect(body.objects).toHaveLength(7);
    expect(body.meta.next).toContain('order_by=indexed_on&limit=7&offset=7');
  });
});

describe('sandbox command', () => {
  it('prints the listening line without the key and serves until stopped', async () => {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const controller = new AbortController();
    let printed = '';
    stdout.on('data', (chunk: Buffer) => {
      printed += chunk.toString();
    });
    const done = runSandboxCommand(['--port', '0', '--forms', '40', '--cases', '10', '--project', 'p1'], {
      stdout,
      stderr,
      signal: controller.signal,
    });
    for (let k = 0; k < 100 && !printed.includes('\n'); k++) await new Promise((r) => setTimeout(r, 20));
    expect(printed).toMatch(
      /^CommCare sandbox listening on http:\/\/127\.0\.0\.1:\d+ \(projects: p1; user demo@example\.org/,
    );
    expect(printed).not.toContain('sandbox-demo-key');
    const url = /(http:\/\/[^ ]+)/.exec(printed)![1]!;
    const { body } = await getJson(`${url}/a/p1/api/form/v1/?include_archived`);
    expect(meta(body).total_count).toBeGreaterThanOrEqual(40);
    controller.abort();
    expect(await done).toBe(0);
  });

  it('serves one port from several worker processes with --workers, and stops them all on SIGTERM', {
    timeout: 120_000,
  }, async () => {
    const child = spawn(
      process.execPath,
      ['bin/ccexport.js', 'sandbox', '--port', '0', '--forms', '40', '--cases', '10', '--workers', '2'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    let printed = '';
    child.stdout.on('data', (chunk: Buffer) => {
      printed += chunk.toString();
    });
    // Each worker compiles the sources at start; on a busy machine that takes a while.
    for (let k = 0; k < 2500 && !printed.includes('\n'); k++) await new Promise((r) => setTimeout(r, 20));
    expect(printed).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+ .* with 2 worker processes/);
    const workers = execFileSync('pgrep', ['-P', String(child.pid), '-f', 'ccexport.js sandbox'])
      .toString()
      .trim()
      .split('\n');
    expect(workers).toHaveLength(2);
    const url = /(http:\/\/[^ ]+)/.exec(printed)![1]!;
    // Several connections, so both workers answer; every one serves the same data.
    const totals = await Promise.all(
      Array.from({ length: 6 }, async () =>
        meta((await getJson(`${url}/a/demo/api/form/v1/?include_archived`)).body),
      ),
    );
    expect(new Set(totals.map((m) => m.total_count)).size).toBe(1);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    for (const pid of workers) expect(() => process.kill(Number(pid), 0)).toThrow();
  });

  it('fails with exit code 2 and a message naming an unknown option', async () => {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let err = '';
    stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    expect(await runSandboxCommand(['--colour', 'red'], { stdout, stderr })).toBe(2);
    expect(err).toContain("Unknown option '--colour'");
  });
});

describe('one document per id', () => {
  it("lists a re-indexed record only at its latest indexed_on, as HQ's index does", async () => {
    const sandbox = await startSandbox({
      projects: [{ name: 'demo', forms: 400, cases: 100, reindexedShare: 0.1 }],
    });
    try {
      const history = [...sandbox.dataset.history('demo', 'form')];
      expect(history.length).toBeGreaterThan(400);
      const { body } = await getJson(
        `${sandbox.url}/a/demo/api/form/v1/?limit=1000&order_by=indexed_on&include_archived`,
      );
      const listed = objects(body);
      expect(meta(body).total_count).toBe(400);
      expect(new Set(listed.map((f) => f.id)).size).toBe(400);
      const latest = new Map(sandbox.dataset.finalState('demo', 'form'));
      for (const form of listed) expect(form.indexed_on).toBe(latest.get(String(form.id))!.indexed_on);
      const cases = await getJson(`${sandbox.url}/a/demo/api/case/v2/?limit=1000`);
      const ids = (cases.body.cases as JsonObject[]).map((c) => c.case_id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids).toHaveLength(100);
    } finally {
      await sandbox.close();
    }
  });
});

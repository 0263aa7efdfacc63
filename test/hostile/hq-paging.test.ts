/**
 * A hostile or coarse HQ paging: window edges compared at millisecond or second precision, a server
 * that ignores `indexed_on_start`, `next` links that bounce. Each probe runs the CLI as a user types it
 * against the sandbox with the matching fault flag.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { formatNaiveUtc, parseTimestamp } from '../../functions/commcare/dates';
import {
  DEFAULT_API_KEY,
  DEFAULT_USERNAME,
  type RunningSandbox,
  type SandboxFaults,
  startSandbox,
} from '../../functions/sandbox/server';
import { captureIO } from '../cli/capture';
import { writeFormsQuery } from '../support/query-workbook';
import { filesUnder } from './support';

let work: string;
let sandbox: RunningSandbox;
let query: string;
let runs = 0;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'ccexport-hostile-paging-'));
  // No re-indexing: every form id appears once in HQ, so any id written twice is a duplicate.
  sandbox = await startSandbox({
    projects: [{ name: 'demo', forms: 3000, cases: 10, mobileUsers: 30, reindexedShare: 0 }],
  });
  query = await writeFormsQuery(join(work, 'forms.xlsx'), [
    ['id', 'id'],
    ['indexed_on', 'indexed_on'],
  ]);
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

async function ccexport(extra: string[]): Promise<{ code: number; err: string; output: string }> {
  runs += 1;
  const output = join(work, `out-${runs}`);
  const io = captureIO({ CCEXPORT_API_KEY: DEFAULT_API_KEY });
  const code = await main(
    [
      '--project',
      'demo',
      '--commcare-hq',
      sandbox.url,
      '--username',
      DEFAULT_USERNAME,
      '--output',
      output,
      '--progress',
      'none',
      ...extra,
    ],
    io,
  );
  return { code, err: io.err(), output };
}

/** The ids in the csv files a run wrote, in order. */
function csvIds(output: string): string[] {
  return filesUnder(output)
    .filter((f) => f.endsWith('.csv'))
    .flatMap((f) => readFileSync(f, 'utf8').trim().split(/\r?\n/).slice(1))
    .map((line) => line.split(',')[0]!);
}

describe('parallel windows against an HQ comparing indexed_on coarsely', () => {
  for (const precision of ['ms', 's'] as const) {
    it(`writes each form once when the server compares at ${precision === 'ms' ? 'millisecond' : 'second'} precision and a window cut falls just after a tie group`, async () => {
      // Prepare: a --since/--until range whose parallel pull has one window cut exactly 1 µs after the
      // indexed_on of a tie group, so that the group shares its millisecond (and second) with the cut.
      // The pull reads the first page (batch records from --since), then cuts the rest of the range
      // [L, until] (L: the first page's last indexed_on) into ceil(rest / (0.9 × batch)) windows.
      sandbox.setFaults({ dateFilterPrecision: precision });
      const keys = [...sandbox.dataset.timeline('demo', 'form')].map(
        (r) => parseTimestamp(String(r.indexed_on))!,
      );
      const batch = 10;
      const from = keys.findIndex((k, i) => i > 1000 && keys[i - 1] !== k);
      const last = keys[from + batch - 1]!;
      let plan: { since: string; until: string } | null = null;
      for (let tie = from + batch + 3; tie < from + 40 && plan === null; tie += 1) {
        if (keys[tie + 1] === keys[tie] || keys[tie]! % 1000 >= 900) continue;
        const cut = keys[tie]! + 1;
        const until = 2 * cut - last;
        const total = keys.filter((k) => k >= keys[from]! && k <= until).length;
        if (Math.ceil((total - batch) / (0.9 * batch)) === 2)
          plan = { since: formatNaiveUtc(keys[from]!), until: formatNaiveUtc(until) };
      }
      expect(plan).not.toBeNull();
      const { since, until } = plan!;
      const common = ['--query', query, '--output-format', 'csv', '--since', since, '--until', until];
      const parallelArgs = [...common, '--batch-size', String(batch), '--max-concurrency', '4'];
      const sequentialArgs = [...common, '--batch-size', String(batch), '--max-concurrency', '1'];

      // Act
      const parallel = await ccexport(parallelArgs);
      const sequential = await ccexport(sequentialArgs);

      // Assert
      expect(parallel.code, parallel.err).toBe(0);
      expect(sequential.code, sequential.err).toBe(0);
      const ids = csvIds(parallel.output);
      expect(ids.length).toBeGreaterThan(batch);
      expect(ids.length - new Set(ids).size).toBe(0);
      expect(ids).toEqual(csvIds(sequential.output));
    });
  }
});

describe('paging that never ends', () => {
  const cases: { label: string; faults: SandboxFaults; args: string[]; said: RegExp }[] = [
    {
      label: 'an HQ that ignores indexed_on_start (small batch, sequential)',
      faults: { ignoreIndexedOnStart: true },
      args: ['--query', 'QUERY', '--output-format', 'csv', '--batch-size', '10', '--max-concurrency', '1'],
      said: /ignores indexed_on_start/,
    },
    {
      label: 'an HQ that ignores indexed_on_start (parallel windows)',
      faults: { ignoreIndexedOnStart: true },
      args: ['--query', 'QUERY', '--output-format', 'csv', '--batch-size', '100'],
      said: /ignores indexed_on_start/,
    },
    {
      label: 'next links that bounce between two pages of an offset-paged resource',
      faults: { bouncingNext: true },
      args: ['--resource', 'user', '--output-format', 'jsonl', '--batch-size', '10'],
      said: /next link leads back to a page already read/,
    },
    {
      label: 'next links that move on to new offsets while every page is the first (offset ignored)',
      faults: { stuckNext: true },
      args: ['--resource', 'user', '--output-format', 'jsonl', '--batch-size', '10'],
      said: /with exactly the 10 records of the page before .* its next link does not advance/,
    },
  ];
  for (const c of cases) {
    it(`fails with what HQ did, after a few requests, for ${c.label}`, async () => {
      sandbox.setFaults(c.faults);
      const before = sandbox.requestLog.length;
      const r = await ccexport(c.args.map((a) => (a === 'QUERY' ? query : a)));
      expect(r.code).toBe(1);
      expect(r.err).toMatch(c.said);
      expect(r.err).toMatch(/"demo"/);
      expect(sandbox.requestLog.length - before).toBeLessThan(10);
    }, 60_000);
  }
});

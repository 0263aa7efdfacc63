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
import { filesUnder, formSheet, workbook } from './support';

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
  query = join(work, 'forms.xlsx');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(
    query,
    await workbook([
      {
        name: 'Forms',
        rows: formSheet([
          ['id', 'id'],
          ['indexed_on', 'indexed_on'],
        ]),
      },
    ]),
  );
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

async function totalIn(since: string, until: string): Promise<number> {
  const url = `${sandbox.url}/a/demo/api/form/v1/?indexed_on_start=${since}&indexed_on_end=${until}&limit=1`;
  const response = await fetch(url, {
    headers: { Authorization: `ApiKey ${DEFAULT_USERNAME}:${DEFAULT_API_KEY}` },
  });
  const body = (await response.json()) as { meta: { total_count: number } };
  return body.meta.total_count;
}

describe('parallel windows against an HQ comparing indexed_on coarsely', () => {
  for (const precision of ['ms', 's'] as const) {
    it(`writes each form once when the server compares at ${precision === 'ms' ? 'millisecond' : 'second'} precision and a window cut falls just after a tie group`, async () => {
      // Prepare: a --since/--until range cut in two windows exactly 1 µs after the indexed_on of a tie
      // group, so that the group shares its millisecond (and second) with the cut.
      sandbox.setFaults({ dateFilterPrecision: precision });
      const keys = [...sandbox.dataset.timeline('demo', 'form')].map(
        (r) => parseTimestamp(String(r.indexed_on))!,
      );
      const tie = keys.findIndex((k, i) => i > 1000 && k % 1000 < 900 && keys[i + 1] !== k);
      const cut = keys[tie]! + 1;
      const half = keys[tie + 20]! - cut;
      const since = formatNaiveUtc(cut - half);
      const until = formatNaiveUtc(cut + half);
      const total = await totalIn(since, until);
      // Two windows of one page each: total / (batch × 0.9) falls in (1, 2].
      const batch = String(Math.ceil(total / 1.5));
      const common = ['--query', query, '--output-format', 'csv', '--since', since, '--until', until];

      // Act
      const parallel = await ccexport([...common, '--batch-size', batch, '--max-concurrency', '4']);
      const sequential = await ccexport([...common, '--batch-size', batch, '--max-concurrency', '1']);

      // Assert
      expect(parallel.code, parallel.err).toBe(0);
      expect(sequential.code, sequential.err).toBe(0);
      const ids = csvIds(parallel.output);
      expect(ids.length).toBeGreaterThan(20);
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

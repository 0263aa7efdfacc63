/**
 * Client benchmark (issue 2): a 100,000-form sandbox project exported to JSON lines by `ccexport run`,
 * against the sandbox's own serve rate for the same pages (the ceiling this machine allows).
 *
 * The sandbox runs in its own process and the exporter in another, so each gets one of the two cores.
 * The serve rate is the sandbox's page generation and serialisation alone (no HTTP), timed in-process.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDataset, DEFAULT_API_KEY, DEFAULT_PROJECT, DEFAULT_USERNAME, servePageDirect } from '../functions/sandbox';
import { median, round, runNodeScript, startSandboxProcess } from './harness';

export interface ClientBenchResult {
  readonly forms: number;
  readonly concurrency: number;
  readonly runs: number;
  readonly recordsPerSecond: number;
  readonly pagesPerSecond: number;
  readonly peakRssMb: number;
  readonly sandboxServeRecordsPerSecond: number;
  readonly ratioToServeRate: number;
}

interface WorkerResult {
  code: number;
  seconds: number;
  peakRssMb: number;
  records: number;
  pages: number;
}

/** Records per second the sandbox produces for the keyset pages of a full pull, without HTTP. */
export function sandboxServeRate(forms: number, pageSize = 1000): number {
  const dataset = createDataset(1, [{ ...DEFAULT_PROJECT, forms, cases: 10 }]);
  let start: string | undefined;
  let served = 0;
  let elapsed = 0;
  for (;;) {
    const params: Record<string, string> = { order_by: 'indexed_on', limit: String(pageSize) };
    if (start) params.indexed_on_start = start;
    const t0 = performance.now();
    const body = servePageDirect(dataset, DEFAULT_PROJECT.name, 'form', new URLSearchParams(params));
    elapsed += performance.now() - t0;
    const page = JSON.parse(body) as { objects: Array<{ indexed_on: string }>; meta: { next: string | null } };
    served += page.objects.length;
    const last = page.objects.at(-1);
    if (!page.meta.next || !last || page.objects.length < pageSize) break;
    const next = last.indexed_on.replace(/Z$/, '');
    if (next === start) break;
    start = next;
  }
  return served / (elapsed / 1000);
}

export async function benchClient(
  opts: { forms?: number; concurrency?: readonly number[]; runs?: number; latencyMs?: number } = {},
): Promise<ClientBenchResult[]> {
  const forms = opts.forms ?? 100_000;
  const runs = opts.runs ?? 3;
  const serveRate = sandboxServeRate(forms);
  const sandbox = await startSandboxProcess([
    '--seed',
    '1',
    '--forms',
    String(forms),
    '--cases',
    '10',
    ...(opts.latencyMs ? ['--latency-ms', String(opts.latencyMs)] : []),
  ]);
  const results: ClientBenchResult[] = [];
  try {
    for (const concurrency of opts.concurrency ?? [1, 2]) {
      const samples: WorkerResult[] = [];
      for (let run = 0; run < runs; run++) {
        const output = mkdtempSync(join(tmpdir(), 'ccexport-bench-'));
        try {
          samples.push(
            await runNodeScript<WorkerResult>(
              'bench/export-worker.ts',
              [
                '--project',
                DEFAULT_PROJECT.name,
                '--commcare-hq',
                sandbox.url,
                '--username',
                DEFAULT_USERNAME,
                '--resource',
                'form',
                '--output-format',
                'jsonl',
                '--output',
                output,
                '--progress',
                'none',
                '--concurrency',
                String(concurrency),
                '--max-concurrency',
                String(concurrency),
              ],
              { CCEXPORT_API_KEY: DEFAULT_API_KEY },
            ),
          );
        } finally {
          rmSync(output, { recursive: true, force: true });
        }
      }
      const recordsPerSecond = median(samples.map((s) => s.records / s.seconds));
      results.push({
        forms,
        concurrency,
        runs,
        recordsPerSecond: round(recordsPerSecond, 0),
        pagesPerSecond: round(median(samples.map((s) => s.pages / s.seconds)), 2),
        peakRssMb: round(Math.max(...samples.map((s) => s.peakRssMb))),
        sandboxServeRecordsPerSecond: round(serveRate, 0),
        ratioToServeRate: round(recordsPerSecond / serveRate, 2),
      });
    }
  } finally {
    await sandbox.stop();
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await benchClient({ forms: Number(process.argv[2] ?? 100_000), runs: Number(process.argv[3] ?? 3) }), null, 2));
}

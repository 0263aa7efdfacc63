/**
 * Client benchmark (issue 2): a 100,000-form sandbox project exported to JSON lines by `ccexport run`,
 * against the sandbox's own serve rate for the same pages (the ceiling this machine allows).
 *
 * The sandbox runs in its own process and the exporter in another, so each gets one of the two cores.
 * The serve rate is the sandbox's page generation and serialisation alone (no HTTP), timed in-process.
 */
import { fileURLToPath } from 'node:url';
import { createDataset, DEFAULT_PROJECT, servePageDirect } from '../functions/sandbox';
import { median, round } from './harness';
import { type ExportMeasure, measureExport, withSandbox } from './scenarios';

export interface ClientBenchResult {
  readonly forms: number;
  readonly concurrency: number;
  readonly runs: number;
  /** Medians over the runs. */
  readonly recordsPerSecond: number;
  readonly pagesPerSecond: number;
  /** Largest peak RSS of the exporter process over the runs, MB. */
  readonly peakRssMb: number;
  readonly sandboxServeRecordsPerSecond: number;
  readonly ratioToServeRate: number;
  /** Exporter and sandbox CPU per record (µs): what the two processes cost whatever else the machine runs. */
  readonly exporterCpuUsPerRecord: number;
  readonly sandboxCpuUsPerRecord: number;
  /**
   * The rate the two processes could reach if each had a core to itself and requests were pipelined:
   * 1 / the larger CPU cost per record. Above the measured rate when the shared machine starved them.
   */
  readonly pipelinedCpuCeiling: number;
  readonly measure: ExportMeasure;
}

/**
 * Records per second the sandbox produces for the keyset pages of a pull, without HTTP: the ceiling a
 * client on this machine can reach. `params` adds filters (a query's `xmlns.exact`); `maxPages` caps the
 * walk (a deep page costs what the first does, so a 1M-form project needs no full walk); the figure is
 * the median of `passes` walks, because other work on a shared machine lands on one walk or another.
 */
export function sandboxServeRate(
  forms: number,
  opts: { pageSize?: number; params?: Record<string, string>; maxPages?: number; passes?: number } = {},
): number {
  const pageSize = opts.pageSize ?? 1000;
  const dataset = createDataset(1, [{ ...DEFAULT_PROJECT, forms, cases: 10 }]);
  const rates: number[] = [];
  for (let pass = 0; pass < (opts.passes ?? 3); pass++) {
    let start: string | undefined;
    let served = 0;
    let elapsed = 0;
    for (let pages = 0; pages < (opts.maxPages ?? 100); pages++) {
      const params: Record<string, string> = {
        ...opts.params,
        order_by: 'indexed_on',
        limit: String(pageSize),
      };
      if (start) params.indexed_on_start = start;
      const t0 = performance.now();
      const body = servePageDirect(dataset, DEFAULT_PROJECT.name, 'form', new URLSearchParams(params));
      elapsed += performance.now() - t0;
      const page = JSON.parse(body) as {
        objects: Array<{ indexed_on: string }>;
        meta: { next: string | null };
      };
      served += page.objects.length;
      const last = page.objects.at(-1);
      if (!page.meta.next || !last || page.objects.length < pageSize) break;
      const next = last.indexed_on.replace(/Z$/, '');
      if (next === start) break;
      start = next;
    }
    rates.push(served / (elapsed / 1000));
  }
  return median(rates);
}

export async function benchClient(
  opts: { forms?: number; concurrency?: readonly number[]; runs?: number; latencyMs?: number } = {},
): Promise<ClientBenchResult[]> {
  const project = { forms: opts.forms ?? 100_000, ...(opts.latencyMs ? { latencyMs: opts.latencyMs } : {}) };
  const runs = opts.runs ?? 3;
  return await withSandbox(project, async (sandbox) => {
    const results: ClientBenchResult[] = [];
    for (const concurrency of opts.concurrency ?? [1, 2]) {
      // Measured next to each export, so both figures see the same load from other work on the machine.
      const serveRate = sandboxServeRate(project.forms);
      const measure = await measureExport(sandbox, project, { output: 'jsonl', concurrency, runs });
      results.push({
        forms: project.forms,
        concurrency,
        runs,
        recordsPerSecond: measure.recordsPerSecond,
        pagesPerSecond: measure.pagesPerSecond,
        peakRssMb: measure.peakRssMb,
        sandboxServeRecordsPerSecond: round(serveRate, 0),
        ratioToServeRate: round(measure.recordsPerSecond / serveRate, 2),
        exporterCpuUsPerRecord: measure.exporterCpuUsPerRecord,
        sandboxCpuUsPerRecord: measure.sandboxCpuUsPerRecord,
        pipelinedCpuCeiling: round(
          1e6 / Math.max(measure.exporterCpuUsPerRecord, measure.sandboxCpuUsPerRecord),
          0,
        ),
        measure,
      });
    }
    return results;
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const results = await benchClient({
    forms: Number(process.argv[2] ?? 100_000),
    runs: Number(process.argv[3] ?? 3),
  });
  console.log(JSON.stringify(results, (k, v) => (k === 'measure' ? undefined : v), 2));
}

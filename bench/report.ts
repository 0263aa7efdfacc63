/**
 * `npm run bench:report`: the scenarios of issue 7 §5 through the real `ccexport run` against a sandbox
 * process, written to `bench/REPORT.md` (with `bench/chart-size.svg` and `bench/chart-latency.svg`) and
 * `bench/results/report.json`.
 *
 *   --sizes 10000,100000,1000000   project sizes for the size scenario; env BENCH_SIZES
 *   --outputs jsonl,csv,...        outputs for the size scenario (default all five); env BENCH_OUTPUTS
 *   --runs N                       runs per point, medians reported (default 3); env BENCH_RUNS
 *   --large-runs N                 runs per point at 1,000,000 forms or more (default 1); env BENCH_LARGE_RUNS
 *   --size-concurrency N           concurrency of the size scenario (default 1, DET's); env BENCH_SIZE_CONCURRENCY
 *   --latency-forms N              project size of the latency and 429 scenarios (default 40000)
 *   --latencies 0,50,200           per-page latencies in ms; env BENCH_LATENCIES
 *   --concurrencies 1,2,4          concurrencies of the latency scenario; env BENCH_CONCURRENCIES
 *   --skip size,latency,throttle   leave scenarios out (the report says so)
 *   --pg-url URL                   PostgreSQL superuser URL (default: a throwaway cluster)
 *   --rewrite                      run nothing: rewrite REPORT.md and the charts from results/report.json,
 *                                  results/latest.json and the hand-written notes (below)
 *
 * REPORT.md is written by this script only (a run, or `--rewrite`); never edit it by hand. Hand-written
 * text goes into the notes files, which `--rewrite` places in it: `bench/results/notes.md` under
 * "Observations", `bench/results/det-notes.md` after the issue 15 table and its verdicts. A test
 * (test/bench/report.test.ts) renders the report from the committed files and fails when REPORT.md or a
 * chart differs from what `--rewrite` writes.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startPostgres } from '../test/support/services';
import { chartRow, lineChart, type Series } from './chart';
import { sandboxServeRate } from './client';
import type { DetComparison, MemoryRun } from './det';
import { buildCommand, ROOT, round } from './harness';
import { machine, option, positiveInts } from './run';
import {
  type ExportMeasure,
  measureExport,
  OUTPUTS,
  type OutputKind,
  QUERY_FILE,
  QUERY_XMLNS,
  rawCopyRate,
  type SandboxSettings,
  withSandbox,
} from './scenarios';

interface SizePoint {
  readonly measure: ExportMeasure;
  /** Records/s the sandbox serves for the pages this output pulls (the query's filter, or none). */
  readonly serveRate: number;
  readonly ratioToServeRate: number;
  /** sql-server only: raw `psql \copy` rows/s of the same rows, and our rows/s over it. */
  readonly rawCopyRowsPerSecond?: number;
  readonly ratioToRawCopy?: number;
}

interface LatencyPoint {
  readonly measure: ExportMeasure;
  readonly serveRate: number;
  readonly ratioToServeRate: number;
}

interface ThrottlePoint {
  readonly label: string;
  readonly measure: ExportMeasure;
  /** Throughput over the run without 429s, same latency and concurrency. */
  readonly ratioToUnthrottled: number;
}

interface ReportData {
  startedAt: string;
  seconds: number;
  machine: Record<string, unknown>;
  settings: Record<string, unknown>;
  size: SizePoint[];
  latency: LatencyPoint[];
  throttle: ThrottlePoint[];
}

const SCENARIOS = ['size', 'latency', 'throttle'] as const;

function log(message: string): void {
  process.stderr.write(`[bench:report ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

function brief(m: ExportMeasure): string {
  return `${m.recordsPerSecond} records/s, ${m.rowsPerSecond} rows/s, ${m.peakRssMb} MB (${m.seconds} s median)`;
}

async function sizeScenario(
  sizes: readonly number[],
  outputs: readonly OutputKind[],
  runs: number,
  largeRuns: number,
  concurrency: number,
  pgUrl: string,
): Promise<SizePoint[]> {
  const points: SizePoint[] = [];
  for (const forms of sizes) {
    const project: SandboxSettings = { forms };
    await withSandbox(project, async (sandbox) => {
      let copy: { rowsPerSecond: number } | undefined;
      for (const output of outputs) {
        const filtered = output !== 'jsonl';
        // Next to each export, so both see the same load from the rest of the machine.
        const serveRate = sandboxServeRate(forms, filtered ? { params: { 'xmlns.exact': QUERY_XMLNS } } : {});
        const measure = await measureExport(sandbox, project, {
          output,
          concurrency,
          runs: forms >= 1_000_000 ? largeRuns : runs,
          pgUrl,
          ...(output === 'csv'
            ? {
                keepLast: async (dir: string) => {
                  copy = await rawCopyRate(pgUrl, dir);
                },
              }
            : {}),
        });
        const point: SizePoint = {
          measure,
          serveRate: round(serveRate, 0),
          ratioToServeRate: round(measure.recordsPerSecond / serveRate, 2),
          ...(output === 'sql-server' && copy
            ? {
                rawCopyRowsPerSecond: copy.rowsPerSecond,
                ratioToRawCopy: round(measure.rowsPerSecond / copy.rowsPerSecond, 3),
              }
            : {}),
        };
        points.push(point);
        log(`size ${forms} ${output}: ${brief(measure)}; ${point.ratioToServeRate} of serve rate`);
      }
    });
  }
  return points;
}

async function latencyScenario(
  forms: number,
  latencies: readonly number[],
  concurrencies: readonly number[],
  runs: number,
): Promise<LatencyPoint[]> {
  const points: LatencyPoint[] = [];
  for (const latencyMs of latencies) {
    const project: SandboxSettings = { forms, latencyMs, workers: PARALLEL_SANDBOX_WORKERS };
    await withSandbox(project, async (sandbox) => {
      for (const concurrency of concurrencies) {
        const serveRate = sandboxServeRate(forms);
        const measure = await measureExport(sandbox, project, { output: 'jsonl', concurrency, runs });
        points.push({
          measure,
          serveRate: round(serveRate, 0),
          ratioToServeRate: round(measure.recordsPerSecond / serveRate, 2),
        });
        log(`latency ${latencyMs} ms, concurrency ${concurrency}: ${brief(measure)}`);
      }
    });
  }
  return points;
}

/**
 * Sandbox processes for the latency and 429 scenarios. The goal is stated for "an API that allows"
 * concurrency 4, and HQ serves concurrent requests on many workers; one sandbox process generates one
 * page at a time and would make its own core the limit being measured. Two, because the machine has two
 * cores and the exporter needs its share.
 */
const PARALLEL_SANDBOX_WORKERS = 2;

/** 429 on every tenth request, against the same run without them: the adaptive limiter's cost. */
async function throttleScenario(
  forms: number,
  latencyMs: number,
  concurrency: number,
  runs: number,
): Promise<ThrottlePoint[]> {
  const workers = PARALLEL_SANDBOX_WORKERS;
  const variants: Array<{ label: string; project: SandboxSettings }> = [
    { label: 'no 429s', project: { forms, latencyMs, workers } },
    {
      label: '429 every 10th, Retry-After: 0',
      project: { forms, latencyMs, workers, throttleEvery: 10, retryAfter: '0' },
    },
    {
      label: '429 every 10th, no Retry-After',
      project: { forms, latencyMs, workers, throttleEvery: 10, retryAfter: 'none' },
    },
  ];
  const measures: Array<{ label: string; measure: ExportMeasure }> = [];
  for (const v of variants) {
    const measure = await withSandbox(v.project, (sandbox) =>
      measureExport(sandbox, v.project, { output: 'jsonl', concurrency, maxConcurrency: concurrency, runs }),
    );
    measures.push({ label: v.label, measure });
    log(
      `throttle "${v.label}": ${brief(measure)}; ${measure.samples.map((s) => s.throttled).join('/')} throttled`,
    );
  }
  const base = measures[0]!.measure.recordsPerSecond;
  return measures.map((m) => ({ ...m, ratioToUnthrottled: round(m.measure.recordsPerSecond / base, 2) }));
}

// ---------------------------------------------------------------------------------------------- writing

const OUTPUT_LABEL: Record<OutputKind, string> = {
  jsonl: 'jsonl (raw)',
  csv: 'csv',
  xlsx: 'xlsx',
  'sql-server': 'sql server',
  'sql-embedded': 'sql embedded',
};

const n = (v: number): string => v.toLocaleString('en-US');

function table(head: readonly string[], rows: ReadonlyArray<ReadonlyArray<string | number>>): string {
  return [
    `| ${head.join(' | ')} |`,
    `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...rows.map((r) => `| ${r.map((c) => (typeof c === 'number' ? n(c) : c)).join(' | ')} |`),
  ].join('\n');
}

function sizeCharts(points: readonly SizePoint[]): string {
  const outputs = [...new Set(points.map((p) => p.measure.output))];
  const sizes = [...new Set(points.map((p) => p.measure.forms))].sort((a, b) => a - b);
  const series = (value: (p: SizePoint) => number): Series[] =>
    outputs.map((o) => ({
      name: OUTPUT_LABEL[o],
      points: points.filter((p) => p.measure.output === o).map((p) => [p.measure.forms, value(p)] as const),
    }));
  const logX = sizes.length > 1;
  return chartRow([
    lineChart({
      title: 'Throughput against project size',
      xLabel: 'forms in the project',
      yLabel: 'records fetched per second',
      series: series((p) => p.measure.recordsPerSecond),
      xTicks: sizes,
      xLog: logX,
    }),
    lineChart({
      title: 'Exporter peak RSS against project size',
      xLabel: 'forms in the project',
      yLabel: 'peak RSS (MB)',
      series: series((p) => p.measure.peakRssMb),
      xTicks: sizes,
      xLog: logX,
      references: [{ y: 200, label: 'issue 2 goal: 200 MB' }],
    }),
  ]);
}

/** How many processes served the sandbox, for the scenario's description. */
function workersNote(workers: number | undefined): string {
  return (workers ?? 1) > 1
    ? `, served by ${workers} sandbox processes (\`ccexport sandbox --workers ${workers}\`: HQ answers concurrent requests in parallel, one sandbox process cannot)`
    : '';
}

function latencyChart(points: readonly LatencyPoint[]): string {
  const concurrencies = [...new Set(points.map((p) => p.measure.concurrency))];
  const latencies = [...new Set(points.map((p) => p.measure.latencyMs))].sort((a, b) => a - b);
  return chartRow([
    lineChart({
      title: 'Throughput against HQ latency (ratio to serve rate)',
      xLabel: 'latency per page (ms)',
      yLabel: 'records/s ÷ sandbox serve rate',
      series: concurrencies.map((c) => ({
        name: `concurrency ${c}`,
        points: points
          .filter((p) => p.measure.concurrency === c)
          .map((p) => [p.measure.latencyMs, p.ratioToServeRate] as const),
      })),
      xTicks: latencies,
      yMin: 0,
      references: [{ y: 0.8, label: 'issue 2 goal: 0.8' }],
    }),
  ]);
}

function issueBenchSection(): string {
  const file = join(ROOT, 'bench/results/latest.json');
  if (!existsSync(file)) return '_`bench/results/latest.json` is missing: run `npm run bench`._\n';
  // biome-ignore lint/suspicious/noExplicitAny: the file is ours, written by bench/run.ts; read loosely.
  const latest = JSON.parse(readFileSync(file, 'utf8')) as any;
  const parts: string[] = [
    `From \`bench/results/latest.json\` (\`npm run bench\`, ${latest.startedAt}).`,
    '',
  ];
  if (latest.det) parts.push(detSection(latest.det));
  if (latest.client) {
    parts.push(
      '**Issue 2: client** (sandbox project to JSON lines, exporter and sandbox in separate processes)',
      '',
      table(
        [
          'forms',
          'concurrency',
          'records/s',
          'pages/s',
          'peak RSS MB',
          'serve rate/s',
          'ratio',
          'exporter µs/record',
          'sandbox µs/record',
          'pipelined CPU ceiling/s',
        ],
        // biome-ignore lint/suspicious/noExplicitAny: see above.
        latest.client.results.map((r: any) => [
          r.forms,
          r.concurrency,
          r.recordsPerSecond,
          r.pagesPerSecond,
          r.peakRssMb,
          r.sandboxServeRecordsPerSecond,
          r.ratioToServeRate,
          r.exporterCpuUsPerRecord,
          r.sandboxCpuUsPerRecord,
          r.pipelinedCpuCeiling,
        ]),
      ),
      '',
    );
  }
  if (latest.query) {
    parts.push(
      `**Issue 3: query transform** ${n(latest.query.rowsPerSecond)} rows/s wall-clock (median of ${latest.query.runs}: ${latest.query.samples.map(n).join(', ')}); ` +
        `${n(latest.query.rowsPerCoreSecond ?? 0)} rows per core-second (the rate ÷ the share of a core the process got); goal ${latest.query.goal}: **${latest.query.met ? 'met' : 'missed'}**.`,
      '',
    );
  }
  if (latest.sinks) {
    // Results recorded before the bench measured CPU time have none: the column is left out for them.
    // biome-ignore lint/suspicious/noExplicitAny: see above.
    const withCpu = latest.sinks.outputs.some((o: any) => o.cpuSecondsPer100k !== undefined);
    parts.push(
      `**Issue 4: sinks** (${n(latest.sinks.rows)} synthetic rows of 30 columns, median of ${latest.sinks.runs}; \`copy\` and \`copy-pk\` are raw \`psql \\copy\`, the ceiling)`,
      '',
      table(
        ['output', 'rows/s', ...(withCpu ? ['CPU s per 100k rows'] : []), 'peak RSS MB'],
        // biome-ignore lint/suspicious/noExplicitAny: see above.
        latest.sinks.outputs.map((o: any) => [
          o.output,
          o.rowsPerSecond,
          ...(withCpu ? [o.cpuSecondsPer100k ?? ''] : []),
          o.peakRssMb,
        ]),
      ),
      '',
      `PostgreSQL server sink ÷ raw COPY: **${latest.sinks.serverToRawCopyRatio ?? 'n/a'}**.`,
      '',
    );
  }
  return parts.join('\n');
}

/**
 * Issue 15: DET and ccexport side by side (`npm run bench -- --only det`), the issue's table re-measured,
 * with the verdicts and the hand-written notes of `bench/results/det-notes.md`.
 */
function detSection(det: { results: DetComparison[]; verdicts: string[]; memory?: MemoryRun }): string {
  const range = (s: DetComparison['det']) =>
    s.samples.length > 1 ? `${s.seconds} (${s.secondsRange[0]}–${s.secondsRange[1]})` : String(s.seconds);
  const notes = join(ROOT, 'bench/results/det-notes.md');
  return [
    '**Issue 15: side by side with DET 1.15** (`DET_HOME=... npm run bench -- --only det`; each tool a fresh',
    'process per run as a user types it, runs interleaved, medians; wall and CPU in seconds, peak RSS in MB;',
    '*max in flight* counted at the HQ stand-in)',
    '',
    table(
      [
        'scenario',
        'runs',
        'DET wall',
        'ccexport wall',
        'wall ratio',
        'DET CPU',
        'ccexport CPU',
        'CPU ratio',
        'DET MB',
        'ccexport MB',
        'requests DET / ccexport',
        'ccexport max in flight',
        'rows DET / ccexport',
        'load (1 min) start → end',
      ],
      det.results.map((r) => [
        r.label,
        r.runs,
        range(r.det),
        range(r.ccexport),
        `${r.wallRatio}×`,
        r.det.cpuSeconds,
        r.ccexport.cpuSeconds,
        `${r.cpuRatio}×`,
        r.det.peakRssMb,
        r.ccexport.peakRssMb,
        r.scenario === 'help' ? '' : `${r.det.requests} / ${r.ccexport.requests}`,
        r.scenario === 'help' ? '' : r.ccexport.maxInFlight,
        r.detRows === null ? '' : `${n(r.detRows)} / ${n(r.ccexportRows ?? 0)}`,
        `${r.load[0]} → ${r.load[1]}`,
      ]),
    ),
    '',
    ...det.verdicts.map((v) => `- ${v}`),
    '',
    existsSync(notes) ? readFileSync(notes, 'utf8').trim() : '',
    '',
  ].join('\n');
}

function verdict(met: boolean): string {
  return met ? '**met**' : '**missed**';
}

function writeReport(data: ReportData, skipped: readonly string[]): string {
  const m = data.machine;
  const out: string[] = [
    '# Benchmark report',
    '',
    `Generated by \`npm run bench:report\` on ${data.startedAt.slice(0, 10)} in ${Math.round(data.seconds / 60)} min. ` +
      `Machine: ${m.cpus} × ${m.cpuModel}, ${m.memoryGb} GB, Node ${m.node}. **The machine is shared**: other ` +
      'sessions may run on the same two cores (the observations below say how busy it was), so wall-clock ' +
      'figures are noisy. Every figure is ' +
      'the median of the runs stated, and every throughput is also given as a ratio to a ceiling measured in ' +
      'the same run (next to it, under the same load). CPU per record (user + system, from the processes ' +
      'themselves) is steadier than wall time and is given where it explains a result.',
    '',
    'Ceilings: **serve rate** is the sandbox generating and serialising the same pages in-process without ' +
      'HTTP (`sandboxServeRate` in bench/client.ts), so no client can exceed it here; **raw COPY** is ' +
      '`psql \\copy` of the same rows (the csv output of the same export) into text tables.',
    '',
  ];
  if (skipped.length) out.push(`Scenarios not run this time: ${skipped.join(', ')}.`, '');

  if (data.size.length) {
    const sizes = [...new Set(data.size.map((p) => p.measure.forms))];
    const runsBySize = sizes.map(
      (s) => `${n(s)}: ${data.size.find((p) => p.measure.forms === s)?.measure.runs} run(s)`,
    );
    out.push(
      '## Throughput and memory against project size',
      '',
      `Sizes run: ${sizes.map(n).join(', ')} forms (${runsBySize.join('; ')}); concurrency ${data.size[0]?.measure.concurrency}. ` +
        '`jsonl` pulls every form raw (`--resource form`); the table outputs run the bundled query ' +
        `\`${QUERY_FILE}\`, whose two tables (households and their members) pull only the registration ` +
        'forms, so they fetch fewer records than the project holds and write more rows than records.',
      '',
      '![Throughput and peak RSS against project size](chart-size.svg)',
      '',
      table(
        [
          'output',
          'forms',
          'records fetched',
          'rows',
          'records/s',
          'rows/s',
          'peak RSS MB',
          'serve rate/s',
          'ratio to serve rate',
          'raw COPY rows/s',
          'ratio to COPY',
          'exporter µs/record',
        ],
        data.size.map((p) => [
          OUTPUT_LABEL[p.measure.output],
          p.measure.forms,
          p.measure.samples[0]?.records ?? 0,
          p.measure.samples[0]?.rows ?? 0,
          p.measure.recordsPerSecond,
          p.measure.rowsPerSecond,
          p.measure.peakRssMb,
          p.serveRate,
          p.ratioToServeRate,
          p.rawCopyRowsPerSecond ?? '',
          p.ratioToRawCopy ?? '',
          p.measure.exporterCpuUsPerRecord,
        ]),
      ),
      '',
    );
  }

  if (data.latency.length) {
    const at = (latency: number, c: number) =>
      data.latency.find((p) => p.measure.latencyMs === latency && p.measure.concurrency === c);
    const maxLatency = Math.max(...data.latency.map((p) => p.measure.latencyMs));
    const c1 = at(maxLatency, 1);
    const c4 = at(maxLatency, 4);
    const speedup = c1 && c4 ? round(c4.measure.recordsPerSecond / c1.measure.recordsPerSecond, 2) : null;
    out.push(
      '## Throughput against HQ latency',
      '',
      `${n(data.latency[0]?.measure.forms ?? 0)} forms to JSON lines, ${data.latency[0]?.measure.runs} runs a point; the sandbox ` +
        'waits `--latency-ms` before every data request' +
        workersNote(data.latency[0]?.measure.sandboxWorkers) +
        '. Concurrency is fixed (`--concurrency N --max-concurrency N`).',
      '',
      '![Throughput against latency](chart-latency.svg)',
      '',
      table(
        [
          'latency ms',
          'concurrency',
          'records/s',
          'pages/s',
          'ratio to serve rate',
          'speed-up over concurrency 1',
          'peak RSS MB',
        ],
        data.latency.map((p) => {
          const base = at(p.measure.latencyMs, 1);
          return [
            p.measure.latencyMs,
            p.measure.concurrency,
            p.measure.recordsPerSecond,
            p.measure.pagesPerSecond,
            p.ratioToServeRate,
            base ? round(p.measure.recordsPerSecond / base.measure.recordsPerSecond, 2) : '',
            p.measure.peakRssMb,
          ];
        }),
      ),
      '',
      speedup === null
        ? ''
        : `Goal: with ${maxLatency} ms latency, concurrency 4 at least 3× concurrency 1: ${speedup}× ${verdict(speedup >= 3)}.`,
      '',
    );
  }

  if (data.throttle.length) {
    const worst = Math.min(...data.throttle.map((t) => t.ratioToUnthrottled));
    const first = data.throttle[0]!.measure;
    out.push(
      '## 429s and the adaptive limiter',
      '',
      `${n(first.forms)} forms to JSON lines, ${first.latencyMs} ms latency, \`--concurrency ${first.concurrency} --max-concurrency ${first.maxConcurrency}\`, ${first.runs} runs each${workersNote(first.sandboxWorkers)}.${(first.sandboxWorkers ?? 1) > 1 ? ' With more than one sandbox worker, "every 10th" counts each worker\'s requests (the same share overall).' : ''}`,
      '',
      table(
        ['sandbox', 'records/s', 'throttled (per run)', 'retries (per run)', 'ratio to no 429s'],
        data.throttle.map((t) => [
          t.label,
          t.measure.recordsPerSecond,
          t.measure.samples.map((s) => s.throttled).join(' / '),
          t.measure.samples.map((s) => s.retries).join(' / '),
          t.ratioToUnthrottled,
        ]),
      ),
      '',
      `Goal: less than 25% throughput lost: worst ratio ${worst} ${verdict(worst > 0.75)}.`,
      '',
    );
  }

  const notes = join(ROOT, 'bench/results/notes.md');
  if (existsSync(notes)) out.push('## Observations', '', readFileSync(notes, 'utf8').trim(), '');
  out.push(
    '## Issue benches',
    '',
    issueBenchSection(),
    '',
    '## Reproduce',
    '',
    '```sh',
    'npm run bench          # issues 2-4 → bench/results/latest.json',
    `npm run bench:report   # this page; ${JSON.stringify(data.settings)}`,
    '```',
    '',
  );
  return out.join('\n');
}

/**
 * What `--rewrite` writes, by path under `bench/`: REPORT.md and the charts, rendered from the committed
 * `results/report.json`, `results/latest.json` and notes files. Runs nothing and writes nothing.
 */
export function rewrittenFiles(): Map<string, string> {
  const data = JSON.parse(readFileSync(join(ROOT, 'bench/results/report.json'), 'utf8')) as ReportData;
  const files = new Map<string, string>();
  if (data.size.length) files.set('chart-size.svg', sizeCharts(data.size));
  if (data.latency.length) files.set('chart-latency.svg', latencyChart(data.latency));
  files.set('REPORT.md', writeReport(data, (data.settings.skip as string[]) ?? []));
  return files;
}

async function main(argv: readonly string[]): Promise<void> {
  const bench = join(ROOT, 'bench');
  if (argv.includes('--rewrite')) {
    for (const [path, text] of rewrittenFiles()) writeFileSync(join(bench, path), text);
    return;
  }
  buildCommand();
  const started = Date.now();
  const sizes = positiveInts(option(argv, 'sizes', 'BENCH_SIZES', '10000,100000,1000000'), 'sizes');
  const outputs = option(argv, 'outputs', 'BENCH_OUTPUTS', OUTPUTS.join(','))
    .split(',')
    .map((o) => o.trim()) as OutputKind[];
  for (const o of outputs)
    if (!OUTPUTS.includes(o)) throw new Error(`--outputs expects some of ${OUTPUTS.join(', ')}; got '${o}'`);
  const runs = positiveInts(option(argv, 'runs', 'BENCH_RUNS', '3'), 'runs')[0]!;
  const largeRuns = positiveInts(option(argv, 'large-runs', 'BENCH_LARGE_RUNS', '1'), 'large-runs')[0]!;
  const sizeConcurrency = positiveInts(
    option(argv, 'size-concurrency', 'BENCH_SIZE_CONCURRENCY', '1'),
    'size-concurrency',
  )[0]!;
  const latencyForms = positiveInts(
    option(argv, 'latency-forms', 'BENCH_LATENCY_FORMS', '40000'),
    'latency-forms',
  )[0]!;
  const latencies = option(argv, 'latencies', 'BENCH_LATENCIES', '0,50,200').split(',').map(Number);
  const concurrencies = positiveInts(
    option(argv, 'concurrencies', 'BENCH_CONCURRENCIES', '1,2,4'),
    'concurrencies',
  );
  const skip = option(argv, 'skip', 'BENCH_SKIP', '').split(',').filter(Boolean);
  for (const s of skip)
    if (!(SCENARIOS as readonly string[]).includes(s))
      throw new Error(`--skip expects some of ${SCENARIOS.join(', ')}; got '${s}'`);
  const pgUrlOption = option(argv, 'pg-url', 'BENCH_PG_URL', '');

  const data: ReportData = {
    startedAt: new Date().toISOString(),
    seconds: 0,
    machine: machine(),
    settings: {
      sizes,
      outputs,
      runs,
      largeRuns,
      sizeConcurrency,
      latencyForms,
      latencies,
      concurrencies,
      skip,
    },
    size: [],
    latency: [],
    throttle: [],
  };
  const needsPg = !skip.includes('size') && outputs.includes('sql-server');
  const pgServer = needsPg && !pgUrlOption ? await startPostgres() : null;
  const pgUrl = pgUrlOption || pgServer?.url || '';
  try {
    if (!skip.includes('size'))
      data.size = await sizeScenario(sizes, outputs, runs, largeRuns, sizeConcurrency, pgUrl);
    if (!skip.includes('latency'))
      data.latency = await latencyScenario(latencyForms, latencies, concurrencies, runs);
    if (!skip.includes('throttle'))
      data.throttle = await throttleScenario(
        latencyForms,
        Math.max(...latencies),
        Math.max(...concurrencies),
        runs,
      );
  } finally {
    pgServer?.stop();
  }
  data.seconds = Math.round((Date.now() - started) / 1000);

  mkdirSync(join(bench, 'results'), { recursive: true });
  writeFileSync(join(bench, 'results/report.json'), `${JSON.stringify(data, null, 2)}\n`);
  if (data.size.length) writeFileSync(join(bench, 'chart-size.svg'), sizeCharts(data.size));
  if (data.latency.length) writeFileSync(join(bench, 'chart-latency.svg'), latencyChart(data.latency));
  writeFileSync(join(bench, 'REPORT.md'), writeReport(data, skip));
  log(`wrote ${resolve(bench, 'REPORT.md')} in ${data.seconds} s`);
}

// Run only as a script: the test imports `rewrittenFiles`.
if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  await main(process.argv.slice(2));
}

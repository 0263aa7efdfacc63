/**
 * One export scenario: a sandbox project in its own process, and `ccexport run` (bench/export-worker.ts)
 * in another, `runs` times, with medians of what each run measured. Shared by `npm run bench` (issue 2)
 * and `npm run bench:report` (issue 7 §5).
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { DEFAULT_API_KEY, DEFAULT_PROJECT, DEFAULT_USERNAME } from '../functions/sandbox';
import { median, quantiles, round, runNodeScript, type SandboxProcess, startSandboxProcess } from './harness';

export const OUTPUTS = ['jsonl', 'csv', 'xlsx', 'sql-server', 'sql-embedded'] as const;
export type OutputKind = (typeof OUTPUTS)[number];

/** The bundled query the table outputs run; its tables pull the registration forms only. */
export const QUERY_FILE = 'examples/household-registration.xlsx';
export const QUERY_XMLNS = 'http://openrosa.org/formdesigner/5C1B5E2A-7F3D-4E11-9C2B-REGISTRATION';

export interface SandboxSettings {
  readonly forms: number;
  readonly latencyMs?: number;
  readonly throttleEvery?: number;
  /** Seconds, or 'none'; only with `throttleEvery`. */
  readonly retryAfter?: string;
  /**
   * Sandbox processes serving the port (`ccexport sandbox --workers`): HQ answers concurrent requests in
   * parallel, one sandbox process cannot. @default 1
   */
  readonly workers?: number;
}

export interface ExportSettings {
  readonly output: OutputKind;
  readonly concurrency: number;
  /** Upper bound of the adaptive limit; defaults to `concurrency` (a fixed limit). */
  readonly maxConcurrency?: number;
  readonly runs: number;
  /** Superuser URL of a PostgreSQL server; needed for 'sql-server'. */
  readonly pgUrl?: string;
  /** Called with the output folder of the last run before it is deleted (the COPY ceiling reads it). */
  readonly keepLast?: (outputDir: string) => Promise<void>;
}

/** What one `ccexport run` measured (bench/export-worker.ts), plus the sandbox's CPU over the run. */
export interface ExportSample {
  readonly code: number;
  readonly seconds: number;
  readonly cpuSeconds: number;
  readonly sandboxCpuSeconds: number;
  readonly peakRssMb: number;
  readonly records: number;
  readonly rows: number;
  readonly pages: number;
  readonly retries: number;
  readonly throttled: number;
}

export interface ExportMeasure {
  readonly output: OutputKind;
  readonly forms: number;
  readonly concurrency: number;
  readonly maxConcurrency: number;
  readonly latencyMs: number;
  readonly throttleEvery: number | null;
  /** Sandbox processes that served the run (older results lack it: 1). */
  readonly sandboxWorkers?: number;
  readonly runs: number;
  /** Medians over the runs. */
  readonly recordsPerSecond: number;
  readonly rowsPerSecond: number;
  readonly pagesPerSecond: number;
  readonly seconds: number;
  /** Exporter CPU (user + system) per record fetched, µs: steadier than wall time on a shared machine. */
  readonly exporterCpuUsPerRecord: number;
  /** Sandbox CPU per record served over HTTP, µs. */
  readonly sandboxCpuUsPerRecord: number;
  /** The largest peak RSS of the exporter process over the runs, MB. */
  readonly peakRssMb: number;
  readonly recordsPerSecondRange: { readonly min: number; readonly max: number };
  readonly samples: readonly ExportSample[];
}

export function sandboxArgs(s: SandboxSettings): string[] {
  return [
    '--seed',
    '1',
    '--forms',
    String(s.forms),
    '--cases',
    '10',
    ...(s.latencyMs ? ['--latency-ms', String(s.latencyMs)] : []),
    ...(s.throttleEvery ? ['--throttle-every', String(s.throttleEvery)] : []),
    ...(s.throttleEvery && s.retryAfter !== undefined ? ['--retry-after', s.retryAfter] : []),
    ...(s.workers && s.workers > 1 ? ['--workers', String(s.workers)] : []),
  ];
}

/** Starts a sandbox process for `settings`, runs `fn` against it, and stops it. */
export async function withSandbox<T>(
  settings: SandboxSettings,
  fn: (sandbox: SandboxProcess) => Promise<T>,
): Promise<T> {
  const sandbox = await startSandboxProcess(sandboxArgs(settings));
  try {
    return await fn(sandbox);
  } finally {
    await sandbox.stop();
  }
}

/** A fresh database on the PostgreSQL server, dropped by `drop()`. */
export async function freshDatabase(pgUrl: string): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `bench_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  const admin = new pg.Client({ connectionString: pgUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(pgUrl);
  url.pathname = `/${name}`;
  // Loopback: no TLS handshake to attempt.
  url.searchParams.set('sslmode', 'disable');
  return {
    url: url.toString(),
    async drop() {
      const again = new pg.Client({ connectionString: pgUrl });
      await again.connect();
      await again.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await again.end();
    },
  };
}

function outputArgs(output: OutputKind, target: string): string[] {
  switch (output) {
    case 'jsonl':
      return ['--resource', 'form', '--output-format', 'jsonl', '--output', target];
    case 'csv':
    case 'xlsx':
      return ['--query', QUERY_FILE, '--output-format', output, '--output', target];
    case 'sql-server':
    case 'sql-embedded':
      return ['--query', QUERY_FILE, '--output-format', 'sql', '--output', target];
  }
}

/** Runs `ccexport run` `settings.runs` times against `sandbox` and summarises the runs. */
export async function measureExport(
  sandbox: SandboxProcess,
  project: SandboxSettings,
  settings: ExportSettings,
): Promise<ExportMeasure> {
  const maxConcurrency = settings.maxConcurrency ?? settings.concurrency;
  const samples: ExportSample[] = [];
  for (let run = 0; run < settings.runs; run++) {
    const dir = mkdtempSync(join(tmpdir(), 'ccexport-bench-'));
    const db =
      settings.output === 'sql-server'
        ? await freshDatabase(requirePgUrl(settings.pgUrl))
        : { url: join(dir, 'out'), drop: async () => undefined };
    try {
      const cpuBefore = sandbox.cpuSeconds();
      const sample = await runNodeScript<Omit<ExportSample, 'sandboxCpuSeconds'>>(
        'bench/export-worker.ts',
        [
          '--project',
          DEFAULT_PROJECT.name,
          '--commcare-hq',
          sandbox.url,
          '--username',
          DEFAULT_USERNAME,
          ...outputArgs(settings.output, db.url),
          '--start-over',
          '--progress',
          'none',
          '--concurrency',
          String(settings.concurrency),
          '--max-concurrency',
          String(maxConcurrency),
        ],
        { CCEXPORT_API_KEY: DEFAULT_API_KEY },
      );
      if (sample.code !== 0) throw new Error(`ccexport run exited with ${sample.code}`);
      samples.push({ ...sample, sandboxCpuSeconds: sandbox.cpuSeconds() - cpuBefore });
      if (run === settings.runs - 1 && settings.keepLast) await settings.keepLast(join(dir, 'out'));
    } finally {
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const rate = quantiles(samples.map((s) => s.records / s.seconds));
  return {
    output: settings.output,
    forms: project.forms,
    concurrency: settings.concurrency,
    maxConcurrency,
    latencyMs: project.latencyMs ?? 0,
    throttleEvery: project.throttleEvery ?? null,
    sandboxWorkers: project.workers ?? 1,
    runs: settings.runs,
    recordsPerSecond: round(rate.median, 0),
    rowsPerSecond: round(median(samples.map((s) => s.rows / s.seconds)), 0),
    pagesPerSecond: round(median(samples.map((s) => s.pages / s.seconds)), 2),
    seconds: round(median(samples.map((s) => s.seconds)), 2),
    exporterCpuUsPerRecord: round(median(samples.map((s) => (s.cpuSeconds / s.records) * 1e6)), 1),
    sandboxCpuUsPerRecord: round(median(samples.map((s) => (s.sandboxCpuSeconds / s.records) * 1e6)), 1),
    peakRssMb: round(Math.max(...samples.map((s) => s.peakRssMb))),
    recordsPerSecondRange: { min: round(rate.min, 0), max: round(rate.max, 0) },
    samples: samples.map((s) => ({ ...s, seconds: round(s.seconds, 3), peakRssMb: round(s.peakRssMb) })),
  };
}

function requirePgUrl(url: string | undefined): string {
  if (!url) throw new Error('the sql-server output needs a PostgreSQL URL (pgUrl); none was given');
  return url;
}

/** Every `*.csv` file under `dir`, recursively. */
function csvFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return csvFiles(path);
    return name.endsWith('.csv') ? [path] : [];
  });
}

/**
 * The raw COPY ceiling: `psql \copy` of the csv files an export wrote into text tables of a fresh
 * database, in rows/s (median of `runs`). No export into PostgreSQL can beat this on this machine.
 */
export async function rawCopyRate(
  pgUrl: string,
  csvDir: string,
  runs = 3,
): Promise<{ rows: number; rowsPerSecond: number }> {
  const files = csvFiles(csvDir);
  if (files.length === 0) throw new Error(`no csv files under ${csvDir} to COPY`);
  const rates: number[] = [];
  let rows = 0;
  for (let run = 0; run < runs; run++) {
    const db = await freshDatabase(pgUrl);
    try {
      const script = files
        .map((file, i) => {
          const header = (readFileSync(file, 'utf8').split('\n', 1)[0] ?? '').split(',');
          const columns = header.map((_, c) => `c${c} text`).join(', ');
          return `CREATE TABLE t${i} (${columns});\n\\copy t${i} FROM '${file}' WITH (FORMAT csv, HEADER true)`;
        })
        .join('\n');
      const start = performance.now();
      execFileSync('psql', [db.url, '-q', '-v', 'ON_ERROR_STOP=1'], { input: script });
      const seconds = (performance.now() - start) / 1000;
      const counts = execFileSync('psql', [
        db.url,
        '-qAt',
        '-c',
        files.map((_, i) => `SELECT count(*) FROM t${i}`).join(' UNION ALL '),
      ]).toString();
      rows = counts
        .trim()
        .split('\n')
        .reduce((sum, n) => sum + Number(n), 0);
      rates.push(rows / seconds);
    } finally {
      await db.drop();
    }
  }
  return { rows, rowsPerSecond: round(median(rates), 0) };
}

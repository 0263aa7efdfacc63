/**
 * Sink throughput and memory: synthetic DET-like rows (30 columns) written to each output in its own
 * child process (so one output's peak RSS never carries into the next), with a raw `psql \copy` of the
 * same rows as the PostgreSQL ceiling.
 *
 *   node --import tsx bench/sinks.ts 100000                      # starts a throwaway PostgreSQL
 *   node --import tsx bench/sinks.ts 100000 postgresql://...     # uses that server (superuser)
 *   node --import tsx bench/sinks.ts 1000000 --outputs csv,xlsx,postgresql
 *
 * Peak RSS is the child's `maxRSS` (the kernel's high-water mark), so it includes node, tsx and the
 * libraries loaded; the PostgreSQL server's own memory is not counted (PGlite's is: it runs in-process).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import type { Cell, TableSpec } from '../functions/query/types';
import { createSink, fileFormat } from '../functions/sinks';
import type { SinkOptions } from '../functions/sinks/types';

export interface SinkBenchResult {
  output: string;
  rows: number;
  seconds: number;
  rowsPerSecond: number;
  /**
   * CPU seconds (user + system) of the child process over the timed part, per 100,000 rows: steadier
   * than rows/s on a shared machine, where another process's load slows the wall clock, not this.
   * PostgreSQL outputs: the client's only (the server's CPU is its own process's).
   */
  cpuSecondsPer100k: number;
  peakRssMb: number;
  /** PostgreSQL outputs: our rows/s divided by the raw `psql \copy` rows/s of the same rows. */
  ratioToCopy?: number;
}

/** Every output the bench knows; `copy` is the raw `psql \copy` ceiling, `copy-pk` the same into a table with the id primary key. */
export const BENCH_OUTPUTS = [
  'csv',
  'json',
  'markdown',
  'xlsx',
  'parquet',
  'postgresql',
  'copy',
  'copy-pk',
  'pglite',
] as const;
export type BenchOutput = (typeof BENCH_OUTPUTS)[number];

const COLUMNS = 30;
/**
 * Rows per `writeRows` call. The export loop calls once per record (functions/export/run.ts), so one
 * row per call is what the sinks see in a run; `BENCH_ROWS_PER_CALL` changes it.
 */
const ROWS_PER_CALL =
  Number(process.env.BENCH_ROWS_PER_CALL) > 0 ? Number(process.env.BENCH_ROWS_PER_CALL) : 1;
const SELF = fileURLToPath(import.meta.url);

const spec: TableSpec = {
  name: 'bench_forms',
  headings: ['id', ...Array.from({ length: COLUMNS - 1 }, (_, i) => `form.question_${i + 1}`)],
  dataTypes: Array.from({ length: COLUMNS }, () => null),
  // What a query file's Map Via would make of these columns (str2num, str2bool, str2date; the rest are
  // plain fields): only the Parquet output uses it, for typed columns. BENCH_PARQUET_TEXT=1 leaves it
  // out: every Parquet column is text (the worst case, and what Parquet files held before columns were
  // typed by their Map Via).
  ...(process.env.BENCH_PARQUET_TEXT === '1'
    ? {}
    : {
        valueKinds: Array.from({ length: COLUMNS }, (_, c) =>
          c === 0 ? null : ([null, 'number', 'boolean', 'datetime', null] as const)[c % 5]!,
        ),
      }),
};

/** The id of synthetic row `n`, unique per row. */
function syntheticId(n: number): string {
  return `form-${n.toString(16).padStart(8, '0')}-${(n * 2654435761) % 1e9}`;
}

/** A form-like row: ids, short strings, integers, booleans, dates, decimals. */
function syntheticRow(n: number): Cell[] {
  const row: Cell[] = [syntheticId(n)];
  for (let c = 1; c < COLUMNS; c++) {
    switch (c % 5) {
      case 0:
        row.push(`answer ${c} for form ${n}, with some text`);
        break;
      case 1:
        row.push((n * c) % 10_000);
        break;
      case 2:
        row.push((n + c) % 3 === 0);
        break;
      case 3:
        row.push(new Date(Date.UTC(2024, 0, 1) + ((n * 37 + c) % 31_536_000) * 1000));
        break;
      default:
        row.push(`${(n % 97) + c / 10}`);
    }
  }
  return row;
}

/**
 * Distinct rows the bench cycles through. Making a row costs about as much as a sink spends encoding it
 * (new strings, a Date), and that time would count against the sink while the raw COPY ceiling reads a
 * file written beforehand; so the rows are made once, before the timing, and each written row is a
 * copy of one of them with its own id. 4,096 rows keep the values as varied as before for the encoder.
 */
const ROW_POOL_SIZE = 4096;
let rowPool: Cell[][] | null = null;

function benchRow(n: number): Cell[] {
  rowPool ??= Array.from({ length: ROW_POOL_SIZE }, (_, k) => syntheticRow(k));
  const row = rowPool[n % ROW_POOL_SIZE]!.slice();
  row[0] = syntheticId(n);
  return row;
}

/** The column types the sink infers for the synthetic rows, for the raw COPY table. */
function rawTableDdl(name: string, primaryKey: boolean): string {
  const types = ['text', 'integer', 'boolean', 'timestamp', 'text'];
  const columns = spec.headings.map((h, c) =>
    c === 0 ? `id text${primaryKey ? ' COLLATE "C" PRIMARY KEY' : ''}` : `"${h}" ${types[c % 5]}`,
  );
  return `CREATE TABLE ${name} (${columns.join(', ')})`;
}

async function runSink(options: SinkOptions, rows: number): Promise<void> {
  const sink = await createSink(options);
  await sink.begin([spec], {
    runId: 'bench',
    checkpointKey: `bench-${randomUUID()}`,
    project: 'bench',
    snapshot: true,
  });
  for (let start = 0; start < rows; start += ROWS_PER_CALL) {
    const batch: Cell[][] = [];
    for (let n = start; n < Math.min(rows, start + ROWS_PER_CALL); n++) batch.push(benchRow(n));
    await sink.writeRows(spec.name, batch);
  }
  await sink.commit([]);
  await sink.finish();
}

/** A fresh database on the server for one output; returns its URL. */
async function createDatabase(pgUrl: string): Promise<string> {
  const admin = new pg.Client({ connectionString: pgUrl });
  await admin.connect();
  const name = `bench_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(pgUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function dropDatabase(pgUrl: string, dbUrl: string): Promise<void> {
  const admin = new pg.Client({ connectionString: pgUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${new URL(dbUrl).pathname.slice(1)} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

/** `BENCH_BATCH_ROWS` overrides the SQL sinks' batch size, for comparing sizes. */
function batchRows(): { batchRows?: number } {
  const value = Number(process.env.BENCH_BATCH_ROWS);
  return value > 0 ? { batchRows: value } : {};
}

/** Wall-clock and CPU seconds of the timed part of one output. */
interface Timing {
  readonly seconds: number;
  readonly cpuSeconds: number;
}

/** Runs one output in this process and returns its timing (peak RSS is read by the caller). */
async function runOutput(output: BenchOutput, rows: number, dir: string, pgUrl?: string): Promise<Timing> {
  const started = () => ({ wall: process.hrtime.bigint(), cpu: process.cpuUsage() });
  const since = (t: ReturnType<typeof started>): Timing => {
    const cpu = process.cpuUsage(t.cpu);
    return {
      seconds: Number(process.hrtime.bigint() - t.wall) / 1e9,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
    };
  };
  benchRow(0); // builds the row pool before any timing
  if (output === 'postgresql' || output === 'copy' || output === 'copy-pk') {
    if (!pgUrl) throw new Error(`output ${output} needs a PostgreSQL URL`);
    const dbUrl = await createDatabase(pgUrl);
    try {
      if (output === 'postgresql') {
        // Loading node-postgres and the sink's own modules (compiled by tsx here, ~150 ms; bundled in
        // the Lambda) is start-up, not loading rows: psql's start is a native binary's few milliseconds,
        // so module loading stays out of the timing.
        await Promise.all([
          import('pg'),
          import('pg-copy-streams'),
          import('../functions/sinks/postgres/connection'),
          import('../functions/sinks/postgres/sink'),
        ]);
        const t = started();
        await runSink({ format: 'sql', output: `${dbUrl}?sslmode=disable`, ...batchRows() }, rows);
        return since(t);
      }
      // The ceiling: psql \copy of the same rows (as our csv output writes them) into a bare table.
      await runSink({ format: 'csv', output: join(dir, 'csv') }, rows);
      const csvFile = join(dir, 'csv', spec.name, 'bench.csv');
      execFileSync('psql', [dbUrl, '-q', '-c', rawTableDdl('bench_copy_raw', output === 'copy-pk')]);
      const t = started();
      execFileSync('psql', [
        dbUrl,
        '-q',
        '-c',
        `\\copy bench_copy_raw FROM '${csvFile}' WITH (FORMAT csv, HEADER true)`,
      ]);
      return since(t);
    } finally {
      await dropDatabase(pgUrl, dbUrl);
    }
  }
  if (output !== 'pglite') {
    // As for PostgreSQL above: the sink's modules and the format's library (hyparquet-writer, exceljs)
    // are loaded before the timer; under tsx, compiling them is start-up, not writing rows.
    await Promise.all([
      import('../functions/sinks/file-sink'),
      import('../functions/sinks/store/local'),
      fileFormat(output),
    ]);
  }
  const t = started();
  if (output === 'pglite')
    await runSink({ format: 'sql', output: join(dir, 'embedded'), ...batchRows() }, rows);
  else await runSink({ format: output, output: join(dir, output) }, rows);
  return since(t);
}

/** Runs one output in a child process (`node --import tsx`) and reads its result line. */
async function runChild(output: BenchOutput, rows: number, pgUrl?: string): Promise<SinkBenchResult> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', SELF, '--child', output, String(rows), ...(pgUrl ? [pgUrl] : [])],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const line = stdout.trim().split('\n').pop() ?? '';
  if (code !== 0 || !line.startsWith('{')) {
    throw new Error(`bench child for ${output} exited with code ${code}: ${stdout.slice(-500)}`);
  }
  return JSON.parse(line) as SinkBenchResult;
}

/**
 * Each output in its own child process, one after the other. PostgreSQL outputs need `pgUrl` (a
 * superuser URL: each run creates and drops its own database); without it they are skipped.
 */
export async function benchSinks(opts: {
  rows: number;
  pgUrl?: string;
  outputs?: string[];
}): Promise<SinkBenchResult[]> {
  const wanted = (opts.outputs ?? [...BENCH_OUTPUTS]) as BenchOutput[];
  for (const o of wanted) {
    if (!BENCH_OUTPUTS.includes(o))
      throw new Error(`unknown output "${o}"; expected one of ${BENCH_OUTPUTS.join(', ')}`);
  }
  const needsServer = (o: BenchOutput) => o === 'postgresql' || o === 'copy' || o === 'copy-pk';
  const results: SinkBenchResult[] = [];
  for (const output of wanted) {
    if (needsServer(output) && !opts.pgUrl) continue;
    results.push(await runChild(output, opts.rows, opts.pgUrl));
  }
  const copy = results.find((r) => r.output === 'copy');
  if (copy) {
    for (const r of results) {
      if (r.output === 'postgresql' || r.output === 'pglite' || r.output === 'copy-pk') {
        r.ratioToCopy = Math.round((r.rowsPerSecond / copy.rowsPerSecond) * 1000) / 1000;
      }
    }
  }
  return results;
}

async function childMain(output: BenchOutput, rows: number, pgUrl?: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ccexport-bench-sinks-'));
  try {
    const { seconds, cpuSeconds } = await runOutput(output, rows, dir, pgUrl);
    const result: SinkBenchResult = {
      output,
      rows,
      seconds: Math.round(seconds * 1000) / 1000,
      rowsPerSecond: Math.round(rows / seconds),
      cpuSecondsPer100k: Math.round((cpuSeconds / rows) * 100_000 * 1000) / 1000,
      // maxRSS is in kilobytes: the process's high-water mark, not a sample.
      peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  if (args[0] === '--child') {
    await childMain(args[1] as BenchOutput, Number(args[2]), args[3]);
    process.exit(0);
  }
  const outputsAt = args.indexOf('--outputs');
  const outputs = outputsAt >= 0 ? args.splice(outputsAt, 2)[1]?.split(',') : undefined;
  const rows = Number(args[0] ?? 100_000);
  let pgUrl = args[1];
  let stop: (() => void) | undefined;
  if (!pgUrl) {
    const { startPostgres } = await import('../test/support/services');
    const server = await startPostgres();
    pgUrl = server.url;
    stop = () => server.stop();
  }
  try {
    console.table(await benchSinks({ rows, pgUrl, ...(outputs ? { outputs } : {}) }));
  } finally {
    stop?.();
  }
}

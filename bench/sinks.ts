/**
 * Sink throughput: synthetic DET-like rows (30 columns) to xlsx, csv, PostgreSQL (server and embedded),
 * with a raw `psql \copy` of the same rows as the ceiling. Run: `npx tsx bench/sinks.ts 100000 <pgUrl>`.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import type { Cell, TableSpec } from '../functions/query/types';
import { createSink } from '../functions/sinks';
import type { SinkOptions } from '../functions/sinks/types';

export interface SinkBenchResult {
  output: string;
  rows: number;
  seconds: number;
  rowsPerSecond: number;
  peakRssMb: number;
}

const COLUMNS = 30;
const BATCH = 1000;

const spec: TableSpec = {
  name: 'bench_forms',
  headings: ['id', ...Array.from({ length: COLUMNS - 1 }, (_, i) => `form.question_${i + 1}`)],
  dataTypes: Array.from({ length: COLUMNS }, () => null),
};

/** A form-like row: ids, short strings, integers, booleans, dates, decimals. */
function syntheticRow(n: number): Cell[] {
  const row: Cell[] = [`form-${n.toString(16).padStart(8, '0')}-${(n * 2654435761) % 1e9}`];
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

async function measure(output: string, rows: number, work: () => Promise<void>): Promise<SinkBenchResult> {
  global.gc?.();
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 25);
  const start = process.hrtime.bigint();
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  peak = Math.max(peak, process.memoryUsage().rss);
  return {
    output,
    rows,
    seconds: Math.round(seconds * 1000) / 1000,
    rowsPerSecond: Math.round(rows / seconds),
    peakRssMb: Math.round(peak / 1024 / 1024),
  };
}

async function runSink(options: SinkOptions, rows: number): Promise<void> {
  const sink = await createSink(options);
  await sink.begin([spec], {
    runId: 'bench',
    checkpointKey: `bench-${randomUUID()}`,
    project: 'bench',
    snapshot: true,
  });
  for (let start = 0; start < rows; start += BATCH) {
    const batch: Cell[][] = [];
    for (let n = start; n < Math.min(rows, start + BATCH); n++) batch.push(syntheticRow(n));
    await sink.writeRows(spec.name, batch);
  }
  await sink.commit([]);
  await sink.finish();
}

export async function benchSinks(opts: { rows: number; pgUrl?: string }): Promise<SinkBenchResult[]> {
  const { rows } = opts;
  const dir = mkdtempSync(join(tmpdir(), 'ccexport-bench-sinks-'));
  const results: SinkBenchResult[] = [];
  try {
    results.push(
      await measure('xlsx (local file)', rows, () =>
        runSink({ format: 'xlsx', output: join(dir, 'xlsx') }, rows),
      ),
    );
    results.push(
      await measure('csv (local file)', rows, () =>
        runSink({ format: 'csv', output: join(dir, 'csv') }, rows),
      ),
    );
    if (opts.pgUrl) {
      const admin = new pg.Client({ connectionString: opts.pgUrl });
      await admin.connect();
      const dbName = `bench_${randomUUID().replaceAll('-', '').slice(0, 8)}`;
      await admin.query(`CREATE DATABASE ${dbName}`);
      const url = new URL(opts.pgUrl);
      url.pathname = `/${dbName}`;
      const dbUrl = url.toString();
      try {
        results.push(
          await measure('postgresql (server, COPY + merge)', rows, () =>
            runSink({ format: 'sql', output: `${dbUrl}${url.search ? '&' : '?'}sslmode=disable` }, rows),
          ),
        );
        // Ceiling: psql \copy of the csv we just wrote, into an empty table of the same shape.
        const csvFile = join(dir, 'csv', 'bench_forms', 'bench.csv');
        execFileSync('psql', [dbUrl, '-q', '-c', 'CREATE TABLE bench_copy_raw (LIKE bench_forms)']);
        results.push(
          await measure('psql \\copy (ceiling)', rows, async () => {
            execFileSync('psql', [
              dbUrl,
              '-q',
              '-c',
              `\\copy bench_copy_raw FROM '${csvFile}' WITH (FORMAT csv, HEADER true)`,
            ]);
          }),
        );
      } finally {
        await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => undefined);
        await admin.end();
      }
    }
    results.push(
      await measure('postgresql (embedded PGlite)', rows, () =>
        runSink({ format: 'sql', output: join(dir, 'embedded') }, rows),
      ),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const rows = Number(process.argv[2] ?? 100_000);
  const pgUrl = process.argv[3];
  console.table(await benchSinks({ rows, ...(pgUrl ? { pgUrl } : {}) }));
}

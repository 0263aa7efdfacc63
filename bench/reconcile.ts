/**
 * `ccexport reconcile` against projects of growing size: ids listed per second and the reconcile
 * process's peak RSS (memory must stay flat in the number of ids).
 *
 *   node --import tsx bench/reconcile.ts [--sizes 10000,100000,1000000] [--output sql|csv] [postgresql://superuser-url]
 *   node --import tsx bench/reconcile.ts --sliced [--pages-per-slice 250] [--sizes ...]
 *
 * The sandbox runs in its own process (`ccexport sandbox --forms N`); the target table `forms` (one
 * row per form id, plus 1% ids HQ does not list, which the reconcile removes) is loaded beforehand:
 * with COPY into PostgreSQL (`--output sql`, the default), or as one csv run of a folder output
 * (`--output csv`: the reconcile then records the 1% as deletion records, through its external sort).
 * The reconcile runs in a child process that reports its own `maxRSS`. Without a URL a throwaway
 * PostgreSQL is started. Prints one JSON line per size.
 *
 * `--sliced`: the csv folder reconciled as an S3 export's scheduled reconcile is, in slices
 * (`bench/reconcile-slice.ts`), each a process of its own (as a Lambda invocation) listing at most
 * `--pages-per-slice` pages and staging them as sorted gzip runs in the output's `_reconcile/`; the
 * last one merges them with the table's ids. Reports each slice's peak RSS.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { createDataset } from '../functions/sandbox';
import { ROOT, round, runNodeScript, startSandboxProcess } from './harness';

const QUERY = {
  Bind: {
    name: 'checkpoint_manager',
    value: { Apply: { fn: { Ref: 'get_checkpoint_manager' }, args: [{ Lit: 'form' }, { Lit: ['forms'] }] } },
    body: {
      Emit: {
        table: 'forms',
        headings: [{ Lit: 'id' }],
        source: {
          Map: {
            source: {
              Apply: { fn: { Ref: 'api_data' }, args: [{ Lit: 'form' }, { Ref: 'checkpoint_manager' }] },
            },
            body: { List: [{ Ref: 'id' }] },
          },
        },
      },
    },
  },
};

interface Result {
  forms: number;
  ids: number;
  removed: number;
  seconds: number;
  idsPerSecond: number;
  peakRssMb: number;
}

/** Loads `forms` with every id the sandbox lists (archived forms left out) plus 1% that HQ does not. */
async function loadTarget(url: string, forms: number): Promise<number> {
  const dataset = createDataset(1, [{ name: 'demo', forms, cases: 600 }]);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const { from: copyFrom } = await import('pg-copy-streams');
  try {
    await client.query('DROP TABLE IF EXISTS forms');
    await client.query('CREATE TABLE forms (id text COLLATE "C" PRIMARY KEY)');
    const stream = client.query(copyFrom('COPY forms (id) FROM STDIN'));
    const done = new Promise<void>((resolve, reject) => {
      stream.on('finish', resolve);
      stream.on('error', reject);
    });
    let chunk = '';
    let rows = 0;
    for (const [id, form] of dataset.finalState('demo', 'form')) {
      if (form.archived === true) continue;
      chunk += `${id}\n`;
      rows += 1;
      if (rows % 100 === 0) chunk += `gone-${rows}\n`;
      if (chunk.length > 1 << 16) {
        if (!stream.write(chunk)) await new Promise((resolve) => stream.once('drain', resolve));
        chunk = '';
      }
    }
    stream.end(chunk);
    await done;
    return Math.floor(rows / 100);
  } finally {
    await client.end();
  }
}

/** Writes the same ids as one csv run of a folder output (project `demo`, the query's checkpoint key). */
async function loadFolder(folder: string, forms: number, checkpointKey: string): Promise<number> {
  const dataset = createDataset(1, [{ name: 'demo', forms, cases: 600 }]);
  const { createSink } = await import('../functions/sinks');
  const sink = await createSink({ format: 'csv', output: folder });
  await sink.begin([{ name: 'forms', headings: ['id'], dataTypes: [null] }], {
    runId: 'bench-load',
    checkpointKey,
    project: 'demo',
    snapshot: true,
  });
  let rows = 0;
  let batch: string[][] = [];
  for (const [id, form] of dataset.finalState('demo', 'form')) {
    if (form.archived === true) continue;
    batch.push([id]);
    rows += 1;
    if (rows % 100 === 0) batch.push([`gone-${rows}`]);
    if (batch.length >= 1000) {
      await sink.writeRows('forms', batch);
      batch = [];
    }
  }
  await sink.writeRows('forms', batch);
  await sink.finish();
  return Math.floor(rows / 100);
}

/** Runs the reconcile in a child process; its last stderr line is its own peak RSS. */
async function reconcile(
  sandboxUrl: string,
  dbUrl: string,
  queryFile: string,
  format: 'sql' | 'csv' = 'sql',
): Promise<{ seconds: number; out: string; rss: number }> {
  const script = `
    const { main } = await import('./functions/cli/main.ts');
    const code = await main(process.argv.slice(1), {
      stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd(),
    });
    process.stderr.write('\\n' + JSON.stringify({ maxRss: process.resourceUsage().maxRSS }) + '\\n');
    process.exit(code);`;
  const args = [
    'reconcile',
    '--project',
    'demo',
    '--commcare-hq',
    sandboxUrl,
    '--username',
    'demo@example.org',
    '--query',
    queryFile,
    '--output-format',
    format,
    '--output',
    dbUrl,
    '--progress',
    'json',
    '--reconcile-max-share',
    '0.5',
  ];
  const started = Date.now();
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, ...args], {
    cwd: ROOT,
    env: { ...process.env, CCEXPORT_API_KEY: 'sandbox-demo-key' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString();
  });
  child.stderr.on('data', (c: Buffer) => {
    err += c.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  if (process.env.BENCH_VERBOSE) process.stderr.write(err);
  const seconds = (Date.now() - started) / 1000;
  if (code !== 0) throw new Error(`reconcile exited with ${code}: ${err.slice(-2000)}`);
  const last = err.trim().split('\n').pop() ?? '{}';
  return { seconds, out, rss: (JSON.parse(last) as { maxRss: number }).maxRss };
}

interface SliceRun {
  readonly result: { done: boolean; cursor?: { ids: number }; summary?: { ids: number; gone: number } };
  readonly seconds: number;
  readonly staged: number;
  readonly stagedBytes: number;
  readonly scratchPeak: number;
  readonly maxRss: number;
}

/** The reconcile in slices, each a child process; the slices' figures. */
async function slicedReconcile(
  sandboxUrl: string,
  folder: string,
  queryFile: string,
  pagesPerSlice: number,
): Promise<{ seconds: number; slices: SliceRun[] }> {
  const started = Date.now();
  const slices: SliceRun[] = [];
  let cursor: unknown = null;
  for (;;) {
    const args = [sandboxUrl, folder, queryFile, String(pagesPerSlice)];
    if (cursor) args.push(JSON.stringify(cursor));
    // The slice's stderr goes to the bench's own; a failure names the slice.
    const slice = await runNodeScript<SliceRun>('bench/reconcile-slice.ts', args).catch((error: Error) => {
      throw new Error(`slice ${slices.length + 1}: ${error.message}`);
    });
    slices.push(slice);
    if (slice.result.done) break;
    cursor = slice.result.cursor;
  }
  return { seconds: (Date.now() - started) / 1000, slices };
}

async function main(argv: readonly string[]): Promise<void> {
  const at = argv.indexOf('--sizes');
  const sizes = (at >= 0 ? argv[at + 1]! : '10000,100000,1000000').split(',').map(Number);
  const outputAt = argv.indexOf('--output');
  const sliced = argv.includes('--sliced');
  const output = sliced || (outputAt >= 0 && argv[outputAt + 1] === 'csv') ? 'csv' : 'sql';
  const pagesAt = argv.indexOf('--pages-per-slice');
  const pagesPerSlice = pagesAt >= 0 ? Number(argv[pagesAt + 1]) : 250;
  let url = argv.find((a) => a.startsWith('postgres'));
  let stop = () => {};
  if (!url) {
    const { startPostgres } = await import('../test/support/services');
    const server = await startPostgres();
    url = server.url;
    stop = () => server.stop();
  }
  const work = mkdtempSync(join(tmpdir(), 'ccexport-bench-reconcile-'));
  const queryFile = join(work, 'forms.json');
  writeFileSync(queryFile, JSON.stringify(QUERY));
  try {
    const { createHash } = await import('node:crypto');
    // DET's checkpoint key: the query file's MD5 (the reconcile takes the export's lease under it).
    const checkpointKey = createHash('md5').update(JSON.stringify(QUERY)).digest('hex');
    for (const forms of sizes) {
      const folder = join(work, `folder-${forms}`);
      const removed =
        output === 'csv' ? await loadFolder(folder, forms, checkpointKey) : await loadTarget(url, forms);
      const sandbox = await startSandboxProcess(['--forms', String(forms)]);
      try {
        if (sliced) {
          const run = await slicedReconcile(sandbox.url, folder, queryFile, pagesPerSlice);
          const last = run.slices.at(-1)!.result.summary!;
          if (last.gone !== removed) throw new Error(`recorded ${last.gone}, expected ${removed}`);
          const listing = run.slices.slice(0, -1);
          const mb = (kib: number) => round(kib / 1024, 1);
          process.stdout.write(
            `${JSON.stringify({
              output: 'csv, sliced',
              forms,
              ids: last.ids,
              removed: last.gone,
              slices: run.slices.length,
              pagesPerSlice,
              seconds: round(run.seconds, 1),
              idsPerSecond: Math.round(last.ids / run.seconds),
              stagedRuns: Math.max(0, ...listing.map((s) => s.staged)),
              stagedMb: round(Math.max(0, ...listing.map((s) => s.stagedBytes)) / 1024 / 1024, 2),
              listingSlicePeakRssMb: mb(Math.max(0, ...listing.map((s) => s.maxRss))),
              lastSlicePeakRssMb: mb(run.slices.at(-1)!.maxRss),
              lastSliceSeconds: round(run.slices.at(-1)!.seconds, 1),
              lastSliceTmpMb: round(run.slices.at(-1)!.scratchPeak / 1024 / 1024, 1),
            })}\n`,
          );
          continue;
        }
        const run = await reconcile(sandbox.url, output === 'csv' ? folder : url, queryFile, output);
        const ids = Number(/([\d,]+) ids listed/.exec(run.out)?.[1]?.replaceAll(',', '') ?? 0);
        const result: Result = {
          forms,
          ids,
          removed: Number(
            /([\d,]+) rows (removed|recorded as deleted)/.exec(run.out)?.[1]?.replaceAll(',', '') ?? 0,
          ),
          seconds: round(run.seconds, 1),
          idsPerSecond: Math.round(ids / run.seconds),
          peakRssMb: round(run.rss / 1024, 1),
        };
        if (result.removed !== removed) throw new Error(`removed ${result.removed}, expected ${removed}`);
        process.stdout.write(`${JSON.stringify({ output, ...result })}\n`);
      } finally {
        await sandbox.stop();
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
    stop();
  }
}

await main(process.argv.slice(2));

/**
 * One slice of the sliced file reconcile (what the export function runs for an S3 export's scheduled
 * reconcile), in a process of its own as a Lambda invocation is: lists at most `pages` pages, stages
 * them as sorted runs in the output's `_reconcile/`, or (once every source is listed) compares and
 * commits. Used by `bench/reconcile.ts --sliced`.
 *
 *   node --import tsx bench/reconcile-slice.ts <sandbox url> <output folder> <query file> <pages> [cursor json]
 *
 * Prints one JSON line: the slice's result (cursor or summary), its seconds, its staged runs so far, the
 * peak size of its temporary files (sampled every 250 ms) and its own peak RSS (`maxRSS`, KiB).
 */
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommCareClient } from '../functions/commcare';
import { limitHeapGrowth } from '../functions/export/heap';
import { type ReconcileCursor, runReconcileSlice } from '../functions/export/reconcile';
import { compileQueryFile } from '../functions/query';
import { StagedFileReconcileTarget } from '../functions/sinks/file-reconcile-staging';
import { LocalObjectStore } from '../functions/sinks/store/local';

// As the export function does at its cold start (functions/export/handler.ts).
limitHeapGrowth();
const [url, folder, queryFile, pagesText, cursorText] = process.argv.slice(2);
const pages = Number(pagesText);
const cursor = cursorText ? (JSON.parse(cursorText) as ReconcileCursor) : null;
const compiled = await compileQueryFile(queryFile!, { baseUrl: url!, forSql: false });
const store = new LocalObjectStore(folder!);
// The slice's temporary files (downloaded runs, sort runs) go here; their peak size is measured, as
// Lambda gives a function 512 MB of /tmp by default.
const scratch = await mkdtemp(join(tmpdir(), 'ccexport-bench-slice-'));
let scratchPeak = 0;
const size = async (dir: string): Promise<number> => {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => []))
    total += entry.isDirectory()
      ? await size(join(dir, entry.name))
      : await stat(join(dir, entry.name)).then(
          (s) => s.size,
          () => 0,
        );
  return total;
};
const poll = setInterval(() => {
  void size(scratch).then((n) => {
    scratchPeak = Math.max(scratchPeak, n);
  });
}, 250);
const started = Date.now();
let seen = 0;
const result = await runReconcileSlice(
  {
    source: new CommCareClient({ baseUrl: url!, username: 'demo@example.org', apiKey: 'sandbox-demo-key' }),
    target: new StagedFileReconcileTarget(store, { resumesFrom: cursor, tmpDir: scratch }),
    runId: 'bench-sliced',
    shouldStop: () => ++seen >= pages,
  },
  {
    project: 'demo',
    sources: compiled.sources,
    checkpointKey: compiled.queryFileMd5,
    pageSize: 10_000,
    mode: 'remove',
    maxShare: 0.5,
  },
  cursor,
);
clearInterval(poll);
const seconds = (Date.now() - started) / 1000;
await rm(scratch, { recursive: true, force: true });
const keys = await store.list('_reconcile/');
let stagedBytes = 0;
for (const key of keys) stagedBytes += (await stat(join(folder!, key))).size;
process.stdout.write(
  `${JSON.stringify({ result, seconds, staged: keys.length, stagedBytes, scratchPeak, maxRss: process.resourceUsage().maxRSS })}\n`,
);

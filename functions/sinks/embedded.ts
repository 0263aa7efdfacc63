import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { PGlite } from '@electric-sql/pglite';
import { applyV8Flag } from '../common/v8-flags';
import { ConcurrentRunError } from './errors';
import type { SqlConnection } from './postgres/connection';
import { pgliteConnection } from './postgres/pglite';

/** Where PGlite keeps its files inside the output folder. */
export const EMBEDDED_DATA_DIR = 'pgdata';
const LOCK_FILE = 'ccexport.lock';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * PGlite is one process's database: a second process opening the same folder would corrupt it, so
 * the folder carries a lock file with the holder's pid (a stale lock from a dead process is taken over).
 */
async function lockFolder(folder: string): Promise<() => Promise<void>> {
  const path = join(folder, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(path, 'wx');
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => rm(path, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(pid) && pid > 0 && alive(pid)) {
        throw new ConcurrentRunError(
          `The embedded database in ${folder} is in use by process ${pid}; run again when it has finished`,
        );
      }
      await rm(path, { force: true });
    }
  }
  throw new ConcurrentRunError(`Could not lock the embedded database in ${folder}`);
}

/**
 * PostgreSQL settings for the embedded database, added to PGlite's own start parameters. PGlite
 * touches all of `shared_buffers` when it starts, so its default of 128 MB was resident from the
 * first moment (an open database took ~295 MB of RSS; with 16 MB, ~170 MB). The export writes each
 * page about once; a page read again comes from the operating system's file cache, through a read
 * call instead of a memory access. `max_connections` sizes per-backend shared memory (~4 MB at the
 * default 100); PGlite is a single backend.
 */
export const EMBEDDED_SETTINGS: Readonly<Record<string, string>> = {
  shared_buffers: '16MB',
  max_connections: '4',
};

function startParams(): string[] {
  return [
    ...PGlite.defaultStartParams,
    ...Object.entries(EMBEDDED_SETTINGS).flatMap(([name, value]) => ['-c', `${name}=${value}`]),
  ];
}

/**
 * V8 compiles PGlite's WebAssembly (9 MB) with its baseline compiler, Liftoff, and recompiles hot
 * functions with its optimising compiler, TurboFan, on background threads. That second tier's code
 * and compilation memory stay resident: ~50-70 MB of RSS, for a load speed within the noise of this
 * machine (a pure COPY load was faster without it; the rows' encoding and PostgreSQL's own work
 * dominate). `--liftoff-only` keeps the first tier. The flag is process-wide and applies to
 * WebAssembly compiled from then on; the export's HTTP goes through node's http, whose parser is
 * native (node's fetch, used for a few key look-ups, parses with WebAssembly: Liftoff suffices). It is
 * set once, before PGlite compiles its module.
 */
const BASELINE_WASM_FLAG = '--liftoff-only';

/**
 * Creates the database files in a child process. PGlite's initdb peaks near 825 MB of memory (670 MB
 * with the settings and compiler flag used here), which would stay the high-water mark of the export
 * process; a fresh open of existing files needs far less. When the child cannot run (no node binary
 * of ours, bundled code), the caller creates in-process.
 */
async function createInChild(dataDir: string): Promise<boolean> {
  let entry: string;
  try {
    entry = createRequire(import.meta.url).resolve('@electric-sql/pglite');
  } catch {
    return false;
  }
  const script =
    `const { PGlite } = require(${JSON.stringify(entry)});` +
    `PGlite.create({ dataDir: ${JSON.stringify(dataDir)}, startParams: ${JSON.stringify(startParams())} })` +
    '.then((db) => db.close())' +
    '.catch((e) => { console.error(e); process.exit(1); });';
  try {
    await promisify(execFile)(process.execPath, [BASELINE_WASM_FLAG, '-e', script], { timeout: 300_000 });
    return true;
  } catch {
    return false;
  }
}

/**
 * Opens (creating if needed) the embedded PostgreSQL (PGlite) kept in `folder`, for the `sql` output
 * with a folder path and for printing queries over it. Close it to release the folder.
 */
export async function openEmbeddedDatabase(folder: string): Promise<SqlConnection> {
  const root = resolve(folder);
  await mkdir(root, { recursive: true });
  const unlock = await lockFolder(root);
  try {
    const dataDir = join(root, EMBEDDED_DATA_DIR);
    if (!existsSync(join(dataDir, 'PG_VERSION'))) await createInChild(dataDir);
    applyV8Flag(BASELINE_WASM_FLAG);
    const db = await PGlite.create({ dataDir, startParams: startParams() });
    return pgliteConnection(db, unlock);
  } catch (error) {
    await unlock();
    throw error;
  }
}

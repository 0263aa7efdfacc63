import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
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

/** Reads the pid in a lock file; null when the file is gone or holds no pid. */
async function lockHolder(path: string): Promise<number | null> {
  const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

/**
 * Creates `path` holding our pid, only if it does not exist; false when it does. The pid is written to
 * a file of our own first and linked into place, so the lock never exists without its pid (a reader
 * would take an empty lock for a stale one).
 */
async function createExclusive(path: string): Promise<boolean> {
  const own = `${path}.${process.pid}.${randomUUID().slice(0, 8)}`;
  await writeFile(own, String(process.pid), { flag: 'wx' });
  try {
    await link(own, path);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    // A file system without hard links: an exclusive create, then the pid.
    if (code === 'EPERM' || code === 'ENOTSUP' || code === 'ENOSYS') {
      try {
        await writeFile(path, String(process.pid), { flag: 'wx' });
        return true;
      } catch (inner) {
        if ((inner as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw inner;
      }
    }
    throw error;
  } finally {
    await rm(own, { force: true });
  }
}

const TAKEOVER_TRIES = 100;
const TAKEOVER_WAIT_MS = 20;

/**
 * PGlite is one process's database: a second process opening the same folder would corrupt it, so
 * the folder carries a lock file with the holder's pid, created exclusively (`wx`).
 *
 * A lock left by a dead process is taken over, and the takeover must be atomic too: two processes
 * that both read the dead pid would otherwise both remove the file and both create one (the second
 * removing the first's new lock). So a takeover happens only while holding a second, exclusively
 * created file (`ccexport.lock.takeover`), and only if the lock still holds the dead pid read before;
 * a process that finds a takeover under way waits for it and then finds the new holder alive. A
 * takeover file is held for a few file operations; one left by a process killed in that instant is
 * named in the error, to be removed by hand.
 */
export async function lockEmbeddedFolder(folder: string): Promise<() => Promise<void>> {
  const path = join(folder, LOCK_FILE);
  const takeover = `${path}.takeover`;
  for (let attempt = 0; attempt < TAKEOVER_TRIES; attempt++) {
    if (await createExclusive(path)) return () => rm(path, { force: true });
    const pid = await lockHolder(path);
    if (pid !== null && alive(pid)) {
      throw new ConcurrentRunError(
        `The embedded database in ${folder} is in use by process ${pid}; run again when it has finished`,
      );
    }
    if (!(await createExclusive(takeover))) {
      const taker = await lockHolder(takeover);
      if (taker !== null && !alive(taker)) {
        throw new ConcurrentRunError(
          `The embedded database in ${folder} has a stale takeover file ${takeover} left by process ` +
            `${taker}, which is no longer running; remove that file and run again`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, TAKEOVER_WAIT_MS));
      continue;
    }
    try {
      // Still the dead holder we read (or no file at all): nobody took it over in the meantime.
      if ((await lockHolder(path)) === pid) await rm(path, { force: true });
      if (await createExclusive(path)) return () => rm(path, { force: true });
    } finally {
      await rm(takeover, { force: true });
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
  const unlock = await lockEmbeddedFolder(root);
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

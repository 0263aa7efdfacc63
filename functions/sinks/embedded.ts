import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { PGlite } from '@electric-sql/pglite';
import { ConcurrentRunError } from './errors';
import { pgliteConnection, type SqlConnection } from './postgres/connection';

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
 * Creates the database files in a child process. PGlite's initdb peaks near 900 MB of memory, which
 * would stay the high-water mark of the export process; a fresh open of existing files needs far
 * less. When the child cannot run (no node binary of ours, bundled code), the caller creates in-process.
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
    `PGlite.create({ dataDir: ${JSON.stringify(dataDir)} }).then((db) => db.close())` +
    '.catch((e) => { console.error(e); process.exit(1); });';
  try {
    await promisify(execFile)(process.execPath, ['-e', script], { timeout: 300_000 });
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
    const db = await PGlite.create({ dataDir });
    return pgliteConnection(db, unlock);
  } catch (error) {
    await unlock();
    throw error;
  }
}

/**
 * Preloaded into a `ccexport` child process (`NODE_OPTIONS=--import=<this file>`) by crash tests on
 * folder outputs: it counts the writes that change what the output folder shows (a file renamed or
 * linked into place, a file removed; temporary `.tmp` files do not count) and SIGKILLs its own process
 * right after the Nth, so a test can stop a run between any two of its writes, deterministically.
 *
 * KILL_WRITES_UNDER   the output folder (absolute); writes elsewhere are not counted
 * KILL_AFTER_WRITES   N (0 or unset: never kill, only count)
 * KILL_WRITES_LOG     a file that gets one line per counted write: `<n> <operation> <path>`
 */
import { appendFileSync } from 'node:fs';
import fsPromises from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { resolve } from 'node:path';

const root = process.env.KILL_WRITES_UNDER ? resolve(process.env.KILL_WRITES_UNDER) : null;
const after = Number(process.env.KILL_AFTER_WRITES ?? 0);
const log = process.env.KILL_WRITES_LOG;
let count = 0;

function counted(operation, original, pathArgument) {
  return async function countedWrite(...args) {
    const result = await original.apply(this, args);
    const path = resolve(String(args[pathArgument]));
    if (root !== null && path.startsWith(root) && !path.endsWith('.tmp')) {
      count += 1;
      if (log) appendFileSync(log, `${count} ${operation} ${path.slice(root.length + 1)}\n`);
      if (count === after) process.kill(process.pid, 'SIGKILL');
    }
    return result;
  };
}

fsPromises.rename = counted('rename', fsPromises.rename, 1);
fsPromises.link = counted('link', fsPromises.link, 1);
fsPromises.unlink = counted('unlink', fsPromises.unlink, 0);
fsPromises.rm = counted('rm', fsPromises.rm, 0);
// ES module imports of node:fs/promises see the patched functions from here on.
syncBuiltinESMExports();

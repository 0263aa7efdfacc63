/**
 * Local scratch folders of a reconcile (sorted id runs, staged downloads), named after its run rather
 * than random, so that what a killed reconcile left can be found and removed: by the reconcile that
 * takes over its lease (`removeRunScratch` with the killed run's id), or by a retry of the same run,
 * which empties the folder of its name before using it. A Lambda's /tmp is kept between invocations of
 * a warm environment, and a reconcile killed at its time-out would otherwise leave its runs there for
 * every later invocation to count against the 512 MB.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

/** What a scratch folder holds; part of its name. */
export type RunScratchKind = 'reconcile' | 'staged';

const KINDS: readonly RunScratchKind[] = ['reconcile', 'staged'];

/** `ccexport-<kind>-<run id>`, the run id kept to letters, digits, `.`, `_` and `-`. */
export function runScratchName(kind: RunScratchKind, runId: string): string {
  return `ccexport-${kind}-${runId.replace(/[^A-Za-z0-9._-]/g, '_')}`;
}

/** Creates the run's folder of `kind` under `base`, empty (whatever an earlier attempt left is removed). */
export async function runScratchFolder(base: string, kind: RunScratchKind, runId: string): Promise<string> {
  const path = join(base, runScratchName(kind, runId));
  await rm(path, { recursive: true, force: true });
  await mkdir(path, { recursive: true });
  return path;
}

/** Removes every scratch folder of `runId` under `base` (none there: nothing to do). */
export async function removeRunScratch(base: string, runId: string): Promise<void> {
  await Promise.all(
    KINDS.map((kind) => rm(join(base, runScratchName(kind, runId)), { recursive: true, force: true })),
  );
}

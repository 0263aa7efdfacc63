/**
 * The reconcile of a folder or S3 output in slices (the scheduled reconcile of an S3 export, one Lambda
 * invocation at a time, `runReconcileSlice`): the ids a slice lists must outlive it, and a Lambda keeps
 * nothing between invocations, so they are staged in the output itself, next to the data:
 *
 *   `_reconcile/<checkpoint key>/<project>/<run id>/<slice>/<source>-<n>.txt.gz`
 *
 * Each object is a sorted run: up to `stageBudgetBytes` of one data source's ids as the comparison's
 * sort lines (`liveIdLine`), sorted as `SortedLines` sorts, gzip-compressed. Memory holds one run's
 * buffer, whatever the number of ids. `<slice>` is where the slice's listing started (the cursor it
 * resumes from, `start` for the first): the state machine retries a failed slice with the same event,
 * and the retry first deletes what the failed attempt staged under that name, so no id is staged twice.
 *
 * The last slice downloads the source's runs (compressed) into a temporary folder, hands them to
 * `FileReconcileTarget` as runs its external sort merges without sorting them again, and compares,
 * writes the deletion records and commits as `ccexport reconcile` does. The staging goes after the
 * commit (best effort). A reconcile that fails (a tripped guard) leaves its staging, which the exports
 * bucket's lifecycle rule on `_reconcile/` expires (lib/export-bucket.ts); the next reconcile does not
 * delete other runs' staging, since a reconcile of the same export started by hand may still be listing.
 */
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type {
  ReconcileCursor,
  ReconcileRun,
  StagedReconcileTarget,
  StagingRunId,
  TableReconcile,
} from '../export/reconcile';
import { safeKeySegment } from './cells';
import { type FileReconcileOptions, FileReconcileTarget, liveIdLine } from './file-reconcile';
import { readManifests } from './file-sink';
import { runScratchFolder } from './run-scratch';
import type { ObjectStore } from './store/types';
import type { DeletionMode } from './types';

const gzipAsync = promisify(gzip);

/** The folder (in the output) where sliced reconciles stage the ids they list. */
export const STAGING_FOLDER = '_reconcile';

/** Default bytes of id lines in one staged run (about 110,000 ids of 36 characters). */
export const DEFAULT_STAGE_BUDGET = 8 * 1024 * 1024;

export interface StagedFileReconcileOptions extends FileReconcileOptions {
  /**
   * The cursor this slice resumes from (null: the reconcile's first slice). Names the runs the slice
   * stages, so a retry of the slice replaces what an earlier attempt of it staged.
   */
  readonly resumesFrom: ReconcileCursor | null;
  /**
   * The run id of the objects the final slice writes (deletion records, manifest) when they must differ
   * from the staging's run id: every attempt of a slice writes under names of its own, as an export
   * slice does (`sliceObjectRunId`). @default the run id of the staging
   */
  readonly objectRunId?: string;
  /** Bytes of id lines gathered before a sorted run is staged. @default DEFAULT_STAGE_BUDGET */
  readonly stageBudgetBytes?: number;
  /** Told when deleting the staging after a committed reconcile fails (the lifecycle rule expires it). */
  readonly onCleanupError?: (error: unknown) => void;
}

/** `_reconcile/<checkpoint key>/<project>/<run id>`: one reconcile's staging. */
export function stagingFolder(run: StagingRunId): string {
  return [STAGING_FOLDER, run.checkpointKey, run.project, run.runId].map(safeKeySegment).join('/');
}

/** The name of a slice's staged runs: where its listing started. */
function sliceName(from: ReconcileCursor | null): string {
  return from === null
    ? 'start'
    : `s${String(from.source).padStart(4, '0')}-p${String(from.pages).padStart(10, '0')}`;
}

/** `<source>-`: how the names of the `source`th data source's runs begin. */
function sourcePrefix(source: number): string {
  return `${String(source).padStart(4, '0')}-`;
}

/** `<source>-<n>.txt.gz`, the `n`th run of the `source`th data source in a slice. */
function runName(source: number, n: number): string {
  return `${sourcePrefix(source)}${String(n).padStart(6, '0')}.txt.gz`;
}

export class StagedFileReconcileTarget implements StagedReconcileTarget {
  private readonly target: FileReconcileTarget;
  private readonly slice: string;
  private readonly budget: number;
  private buffer: string[] = [];
  private bytes = 0;
  private bufferSource = -1;
  private runs = 0;
  /** Whether what an earlier attempt of this slice staged has been deleted. */
  private sliceCleared = false;
  private downloads: string | undefined;
  private stagingToDrop: StagingRunId | undefined;

  constructor(
    private readonly store: ObjectStore,
    private readonly options: StagedFileReconcileOptions,
  ) {
    this.target = new FileReconcileTarget(store, options);
    this.slice = sliceName(options.resumesFrom);
    this.budget = options.stageBudgetBytes ?? DEFAULT_STAGE_BUDGET;
  }

  /**
   * Whether a run of `project` has written a manifest to the output (none: nothing to reconcile yet,
   * say a project added to the export since its last run).
   */
  async hasRuns(project: string): Promise<boolean> {
    return (await readManifests(this.store)).some((m) => m.project === project);
  }

  // --- Listing: staged runs ------------------------------------------------------------------------

  async clearStaged(run: StagingRunId): Promise<void> {
    // The reconcile's first slice: only a failed earlier attempt of it can have staged under this run.
    await this.deleteUnder(`${stagingFolder(run)}/`);
    this.sliceCleared = true;
  }

  async stageIds(run: StagingRunId, source: number, ids: readonly string[]): Promise<void> {
    await this.clearSlice(run);
    if (source !== this.bufferSource) {
      await this.stageBuffer(run);
      this.bufferSource = source;
    }
    for (const id of ids) {
      const line = liveIdLine(id);
      this.buffer.push(line);
      this.bytes += line.length + 1;
    }
    if (this.bytes >= this.budget) await this.stageBuffer(run);
  }

  async flushStaged(run: StagingRunId): Promise<void> {
    await this.clearSlice(run);
    await this.stageBuffer(run);
  }

  async closeStaging(): Promise<void> {
    // A slice that ends without flushStaged failed: its retry stages the same pages again.
    this.buffer = [];
    this.bytes = 0;
  }

  private async clearSlice(run: StagingRunId): Promise<void> {
    if (this.sliceCleared) return;
    await this.deleteUnder(`${stagingFolder(run)}/${this.slice}/`);
    this.sliceCleared = true;
  }

  private async stageBuffer(run: StagingRunId): Promise<void> {
    if (this.buffer.length === 0) return;
    const lines = this.buffer.sort();
    this.buffer = [];
    this.bytes = 0;
    const body = await gzipAsync(`${lines.join('\n')}\n`);
    const key = `${stagingFolder(run)}/${this.slice}/${runName(this.bufferSource, this.runs++)}`;
    const upload = this.store.openUpload(key, 'application/gzip');
    try {
      await upload.write(body);
      await upload.complete();
    } catch (error) {
      await upload.abort().catch(() => undefined);
      throw error;
    }
  }

  private async deleteUnder(prefix: string): Promise<void> {
    for (const key of await this.store.list(prefix)) await this.store.delete(key);
  }

  // --- The final slice: compare, record, commit -----------------------------------------------------

  async begin(run: ReconcileRun): Promise<void> {
    const runId = this.options.objectRunId ?? run.runId;
    await this.target.begin({ ...run, runId });
    this.downloads = await runScratchFolder(this.options.tmpDir ?? tmpdir(), 'staged', runId);
  }

  async addStagedIds(run: StagingRunId, source: number): Promise<void> {
    const folder = this.downloads;
    if (folder === undefined) throw new Error('addStagedIds before begin');
    const ownRuns = new RegExp(`/${sourcePrefix(source)}\\d+\\.txt\\.gz$`);
    const keys = (await this.store.list(`${stagingFolder(run)}/`)).filter((key) => ownRuns.test(key));
    for (const [n, key] of keys.entries()) {
      const path = join(folder, `${sourcePrefix(source)}${n}.txt.gz`);
      await pipeline(await this.store.openRead(key), createWriteStream(path));
      this.target.addSortedLiveRun(path);
    }
  }

  addLiveIds(ids: readonly string[]): Promise<void> {
    return this.target.addLiveIds(ids);
  }

  settle(
    tables: readonly string[],
    mode: Exclude<DeletionMode, 'ignore'>,
    deletedAt: Date,
    maxShare: number,
  ): Promise<TableReconcile[]> {
    return this.target.settle(tables, mode, deletedAt, maxShare);
  }

  async dropStagedIds(run: StagingRunId): Promise<void> {
    // Deleted once the reconcile is committed: a final slice that fails before must find them again.
    this.stagingToDrop = run;
  }

  async commit(): Promise<void> {
    try {
      await this.target.commit();
    } finally {
      await this.removeDownloads();
    }
    const run = this.stagingToDrop;
    this.stagingToDrop = undefined;
    if (run)
      await this.deleteUnder(`${stagingFolder(run)}/`).catch((error: unknown) =>
        this.options.onCleanupError?.(error),
      );
  }

  async abort(): Promise<void> {
    this.stagingToDrop = undefined;
    try {
      await this.target.abort();
    } finally {
      await this.removeDownloads();
    }
  }

  private async removeDownloads(): Promise<void> {
    const folder = this.downloads;
    this.downloads = undefined;
    if (folder) await rm(folder, { recursive: true, force: true }).catch(() => undefined);
  }
}

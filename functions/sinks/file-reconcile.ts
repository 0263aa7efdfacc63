/**
 * The folder and S3 side of `ccexport reconcile`. Files are an append-only history (every run adds
 * objects; none is rewritten), so a reconcile records what it finds the way a run records an archived
 * form: `<table>/deletions/<run-id>.csv` (`id,deleted_at,reason`, reason `deleted`) listing every row
 * id whose record HQ no longer lists, and a manifest `manifests/<run-id>.json` that lists those objects.
 * `ccexport latest`, `--keep-latest` and the Athena `<table>_latest` views already apply deletion
 * records: a version written by a run that started at or before `deleted_at` is hidden. Rewriting the
 * data objects instead would break the increments a downstream loader has already read (and the
 * Parquet partitions Athena reads), and leave no trace of what was removed.
 *
 * Comparing: HQ's ids and each table's current versions (a version per row id: its run, its position,
 * its `_deleted` mark, the deletion records that cover it) go into one external sort per data source
 * (`SortedLines`), keyed by the record id (a row id up to its first `.`, DET's child-row rule), so the
 * rows of a record, its HQ id and its deletion records meet in one small group. Memory holds a sort
 * buffer and one group, never a set of ids.
 *
 * Only the runs of the reconciled project are compared (several projects may share one prefix). The
 * `mark` mode reads the same: a file output keeps every row anyway, and the deletion records are its marks.
 *
 * What a kill leaves: all tables or none (`commitFileReconcile`). Nothing is written before every table
 * of every source has been compared and has passed the guard; then each table's deletions object is
 * completed, unlisted (every reader applies only the deletions objects a manifest lists:
 * `listedDeletions`), and ONE write, the reconcile's manifest, lists them all: that write is the commit.
 * Killed before it, the output reads as it was (the next reconcile, taking over the killed one's lease,
 * removes its unlisted objects and records the same deletions under its own run id); killed after it,
 * every table is reconciled. Its sort runs, in `ccexport-reconcile-<run id>` under the temporary folder,
 * are removed by the next reconcile on the same machine that takes over its lease (run-scratch.ts).
 */
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { ExportLease } from '../checkpoints/object-store';
import type { ReconcileRun, ReconcileTarget, TableReconcile } from '../export/reconcile';
import { ReconcileGuardError } from '../export/reconcile';
import type { Cell } from '../query/types';
import { SinkConfigError, SinkStateError } from './errors';
import {
  DEFAULT_LEASE_SECONDS,
  DELETIONS_HEADER,
  deletionsObjectKey,
  listedDeletions,
  type ManifestObject,
  manifestKey,
  type RunManifest,
  readManifests,
  tableFolder,
} from './file-sink';
import { csvField } from './formats/csv';
import type { FileFormat } from './formats/types';
import { deletionTime } from './latest';
import { READABLE_FORMATS, readObjectRows } from './read-back';
import { removeRunScratch, runScratchFolder } from './run-scratch';
import { escapeField, SortedLines, unescapeField } from './sorted-lines';
import type { ObjectStore, ObjectUpload } from './store/types';
import { DELETED_COLUMN, type DeletionMode } from './types';

export interface FileReconcileOptions {
  /** @default 120 (as a run's) */
  readonly leaseSeconds?: number;
  /**
   * Folder under which the sort's run files go, in `ccexport-reconcile-<run id>` (run-scratch.ts).
   * @default the system's temporary folder
   */
  readonly tmpDir?: string;
  /** Bytes of lines sorted in memory before a run file is written. @default 4 MiB */
  readonly sortBudgetBytes?: number;
  /**
   * After the deletion records are written, also rewrite `latest/<table>.<ext>` (as `--keep-latest`
   * does after a run), still under the export's lease; needs `loadFormat`. @default false
   */
  readonly keepLatest?: boolean;
  readonly loadFormat?: (name: FileFormat['name']) => Promise<FileFormat>;
}

/** The record a row id belongs to: the id up to its first `.` (DET's ids of child rows). */
function recordKey(id: string): string {
  const dot = id.indexOf('.');
  return dot > 0 ? id.slice(0, dot) : id;
}

/**
 * The sort line of an id HQ lists, as `addLiveIds` adds it: runs of these lines sorted elsewhere (the
 * sliced reconcile's staged runs) join the comparison through `addSortedLiveRun`.
 */
export function liveIdLine(id: string): string {
  return `${escapeField(recordKey(id))}\th\t${escapeField(id)}`;
}

function isMarked(cell: Cell | undefined): boolean {
  return cell === true || cell === 'True' || cell === 'true' || cell === 1 || cell === '1';
}

interface PendingDeletions {
  readonly table: string;
  readonly key: string;
  readonly upload: ObjectUpload;
  readonly rows: number;
}

interface Version {
  ordinal: number;
  writtenAt: number;
  marked: boolean;
}

/** What `commitFileReconcile` records: the reconcile and its completed, still unlisted, deletions objects. */
export interface FileReconcileCommit {
  readonly runId: string;
  readonly checkpointKey: string;
  readonly project: string;
  /** When the reconcile started (ISO 8601): the manifest's `startedAt`. */
  readonly startedAt: string;
  /** The format of the runs reconciled (the newest manifest's). */
  readonly outputFormat: FileFormat['name'];
  readonly deletionMode: Exclude<DeletionMode, 'ignore'>;
  /** Every table's deletions object, completed (stored whole) and listed by no manifest yet. */
  readonly deletions: readonly ManifestObject[];
}

/**
 * Commits a reconcile of a folder or S3 output: one write, `manifests/<run-id>.json` (`"task":
 * "reconcile"`), lists the deletions objects of every table at once. Before this write no reader
 * applies any of them (`listedDeletions`); after it, all of them. Call it last, once every deletions
 * object is completed (a sliced reconcile: at its last slice, with the objects its slices completed);
 * a caller killed before it leaves the output as it was, and the objects it completed are orphans that
 * `removeUncommittedDeletions` removes on the next reconcile.
 *
 * Why one write is enough: a single S3 PutObject is atomic (a reader gets the old object or the whole
 * new one, never a part; S3 "Data consistency model": "Updates to a single key are atomic") and S3 has
 * strong read-after-write consistency for PUTs, DELETEs and LISTs since December 2020, so a reader
 * that lists `manifests/` after the PUT returned sees the manifest and every object it names (each
 * completed before). There are no atomic writes across keys, hence one key. A folder gets the same
 * from `rename(2)` of the fully written temporary file (`LocalObjectStore.put`).
 */
export async function commitFileReconcile(
  store: ObjectStore,
  commit: FileReconcileCommit,
): Promise<RunManifest> {
  const manifest: RunManifest = {
    format: 'ccexport-manifest/1',
    runId: commit.runId,
    checkpointKey: commit.checkpointKey,
    project: commit.project,
    snapshot: false,
    outputFormat: commit.outputFormat,
    startedAt: commit.startedAt,
    updatedAt: new Date().toISOString(),
    complete: true,
    task: 'reconcile',
    tables: [],
    objects: [],
    deletions: commit.deletions,
    deletionMode: commit.deletionMode,
  };
  await store.put(manifestKey(commit.runId), `${JSON.stringify(manifest, null, 2)}\n`, 'application/json');
  return manifest;
}

/**
 * Removes the deletions objects of `tables` that a run or reconcile of `runIds` left unlisted (killed
 * after completing them, before its manifest listed them). Readers ignore such objects anyway; this
 * only tidies. Call it holding the export's lease, with run ids of that export only (its manifests'
 * runs, and the run whose lease was taken over): no live run can then still be about to list one. A
 * deletions object of another export sharing the prefix is never touched. Returns the keys removed.
 */
export async function removeUncommittedDeletions(
  store: ObjectStore,
  manifests: readonly RunManifest[],
  tables: readonly string[],
  runIds: ReadonlySet<string>,
): Promise<string[]> {
  if (runIds.size === 0) return [];
  const listed = new Set(manifests.flatMap((m) => (m.deletions ?? []).map((d) => d.key)));
  const removed: string[] = [];
  for (const table of new Set(tables)) {
    for (const key of await store.list(`${tableFolder(table)}/deletions/`)) {
      if (listed.has(key)) continue;
      const part = /-(\d{4})\.csv$/.exec(key);
      const parts = part ? [1, Number(part[1])] : [1];
      const orphan = [...runIds].some((runId) =>
        parts.some((n) => deletionsObjectKey(table, runId, n) === key),
      );
      if (!orphan) continue;
      await store.delete(key);
      removed.push(key);
    }
  }
  return removed;
}

export class FileReconcileTarget implements ReconcileTarget {
  private lease: ExportLease | undefined;
  private run: { runId: string; checkpointKey: string; project: string } | undefined;
  private startedAt = '';
  /** The runs of the reconciled project, compared with HQ. */
  private manifests: RunManifest[] = [];
  /** Every manifest under the output: their `deletions` are the deletion records that count. */
  private allManifests: RunManifest[] = [];
  private folder: string | undefined;
  private live: SortedLines | undefined;
  private sorts = 0;
  private pending: PendingDeletions[] = [];

  constructor(
    private readonly store: ObjectStore,
    private readonly options: FileReconcileOptions = {},
  ) {}

  private requireOpen(): { runId: string; checkpointKey: string; project: string } {
    if (!this.run || !this.folder)
      throw new SinkStateError('reconcile target used before begin or after commit');
    return this.run;
  }

  async begin(run: ReconcileRun): Promise<void> {
    const all = await readManifests(this.store);
    this.allManifests = all;
    this.manifests = all.filter((m) => m.project === run.project);
    if (this.manifests.length === 0)
      throw new SinkConfigError(
        `${this.store.uri('manifests/')} has no run of project "${run.project}" to reconcile: is this the export's output?`,
      );
    for (const m of this.manifests)
      if (!READABLE_FORMATS.includes(m.outputFormat))
        throw new SinkConfigError(
          `Run ${m.runId} wrote ${m.outputFormat}, which cannot be read back; reconcile reads ${READABLE_FORMATS.join(', ')} outputs`,
        );
    this.lease = new ExportLease(
      this.store,
      run.checkpointKey,
      run.project,
      run.runId,
      this.options.leaseSeconds ?? DEFAULT_LEASE_SECONDS,
    );
    await this.lease.acquire();
    this.lease.startHeartbeat();
    // Holding the export: what its killed runs and reconciles completed but never listed can go.
    const ownRuns = new Set(
      this.manifests.filter((m) => m.checkpointKey === run.checkpointKey).map((m) => m.runId),
    );
    const previous = this.lease.takeover?.previous.runId;
    if (previous) ownRuns.add(previous);
    await removeUncommittedDeletions(this.store, all, run.tables ?? [], ownRuns);
    this.run = { runId: run.runId, checkpointKey: run.checkpointKey, project: run.project };
    this.startedAt = new Date().toISOString();
    // The killed holder's sort runs and downloads, when it ran on this machine (see run-scratch.ts).
    const scratch = this.options.tmpDir ?? tmpdir();
    if (previous && previous !== run.runId) await removeRunScratch(scratch, previous);
    this.folder = await runScratchFolder(scratch, 'reconcile', run.runId);
  }

  private newSort(): SortedLines {
    return new SortedLines(this.folder!, `sort-${this.sorts++}`, this.options.sortBudgetBytes);
  }

  async addLiveIds(ids: readonly string[]): Promise<void> {
    this.requireOpen();
    this.lease!.throwIfLost();
    this.live ??= this.newSort();
    await this.live.add(ids.map(liveIdLine));
  }

  /**
   * Ids HQ listed, as a file of `liveIdLine` lines sorted as `SortedLines` sorts (gzip-compressed):
   * they join the ids compared at the next `settle` without being sorted again. The file must stay
   * until that `settle` returns.
   */
  addSortedLiveRun(path: string): void {
    this.requireOpen();
    this.live ??= this.newSort();
    this.live.addSortedRun(path, { gzip: true });
  }

  async settle(
    tables: readonly string[],
    _mode: Exclude<DeletionMode, 'ignore'>,
    deletedAt: Date,
    maxShare: number,
  ): Promise<TableReconcile[]> {
    this.requireOpen();
    const sort = this.live ?? this.newSort();
    this.live = undefined;
    const written = tables.map((table) =>
      this.manifests.some((m) => m.objects.some((o) => o.table === table)),
    );
    for (const [t, table] of tables.entries()) if (written[t]) await this.addTable(sort, t, table);

    // One pass over the groups: count each table's live rows, keep the gone ones in a sort of their own.
    const rows = tables.map(() => 0);
    const gone = tables.map(() => 0);
    const goneLines = this.newSort();
    let key: string | null = null;
    let hq = new Set<string>();
    let versions = tables.map(() => new Map<string, Version>());
    let deletions = tables.map(() => new Map<string, number>());
    const flush = async () => {
      const out: string[] = [];
      for (let t = 0; t < tables.length; t++) {
        for (const [id, version] of versions[t]!) {
          if (version.marked) continue;
          let at = deletions[t]!.get(id);
          for (let dot = id.indexOf('.'); dot > 0; dot = id.indexOf('.', dot + 1)) {
            const parent = deletions[t]!.get(id.slice(0, dot));
            if (parent !== undefined && (at === undefined || parent > at)) at = parent;
          }
          if (at !== undefined && at >= version.writtenAt) continue; // already hidden
          rows[t]! += 1;
          if (hq.has(id) || hq.has(recordKey(id))) continue;
          gone[t]! += 1;
          out.push(`${t}\t${escapeField(id)}`);
        }
      }
      if (out.length > 0) await goneLines.add(out);
    };
    for await (const line of sort.sorted()) {
      const fields = line.split('\t');
      const lineKey = fields[0]!;
      if (lineKey !== key) {
        if (key !== null) await flush();
        key = lineKey;
        hq = new Set();
        versions = tables.map(() => new Map());
        deletions = tables.map(() => new Map());
      }
      const id = unescapeField(fields[2]!);
      if (fields[1] === 'h') {
        hq.add(id);
      } else if (fields[1] === 'v') {
        const t = Number(fields[3]);
        const ordinal = Number(fields[4]);
        const current = versions[t]!.get(id);
        if (!current || ordinal > current.ordinal)
          versions[t]!.set(id, { ordinal, writtenAt: Number(fields[5]), marked: fields[6] === '1' });
      } else {
        const t = Number(fields[3]);
        const at = Number(fields[4]);
        deletions[t]!.set(id, Math.max(at, deletions[t]!.get(id) ?? Number.NEGATIVE_INFINITY));
      }
    }
    if (key !== null) await flush();

    for (const [t, table] of tables.entries()) {
      const total = rows[t]!;
      if (total > 0 && gone[t]! / total > maxShare)
        throw new ReconcileGuardError(table, gone[t]!, total, maxShare);
    }
    // Every table passed the guard: write their deletion records, completed only at commit.
    const at = deletedAt.toISOString();
    const uploads = new Map<number, ObjectUpload>();
    for await (const line of goneLines.sorted()) {
      const tab = line.indexOf('\t');
      const t = Number(line.slice(0, tab));
      let upload = uploads.get(t);
      if (!upload) {
        const key = deletionsObjectKey(tables[t]!, this.run!.runId, 1);
        upload = this.store.openUpload(key, 'text/csv; charset=utf-8');
        uploads.set(t, upload);
        this.pending.push({ table: tables[t]!, key, upload, rows: gone[t]! });
        await upload.write(`${DELETIONS_HEADER.join(',')}\r\n`);
      }
      await upload.write(`${csvField(unescapeField(line.slice(tab + 1)))},${at},deleted\r\n`);
    }
    return tables.map((table, t) => ({ table, rows: rows[t]!, gone: gone[t]! }));
  }

  /** The table's versions and deletion records, as sort lines keyed by record id. */
  private async addTable(sort: SortedLines, t: number, table: string): Promise<void> {
    for (const { key } of listedDeletions(this.allManifests, table)) {
      const { headings, rows } = await readObjectRows(this.store, key, 'csv');
      const idAt = headings.indexOf('id');
      const timeAt = headings.indexOf('deleted_at');
      let batch: string[] = [];
      for await (const row of rows) {
        const id = row[idAt];
        const at = deletionTime(String(row[timeAt] ?? ''));
        if (typeof id === 'string' && id !== '' && !Number.isNaN(at))
          batch.push(`${escapeField(recordKey(id))}\td\t${escapeField(id)}\t${t}\t${at}`);
        if (batch.length >= 1000) {
          await sort.add(batch);
          batch = [];
        }
      }
      await sort.add(batch);
    }
    let ordinal = 0;
    for (const manifest of this.manifests) {
      const writtenAt = Date.parse(manifest.startedAt);
      const objects = manifest.objects.filter((o) => o.table === table).sort((a, b) => a.part - b.part);
      for (const object of objects) {
        this.lease!.throwIfLost();
        const read = await readObjectRows(this.store, object.key, manifest.outputFormat);
        const idAt = read.headings.indexOf('id');
        if (idAt < 0) {
          // A table without ids has no record to compare.
          for await (const _ of read.rows) ordinal++;
          continue;
        }
        const markAt = read.headings.indexOf(DELETED_COLUMN);
        let batch: string[] = [];
        for await (const row of read.rows) {
          const id = row[idAt];
          if (id !== null && id !== undefined && id !== '') {
            const text = String(id);
            batch.push(
              `${escapeField(recordKey(text))}\tv\t${escapeField(text)}\t${t}\t${ordinal}\t${writtenAt}\t${isMarked(row[markAt]) ? 1 : 0}`,
            );
          }
          ordinal++;
          if (batch.length >= 1000) {
            await sort.add(batch);
            batch = [];
          }
        }
        await sort.add(batch);
      }
    }
  }

  /**
   * Completes each table's deletions object (none listed yet, so no reader applies it), then commits
   * them all at once with `commitFileReconcile`; then `--keep-latest`, and the lease goes.
   */
  async commit(): Promise<void> {
    const run = this.requireOpen();
    this.lease!.throwIfLost();
    const deletions: ManifestObject[] = [];
    for (const p of this.pending) {
      const { bytes } = await p.upload.complete();
      deletions.push({
        table: p.table,
        key: p.key,
        uri: this.store.uri(p.key),
        part: 1,
        rows: p.rows,
        bytes,
      });
    }
    this.pending = [];
    this.lease!.throwIfLost();
    const newest = this.manifests.at(-1)!;
    await commitFileReconcile(this.store, {
      ...run,
      startedAt: this.startedAt,
      outputFormat: newest.outputFormat,
      deletionMode: newest.deletionMode === 'mark' ? 'mark' : 'remove',
      deletions,
    });
    try {
      if (this.options.keepLatest && this.options.loadFormat) {
        const { writeLatest } = await import('./latest');
        await writeLatest({ source: this.store, loadFormat: this.options.loadFormat });
      }
    } finally {
      await this.close();
    }
  }

  async abort(): Promise<void> {
    const pending = this.pending;
    this.pending = [];
    await Promise.allSettled(pending.map((p) => p.upload.abort()));
    await this.close();
  }

  private async close(): Promise<void> {
    const folder = this.folder;
    this.folder = undefined;
    this.run = undefined;
    this.live = undefined;
    if (folder) await rm(folder, { recursive: true, force: true }).catch(() => undefined);
    await this.lease?.release().catch(() => undefined);
    this.lease = undefined;
  }
}

import { ExportLease, ObjectCheckpointStore } from '../checkpoints/object-store';
import type { Cell, DataType, TableSpec } from '../query/types';
import type { ValueKind } from '../query/value-kinds';
import { safeKeySegment, shortHash } from './cells';
import { ObjectStoreError, SinkConfigError, SinkError, SinkStateError } from './errors';
import { csvField } from './formats/csv';
import type { FileFormat, TableEncoder } from './formats/types';
import { ABANDONED_AFTER_MS, type ObjectStore, type ObjectUpload } from './store/types';
import type { ExportSink, RecordDeletion, RunContext, SourceCheckpoint } from './types';

/** One completed data object of a run, as the manifest lists it. */
export interface ManifestObject {
  readonly table: string;
  /** Key relative to the output prefix. */
  readonly key: string;
  readonly uri: string;
  /** 1 for `<run-id>.<ext>`, n for `<run-id>-000n.<ext>` (written after the (n-1)th commit). */
  readonly part: number;
  readonly rows: number;
  readonly bytes: number;
}

/** `<prefix>/manifests/<run-id>.json`, rewritten at every commit and at the end of the run. */
export interface RunManifest {
  readonly format: 'ccexport-manifest/1';
  readonly runId: string;
  readonly checkpointKey: string;
  readonly project: string;
  readonly snapshot: boolean;
  readonly outputFormat: FileFormat['name'];
  readonly startedAt: string;
  readonly updatedAt: string;
  /** True once `finish` ran; false while running or after a failed run (then only committed parts are listed). */
  readonly complete: boolean;
  readonly tables: readonly {
    name: string;
    headings: readonly string[];
    /** The query's Data Types (absent in manifests written before they were recorded). */
    dataTypes?: readonly (DataType | null)[];
    /** What the query file says each column's values are (`TableSpec.valueKinds`); absent when it says nothing. */
    valueKinds?: readonly (ValueKind | null)[];
  }[];
  readonly objects: readonly ManifestObject[];
  /**
   * `<table>/deletions/<run-id>.csv` objects of the run (csv `id,deleted_at,reason` whatever the output
   * format), present when the run tracked deletions (`remove` or `mark`). Apply them after the run's
   * `objects` (a file run commits once, at its end). Absent in manifests of older versions.
   */
  readonly deletions?: readonly ManifestObject[];
  /** The run's deletion mode. Absent in manifests of older versions (they ignored deletions). */
  readonly deletionMode?: 'remove' | 'mark' | 'ignore';
  /**
   * `reconcile` for a `ccexport reconcile` (no tables or data objects: only the `deletions` of records
   * HQ no longer lists). Absent for export runs.
   */
  readonly task?: 'reconcile';
  /** The config fingerprint of the HQ export the run ran (`configFingerprint`). Absent for a query file. */
  readonly configFingerprint?: string;
}

export const DEFAULT_LEASE_SECONDS = 120;

export interface FileSinkOptions {
  readonly maxRowsPerSheet?: number;
  /**
   * How long the run's lease outlives the last renewal. A running run renews it every third of that
   * (heartbeat), so this is how long a run that crashed on another host blocks the next run; a run
   * that died on this host is taken over at once. @default 120
   */
  readonly leaseSeconds?: number;
  /**
   * A multipart upload (S3) or a temporary file without a live writer on this machine (folder) older
   * than this, in the run's folders, was left by a killed run and is removed when the next run starts.
   * @default a day (`ABANDONED_AFTER_MS`)
   */
  readonly abandonedAfterMs?: number;
  /** parquet: rows per row group. @default 10000 */
  readonly parquetRowGroupRows?: number;
  /**
   * After each completed run, also write `latest/<table>.<ext>`: the current state of each table
   * (newest version per id, deletions applied; see `latest.ts`), each object replaced whole (S3:
   * one completed upload; folder: written aside and renamed). It reads every run's objects, so it
   * costs a read of the whole history per run. @default false
   */
  readonly keepLatest?: boolean;
}

interface OpenPart {
  readonly table: TableSpec;
  readonly key: string;
  readonly part: number;
  readonly upload: ObjectUpload;
  readonly encoder: TableEncoder;
  rows: number;
}

/**
 * Top-level folders that hold the product's own objects (run manifests; checkpoints and leases; the `latest/`
 * consolidated tables; the ids a sliced reconcile staged, which the exports bucket expires).
 * Compared without case: a folder on macOS or Windows does not tell `Manifests` from `manifests`.
 */
export const BOOKKEEPING_FOLDERS = ['manifests', 'checkpoints', 'latest', '_reconcile'] as const;

/**
 * The folder of a table's data objects. A table named like a bookkeeping folder (`manifests`,
 * `Checkpoints`) gets the hash suffix that unsafe names get, so no table name reaches the manifests
 * or the checkpoints: a table `manifests` once wrote its rows to `manifests/<run-id>.json`, where the
 * run's manifest then overwrote them.
 */
export function tableFolder(table: string): string {
  const folder = safeKeySegment(table);
  return (BOOKKEEPING_FOLDERS as readonly string[]).includes(folder.toLowerCase())
    ? `${folder}-${shortHash(table)}`
    : folder;
}

/**
 * `<table>/<run-id>[-000n].<ext>`, or with `partition` (a Hive-style `name=value` folder, e.g.
 * `run_date=2024-05-01`) `<table>/<partition>/<run-id>[-000n].<ext>`.
 */
export function dataObjectKey(
  table: string,
  runId: string,
  part: number,
  extension: string,
  partition?: string,
): string {
  const name = part === 1 ? runId : `${runId}-${String(part).padStart(4, '0')}`;
  const folder = partition === undefined ? '' : `${partition}/`;
  return `${tableFolder(table)}/${folder}${safeKeySegment(name)}.${extension}`;
}

/** The partition folder of a run's Parquet objects: the UTC date the run started. */
export function runDatePartition(startedAt: string): string {
  return `run_date=${startedAt.slice(0, 10)}`;
}

export function deletionsObjectKey(table: string, runId: string, part: number): string {
  const name = part === 1 ? runId : `${runId}-${String(part).padStart(4, '0')}`;
  return `${tableFolder(table)}/deletions/${safeKeySegment(name)}.csv`;
}

/** Header of a deletions object. */
export const DELETIONS_HEADER = ['id', 'deleted_at', 'reason'] as const;

/**
 * The lines of one table's deletions file for these records: the record id (its own row, and by the
 * reassembly rule every row whose id starts with `<id>.`), then each id of the rows its archived
 * version produced (child rows too), so a reader matching exact ids finds them.
 */
export function deletionLines(table: string, deletions: readonly RecordDeletion[]): string {
  let out = '';
  for (const d of deletions) {
    const at = d.deletedAt.toISOString();
    out += `${csvField(d.id)},${at},${d.reason}\r\n`;
    for (const rowId of d.rowIds?.[table] ?? [])
      if (rowId !== d.id) out += `${csvField(rowId)},${at},${d.reason}\r\n`;
  }
  return out;
}

/**
 * The deletion objects of a table that count: those a manifest lists (`deletions`), oldest run first.
 * A manifest is the commit point of what it lists (one object, written whole), so a deletions object
 * that no manifest lists (a run or reconcile killed before it wrote its manifest) is ignored by every
 * reader, as an unlisted data object is.
 */
export function listedDeletions(manifests: readonly RunManifest[], table: string): ManifestObject[] {
  const seen = new Set<string>();
  const out: ManifestObject[] = [];
  for (const manifest of manifests)
    for (const object of manifest.deletions ?? [])
      if (object.table === table && !seen.has(object.key)) {
        seen.add(object.key);
        out.push(object);
      }
  return out;
}

export function manifestKey(runId: string): string {
  return `manifests/${safeKeySegment(runId)}.json`;
}

/** Runs one step of the bookkeeping; a store failure in it is reported with the step's name first. */
async function step<T>(what: string, action: () => Promise<T>): Promise<T> {
  try {
    return await action();
  } catch (error) {
    if (error instanceof ObjectStoreError)
      throw new ObjectStoreError(`${what}: ${error.message}`, { cause: error.cause ?? error });
    throw error;
  }
}

/**
 * Files in a folder or under an S3 prefix: `<table>/<run-id>[-000n].<ext>` per table and part, a
 * manifest per run and a checkpoint object per export. `commit` completes the open objects, rewrites
 * the manifest, and only then writes the checkpoint, so a checkpoint never names an incomplete object.
 */
export class FileSink implements ExportSink {
  private readonly checkpoints: ObjectCheckpointStore;
  private tables = new Map<string, TableSpec>();
  private open = new Map<string, OpenPart>();
  private partCount = new Map<string, number>();
  /** Rows written per table in this run, over all parts (parquet's `_seq` continues across parts). */
  private rowCount = new Map<string, number>();
  private done: ManifestObject[] = [];
  /** Open deletions objects by table, and the completed ones. */
  private deletionsOpen = new Map<string, OpenPart>();
  private deletionsDone: ManifestObject[] = [];
  private run: RunContext | undefined;
  private lease: ExportLease | undefined;
  private startedAt = '';
  private state: 'new' | 'running' | 'closed' = 'new';

  constructor(
    private readonly store: ObjectStore,
    private readonly format: FileFormat,
    private readonly options: FileSinkOptions = {},
  ) {
    this.checkpoints = new ObjectCheckpointStore(store);
  }

  async begin(tables: readonly TableSpec[], run: RunContext): Promise<void> {
    if (this.state !== 'new') throw new SinkStateError(`begin called twice (run ${run.runId})`);
    const seen = new Map<string, string>();
    const folders: string[] = [];
    for (const table of tables) {
      const folder = tableFolder(table.name);
      const other = seen.get(folder.toLowerCase());
      if (other !== undefined) {
        throw new SinkConfigError(
          `Tables "${other}" and "${table.name}" would share the folder "${folder}"; rename one of them`,
        );
      }
      seen.set(folder.toLowerCase(), table.name);
      folders.push(folder);
      this.tables.set(table.name, table);
    }
    this.run = run;
    this.startedAt = new Date().toISOString();
    this.lease = new ExportLease(
      this.store,
      run.checkpointKey,
      run.project,
      run.runId,
      this.options.leaseSeconds ?? DEFAULT_LEASE_SECONDS,
    );
    await step("Taking the export's lease", () => this.lease!.acquire());
    // Holding the export now: what a killed run of it left in its folders can go. Best effort: a
    // clean-up that fails (no permission to list uploads) never stops the run.
    await this.store
      .removeAbandoned?.(
        [...folders, ...BOOKKEEPING_FOLDERS],
        this.options.abandonedAfterMs ?? ABANDONED_AFTER_MS,
      )
      .catch(() => []);
    // Renewed on a timer, not only at commits: a CLI file run commits only at its end.
    this.lease.startHeartbeat();
    this.state = 'running';
  }

  private requireRunning(what: string): RunContext {
    if (this.state !== 'running' || !this.run)
      throw new SinkStateError(`${what} called outside a run (state ${this.state})`);
    return this.run;
  }

  private openPart(table: TableSpec): OpenPart {
    const run = this.requireRunning('writeRows');
    const part = (this.partCount.get(table.name) ?? 0) + 1;
    this.partCount.set(table.name, part);
    const partition = this.format.partitionByRunDate ? runDatePartition(this.startedAt) : undefined;
    const key = dataObjectKey(table.name, run.runId, part, this.format.extension, partition);
    const upload = this.store.openUpload(key, this.format.contentType);
    const encoder = this.format.open(table, upload, {
      maxRowsPerSheet: this.options.maxRowsPerSheet,
      parquetRowGroupRows: this.options.parquetRowGroupRows,
      run: {
        runId: run.runId,
        exportedAt: new Date(this.startedAt),
        firstSequence: this.rowCount.get(table.name) ?? 0,
      },
    });
    const open: OpenPart = { table, key, part, upload, encoder, rows: 0 };
    this.open.set(table.name, open);
    return open;
  }

  async writeRows(table: string, rows: readonly Cell[][]): Promise<void> {
    this.requireRunning('writeRows');
    // Another run has the export now: stop instead of uploading rows no checkpoint will cover.
    this.lease!.throwIfLost();
    const spec = this.tables.get(table);
    if (!spec) throw new SinkConfigError(`writeRows for table "${table}", which begin did not declare`);
    const part = this.open.get(table) ?? this.openPart(spec);
    await part.encoder.writeRows(rows);
    part.rows += rows.length;
    this.rowCount.set(table, (this.rowCount.get(table) ?? 0) + rows.length);
  }

  /**
   * Lists records HQ archived or deleted in `<table>/deletions/<run-id>.csv` (one per table and commit,
   * csv whatever the output format), for the manifest. Nothing with the `ignore` mode.
   */
  async recordDeletions(tables: readonly string[], deletions: readonly RecordDeletion[]): Promise<void> {
    const run = this.requireRunning('recordDeletions');
    if ((run.deletions ?? 'ignore') === 'ignore' || deletions.length === 0) return;
    this.lease!.throwIfLost();
    for (const name of tables) {
      const table = this.tables.get(name);
      if (!table) continue;
      let open = this.deletionsOpen.get(name);
      if (!open) {
        const part = this.deletionsDone.filter((o) => o.table === name).length + 1;
        const key = deletionsObjectKey(name, run.runId, part);
        const upload = this.store.openUpload(key, 'text/csv; charset=utf-8');
        open = { table, key, part, upload, encoder: NO_ENCODER, rows: 0 };
        this.deletionsOpen.set(name, open);
        await upload.write(`${DELETIONS_HEADER.join(',')}\r\n`);
      }
      const lines = deletionLines(name, deletions);
      await open.upload.write(lines);
      open.rows += lines.split('\r\n').length - 1;
    }
  }

  /** Completes every open object (in table order) and records it for the manifest. */
  private async completeOpen(): Promise<void> {
    for (const [name, part] of this.deletionsOpen) {
      const { bytes } = await part.upload.complete();
      this.deletionsOpen.delete(name);
      this.deletionsDone.push({
        table: part.table.name,
        key: part.key,
        uri: this.store.uri(part.key),
        part: part.part,
        rows: part.rows,
        bytes,
      });
    }
    for (const [name, part] of this.open) {
      await part.encoder.end();
      const { bytes } = await part.upload.complete();
      this.open.delete(name);
      this.done.push({
        table: part.table.name,
        key: part.key,
        uri: this.store.uri(part.key),
        part: part.part,
        rows: part.rows,
        bytes,
      });
    }
  }

  private async writeManifest(complete: boolean): Promise<string> {
    const run = this.run!;
    const manifest: RunManifest = {
      format: 'ccexport-manifest/1',
      runId: run.runId,
      checkpointKey: run.checkpointKey,
      project: run.project,
      snapshot: run.snapshot,
      outputFormat: this.format.name,
      startedAt: this.startedAt,
      updatedAt: new Date().toISOString(),
      complete,
      tables: [...this.tables.values()].map((t) => ({
        name: t.name,
        headings: t.headings,
        dataTypes: t.dataTypes,
        ...(t.valueKinds ? { valueKinds: t.valueKinds } : {}),
      })),
      objects: this.done,
      ...(run.deletions && run.deletions !== 'ignore'
        ? { deletions: this.deletionsDone, deletionMode: run.deletions }
        : {}),
      ...(run.configFingerprint !== undefined ? { configFingerprint: run.configFingerprint } : {}),
    };
    const key = manifestKey(run.runId);
    await this.store.put(key, `${JSON.stringify(manifest, null, 2)}\n`, 'application/json');
    return key;
  }

  async commit(checkpoints: readonly SourceCheckpoint[]): Promise<void> {
    const run = this.requireRunning('commit');
    // Order is the guarantee: data objects complete → manifest → lease still ours → checkpoint.
    await this.completeOpen();
    const manifest = await step('Writing the run manifest', () => this.writeManifest(false));
    await step("Renewing the export's lease", () => this.lease!.renew());
    if (checkpoints.length > 0) {
      await step('Writing the checkpoint', () =>
        this.checkpoints.write(run.checkpointKey, checkpoints, { runId: run.runId, manifest }),
      );
    }
  }

  async finish(): Promise<void> {
    this.requireRunning('finish');
    // Every declared table gets at least a header-only object, so the manifest shows the full run.
    for (const table of this.tables.values()) {
      if (!this.partCount.has(table.name)) this.openPart(table);
    }
    await this.completeOpen();
    await step('Writing the run manifest', () => this.writeManifest(true));
    this.state = 'closed';
    try {
      // Under the lease: two runs must not replace latest/ at the same time.
      if (this.options.keepLatest) await this.writeLatestSnapshot();
    } finally {
      await step("Releasing the export's lease", () => this.lease!.release());
    }
  }

  private async writeLatestSnapshot(): Promise<void> {
    const { writeLatest } = await import('./latest');
    try {
      await writeLatest({ source: this.store, format: this.format });
    } catch (error) {
      throw new SinkError(
        `The run's data and manifest are complete, but ${this.store.uri('latest/')} was not refreshed: ${error instanceof Error ? error.message : String(error)}`,
        { cause: error },
      );
    }
  }

  async abort(_error: unknown): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    const parts = [...this.open.values(), ...this.deletionsOpen.values()];
    this.open.clear();
    this.deletionsOpen.clear();
    await Promise.allSettled(parts.map((p) => p.upload.abort()));
    await this.lease?.release().catch(() => undefined);
  }

  readCheckpoint(
    checkpointKey: string,
    project: string,
    dataSource: string,
  ): Promise<SourceCheckpoint | null> {
    return step('Reading the checkpoint', () => this.checkpoints.read(checkpointKey, project, dataSource));
  }
}

/** Deletions objects have no table encoder: their lines are written as they are. */
const NO_ENCODER: TableEncoder = {
  writeRows: async () => undefined,
  end: async () => undefined,
};

function parseManifest(body: string): RunManifest | null {
  try {
    const doc = JSON.parse(body) as RunManifest;
    return doc?.format === 'ccexport-manifest/1' ? doc : null;
  } catch {
    return null;
  }
}

/**
 * Every run manifest under the output, oldest first (by `startedAt`, then run id). Objects in
 * `manifests/` that are not manifests (rows of a table named `manifests` written by a version before
 * `tableFolder` kept it apart) are skipped.
 */
export async function readManifests(store: ObjectStore): Promise<RunManifest[]> {
  const keys = (await store.list('manifests/')).filter((k) => k.endsWith('.json'));
  const manifests: RunManifest[] = [];
  for (const key of keys) {
    const found = await store.get(key);
    const manifest = found ? parseManifest(found.body) : null;
    if (manifest) manifests.push(manifest);
  }
  return manifests.sort((a, b) => a.startedAt.localeCompare(b.startedAt) || a.runId.localeCompare(b.runId));
}

/**
 * Listing and changing the checkpoints an output keeps, outside a run: the core of `ccexport history` and
 * `ccexport checkpoint` (DET's `commcare-export-utils history` and `set-checkpoint-key`), the same for every
 * output that keeps checkpoints:
 *
 * - a PostgreSQL database (a server, or the embedded one in a folder): ours in `commcare_export_checkpoints`
 *   (one row per checkpoint key, project and data source), and DET's in `commcare_export_runs` when DET has
 *   written there (one row per table per batch; `commcare_export/checkpoint.py`);
 * - a folder or S3 prefix of files: `checkpoints/<key>.json` (one document per key, a checkpoint per project
 *   and data source), and the run manifests `manifests/<run-id>.json`. DET keeps no checkpoints for files.
 *
 * A change holds the same lock a run of the export holds (PostgreSQL: the export's advisory lock; files:
 * the export's lease), for the old key and the new, so it never races a run; a run in progress makes it
 * fail, naming the run where it can.
 *
 * DET's rows follow DET's own key rule (the one a takeover reads, `det-runs.ts`): a checkpoint key selects
 * the rows whose `key` is that key, or whose `key` is null and whose `query_file_md5` is that key (a run
 * without `--checkpoint-key` is keyed by its query file's MD5). Moving them sets `key` on all of them, so
 * DET continues from them with `--checkpoint-key NEW` and a DET run keyed by the old key or MD5 starts
 * over, as ours does. (DET's `set-checkpoint-key` sets the key on the latest row per table only, and leaves
 * the older rows of the MD5 behind.) Resetting deletes them, and returns them so the caller can show them.
 */
import { randomUUID } from 'node:crypto';
import type { RunManifest } from '../sinks/file-sink';
import type { SqlConnection } from '../sinks/postgres/connection';
import { qualified } from '../sinks/postgres/naming';
import { DET_CHECKPOINT_TABLE } from '../sinks/postgres/reserved';
import type { ObjectStore } from '../sinks/store/types';
import type { SourceCheckpoint } from '../sinks/types';
import { ExportLease, ObjectCheckpointStore } from './object-store';
import { CHECKPOINT_TABLE } from './postgres';

/** One checkpoint of ours: where the next run of one data source starts. */
export interface CheckpointEntry {
  readonly checkpointKey: string;
  readonly project: string;
  readonly dataSource: string;
  readonly tables: readonly string[];
  readonly indexedOn: string | null;
  readonly writtenAt: string;
  /** The run that wrote it, where known. */
  readonly runId: string;
  /** The config fingerprint the run recorded with it (an HQ export's), where it recorded one. */
  readonly configFingerprint?: string;
}

/** A row of DET's `commcare_export_runs`. */
export interface DetRunEntry {
  readonly id: string;
  /** `key`, else `query_file_md5`: the checkpoint key a run of ours would look it up by. */
  readonly checkpointKey: string;
  readonly key: string | null;
  readonly queryFileMd5: string | null;
  readonly queryFileName: string | null;
  readonly project: string | null;
  readonly commcare: string | null;
  readonly table: string | null;
  readonly dataSource: string | null;
  readonly sinceParam: string | null;
  readonly timeOfRun: string | null;
  readonly final: boolean | null;
  readonly paginationMode: string | null;
}

/** One run of a file output, from its manifest. */
export interface RunEntry {
  readonly runId: string;
  readonly checkpointKey: string;
  readonly project: string;
  readonly startedAt: string;
  readonly updatedAt: string;
  readonly complete: boolean;
  /**
   * `start-over` (`--start-over`: every record again), `incremental` (from the checkpoint, or from the
   * start when there was none), `reconcile` (`ccexport reconcile`).
   */
  readonly kind: 'start-over' | 'incremental' | 'reconcile';
  readonly rows: Readonly<Record<string, number>>;
  /** The config fingerprint of the HQ export the run ran, where its manifest records one. */
  readonly configFingerprint?: string;
}

export interface HistoryFilter {
  readonly checkpointKey?: string;
  readonly project?: string;
  /** DET's rows only: their `commcare` (the `--commcare-hq` DET was given). Ours do not record it. */
  readonly commcareHq?: string;
}

/** Whose checkpoints a change applies to. */
export type CheckpointOwners = 'ours' | 'det' | 'all';

export interface CheckpointChange {
  readonly checkpointKey: string;
  readonly project: string;
  /** Move to this key; without it, reset (remove). */
  readonly toKey?: string;
  readonly owners: CheckpointOwners;
  readonly commcareHq?: string;
}

export interface ChangeResult {
  readonly ours: readonly CheckpointEntry[];
  readonly det: readonly DetRunEntry[];
}

/** A change that cannot be made as asked (the new key is taken, nothing to change, ...). */
export class CheckpointChangeError extends Error {
  override readonly name = 'CheckpointChangeError';
}

/** The checkpoints of one output. */
export interface CheckpointAdmin {
  /** Where our checkpoints are, for headings: a table, or the `checkpoints/` folder or prefix. */
  readonly oursLocation: string;
  /** Ours, newest first; null when the output holds none at all (no table, no `checkpoints/`). */
  listOurs(filter: HistoryFilter): Promise<CheckpointEntry[] | null>;
  /** DET's rows, newest first; null when the output has no DET table (file outputs never do). */
  listDet(filter: HistoryFilter): Promise<DetRunEntry[] | null>;
  /** The runs, newest first; null when the output keeps no run list (PostgreSQL). */
  listRuns(filter: HistoryFilter): Promise<RunEntry[] | null>;
  change(change: CheckpointChange): Promise<ChangeResult>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------- PostgreSQL (server or embedded)

interface OurRow {
  checkpoint_key: string;
  project: string;
  data_source: string;
  tables: string[] | string;
  position: { indexedOn?: string | null } | string;
  written_at: Date | string;
  run_id: string | null;
  config_fingerprint?: string | null;
}

interface DetRow {
  id: string;
  key: string | null;
  query_file_md5: string | null;
  query_file_name: string | null;
  project: string | null;
  commcare: string | null;
  table_name: string | null;
  data_source: string | null;
  since_param: string | null;
  time_of_run: string | null;
  final: boolean | null;
  pagination_mode: string | null;
}

function json<T>(value: T | string): T {
  return typeof value === 'string' ? (JSON.parse(value) as T) : value;
}

function ourEntry(r: OurRow): CheckpointEntry {
  return {
    checkpointKey: r.checkpoint_key,
    project: r.project,
    dataSource: r.data_source,
    tables: json(r.tables),
    indexedOn: json(r.position).indexedOn ?? null,
    writtenAt: r.written_at instanceof Date ? r.written_at.toISOString() : String(r.written_at),
    runId: r.run_id ?? '',
    ...(r.config_fingerprint ? { configFingerprint: r.config_fingerprint } : {}),
  };
}

function detEntry(r: DetRow): DetRunEntry {
  return {
    id: r.id,
    checkpointKey: r.key ?? r.query_file_md5 ?? '',
    key: r.key,
    queryFileMd5: r.query_file_md5,
    queryFileName: r.query_file_name,
    project: r.project,
    commcare: r.commcare,
    table: r.table_name,
    dataSource: r.data_source,
    sinceParam: r.since_param,
    timeOfRun: r.time_of_run,
    final: r.final,
    paginationMode: r.pagination_mode,
  };
}

/** DET's key rule as SQL: `$n` is the checkpoint key. */
const detKeyIs = (n: number) => `(key = $${n} OR (key IS NULL AND query_file_md5 = $${n}))`;

/** PostgreSQL's advisory locks are 64-bit; the id is the one a run of the export takes (`exportLockId`). */
type LockId = (checkpointKey: string, project: string) => string;

export class SqlCheckpointAdmin implements CheckpointAdmin {
  readonly oursLocation: string;

  constructor(
    private readonly db: SqlConnection,
    private readonly exportLockId: LockId,
    private readonly schema = 'public',
  ) {
    this.oursLocation = CHECKPOINT_TABLE;
  }

  private async exists(table: string): Promise<boolean> {
    const { rows } = await this.db.query<{ name: string | null }>('SELECT to_regclass($1) AS name', [
      qualified(this.schema, table),
    ]);
    return Boolean(rows[0]?.name);
  }

  async listOurs(filter: HistoryFilter): Promise<CheckpointEntry[] | null> {
    if (!(await this.exists(CHECKPOINT_TABLE))) return null;
    const { rows } = await this.db.query<OurRow>(
      // The fingerprint through to_jsonb: a table an older version created has no `config` column.
      `SELECT checkpoint_key, project, data_source, tables, position, written_at, run_id,
              to_jsonb(c) -> 'config' ->> 'fingerprint' AS config_fingerprint
         FROM ${qualified(this.schema, CHECKPOINT_TABLE)} c
        WHERE ($1::text IS NULL OR checkpoint_key = $1) AND ($2::text IS NULL OR project = $2)
        ORDER BY written_at DESC, checkpoint_key, project, data_source`,
      [filter.checkpointKey ?? null, filter.project ?? null],
    );
    return rows.map(ourEntry);
  }

  async listDet(filter: HistoryFilter): Promise<DetRunEntry[] | null> {
    if (!(await this.exists(DET_CHECKPOINT_TABLE))) return null;
    const { rows } = await this.db.query<DetRow>(
      `SELECT id, key, query_file_md5, query_file_name, project, commcare, table_name, data_source,
              since_param, time_of_run, final, pagination_mode
         FROM ${qualified(this.schema, DET_CHECKPOINT_TABLE)}
        WHERE ($1::text IS NULL OR ${detKeyIs(1)}) AND ($2::text IS NULL OR project = $2)
          AND ($3::text IS NULL OR commcare = $3)
        ORDER BY time_of_run DESC NULLS LAST, table_name`,
      [filter.checkpointKey ?? null, filter.project ?? null, filter.commcareHq ?? null],
    );
    return rows.map(detEntry);
  }

  async listRuns(): Promise<null> {
    return null;
  }

  async change(change: CheckpointChange): Promise<ChangeResult> {
    const { checkpointKey: key, project, toKey } = change;
    const ours = change.owners !== 'det' && (await this.exists(CHECKPOINT_TABLE));
    const det = change.owners !== 'ours' && (await this.exists(DET_CHECKPOINT_TABLE));
    const oursTable = qualified(this.schema, CHECKPOINT_TABLE);
    const detTable = qualified(this.schema, DET_CHECKPOINT_TABLE);
    const hq = change.commcareHq ?? null;
    await this.db.query('BEGIN');
    try {
      // The lock a run of the export holds while it writes (released at COMMIT or ROLLBACK).
      for (const k of toKey === undefined ? [key] : [key, toKey]) {
        const { rows } = await this.db.query<{ locked: boolean }>(
          'SELECT pg_try_advisory_xact_lock($1::bigint) AS locked',
          [this.exportLockId(k, project)],
        );
        if (!rows[0]?.locked)
          throw new CheckpointChangeError(
            `a run of the export with checkpoint key "${k}" for project ${project} is in progress; ` +
              'change its checkpoints when it has finished',
          );
      }
      if (toKey !== undefined) {
        if (ours) {
          const taken = await this.db.query(
            `SELECT 1 FROM ${oursTable} WHERE checkpoint_key = $1 AND project = $2 LIMIT 1`,
            [toKey, project],
          );
          if (taken.rows.length > 0)
            throw new CheckpointChangeError(
              `key "${toKey}" already has checkpoints for project ${project} in ${CHECKPOINT_TABLE}; reset it first`,
            );
        }
        if (det) {
          const taken = await this.db.query(
            `SELECT 1 FROM ${detTable} WHERE project = $1 AND ${detKeyIs(2)} AND ($3::text IS NULL OR commcare = $3) LIMIT 1`,
            [project, toKey, hq],
          );
          if (taken.rows.length > 0)
            throw new CheckpointChangeError(
              `key "${toKey}" already has DET checkpoints for project ${project} in ${DET_CHECKPOINT_TABLE}; reset it first`,
            );
          // DET's migrations make `key` a varchar(255): say so rather than fail on PostgreSQL's error.
          const { rows } = await this.db.query<{ max: number | null }>(
            `SELECT character_maximum_length AS max FROM information_schema.columns
              WHERE table_schema = $1 AND table_name = $2 AND column_name = 'key'`,
            [this.schema, DET_CHECKPOINT_TABLE],
          );
          const max = rows[0]?.max ?? null;
          if (max !== null && toKey.length > max)
            throw new CheckpointChangeError(
              `key "${toKey}" is ${toKey.length} characters; DET's ${DET_CHECKPOINT_TABLE}.key holds at most ${max}`,
            );
        }
      }
      const movedOurs = ours
        ? (
            await this.db.query<OurRow>(
              toKey !== undefined
                ? `UPDATE ${oursTable} SET checkpoint_key = $3 WHERE checkpoint_key = $1 AND project = $2
                   RETURNING checkpoint_key, project, data_source, tables, position, written_at, run_id`
                : `DELETE FROM ${oursTable} WHERE checkpoint_key = $1 AND project = $2
                   RETURNING checkpoint_key, project, data_source, tables, position, written_at, run_id`,
              toKey !== undefined ? [key, project, toKey] : [key, project],
            )
          ).rows.map(ourEntry)
        : [];
      const detWhere = `project = $1 AND ${detKeyIs(2)} AND ($3::text IS NULL OR commcare = $3)`;
      const detColumns = `id, key, query_file_md5, query_file_name, project, commcare, table_name, data_source,
                          since_param, time_of_run, final, pagination_mode`;
      const movedDet = det
        ? (
            await this.db.query<DetRow>(
              toKey !== undefined
                ? `UPDATE ${detTable} SET key = $4 WHERE ${detWhere} RETURNING ${detColumns}`
                : `DELETE FROM ${detTable} WHERE ${detWhere} RETURNING ${detColumns}`,
              toKey !== undefined ? [project, key, hq, toKey] : [project, key, hq],
            )
          ).rows
            .map(detEntry)
            .sort((a, b) => (b.timeOfRun ?? '').localeCompare(a.timeOfRun ?? ''))
        : [];
      await this.db.query('COMMIT');
      return { ours: movedOurs, det: movedDet };
    } catch (error) {
      await this.db.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

// ---------------------------------------------------------------- folders and S3 prefixes

function checkpointEntries(sources: readonly SourceCheckpoint[], runs: readonly RunManifest[]) {
  return sources.map((s): CheckpointEntry => {
    // The run that wrote it: the latest run of the export that had started by then.
    const writer = runs
      .filter(
        (r) => r.checkpointKey === s.checkpointKey && r.project === s.project && r.startedAt <= s.writtenAt,
      )
      .at(-1);
    return {
      checkpointKey: s.checkpointKey,
      project: s.project,
      dataSource: s.dataSource,
      tables: s.tables,
      indexedOn: s.position.indexedOn ?? null,
      writtenAt: s.writtenAt,
      runId: writer?.runId ?? '',
      ...(s.configFingerprint ? { configFingerprint: s.configFingerprint } : {}),
    };
  });
}

const newestFirst = (a: { writtenAt: string }, b: { writtenAt: string }) =>
  b.writtenAt.localeCompare(a.writtenAt);

export interface ObjectCheckpointAdminOptions {
  /** Reads the run manifests (`readManifests` of the file sink). */
  readonly readManifests: (store: ObjectStore) => Promise<RunManifest[]>;
  /** How long the change holds the export's lease. @default 60 */
  readonly leaseSeconds?: number;
}

export class ObjectCheckpointAdmin implements CheckpointAdmin {
  readonly oursLocation: string;
  private readonly checkpoints: ObjectCheckpointStore;

  constructor(
    private readonly store: ObjectStore,
    private readonly options: ObjectCheckpointAdminOptions,
  ) {
    this.oursLocation = `${store.uri('checkpoints')}/`;
    this.checkpoints = new ObjectCheckpointStore(store);
  }

  /** Every checkpoint document's sources (the documents, not the leases beside them). */
  private async allSources(): Promise<SourceCheckpoint[] | null> {
    const keys = (await this.store.list('checkpoints/')).filter(
      (k) => k.endsWith('.json') && !k.endsWith('.lease.json'),
    );
    if (keys.length === 0) return null;
    const sources: SourceCheckpoint[] = [];
    for (const key of keys) {
      const found = await this.store.get(key);
      if (!found) continue;
      const doc = JSON.parse(found.body) as { format?: string; sources?: SourceCheckpoint[] };
      if (doc.format === 'ccexport-checkpoints/1' && Array.isArray(doc.sources)) sources.push(...doc.sources);
    }
    return sources;
  }

  async listOurs(filter: HistoryFilter): Promise<CheckpointEntry[] | null> {
    const sources = await this.allSources();
    if (sources === null) return null;
    const runs = await this.options.readManifests(this.store);
    return checkpointEntries(
      sources.filter(
        (s) =>
          (filter.checkpointKey === undefined || s.checkpointKey === filter.checkpointKey) &&
          (filter.project === undefined || s.project === filter.project),
      ),
      runs,
    ).sort(newestFirst);
  }

  async listDet(): Promise<null> {
    return null;
  }

  async listRuns(filter: HistoryFilter): Promise<RunEntry[]> {
    const runs = await this.options.readManifests(this.store);
    return runs
      .filter(
        (r) =>
          (filter.checkpointKey === undefined || r.checkpointKey === filter.checkpointKey) &&
          (filter.project === undefined || r.project === filter.project),
      )
      .reverse()
      .map((r) => {
        const rows: Record<string, number> = {};
        for (const t of r.tables) rows[t.name] = 0;
        for (const o of r.objects) rows[o.table] = (rows[o.table] ?? 0) + o.rows;
        return {
          runId: r.runId,
          checkpointKey: r.checkpointKey,
          project: r.project,
          startedAt: r.startedAt,
          updatedAt: r.updatedAt,
          complete: r.complete,
          kind: r.task === 'reconcile' ? 'reconcile' : r.snapshot ? 'start-over' : 'incremental',
          rows,
          ...(r.configFingerprint ? { configFingerprint: r.configFingerprint } : {}),
        };
      });
  }

  async change(change: CheckpointChange): Promise<ChangeResult> {
    if (change.owners === 'det') return { ours: [], det: [] };
    const { checkpointKey: key, project, toKey } = change;
    const runId = `checkpoint-${new Date().toISOString().replace(/[-:.]/g, '')}-${randomUUID().slice(0, 8)}`;
    const leases = (toKey === undefined ? [key] : [key, toKey]).map(
      (k) => new ExportLease(this.store, k, project, runId, this.options.leaseSeconds ?? 60),
    );
    const held: ExportLease[] = [];
    try {
      for (const lease of leases) {
        await lease.acquire();
        held.push(lease);
      }
      const runs = await this.options.readManifests(this.store);
      if (toKey === undefined) {
        const removed = await this.checkpoints.removeProject(key, project);
        return { ours: checkpointEntries(removed, runs), det: [] };
      }
      const from = await this.checkpoints.readDocument(key);
      const moving = from?.doc.sources.filter((s) => s.project === project) ?? [];
      if (!from || moving.length === 0) return { ours: [], det: [] };
      const target = await this.checkpoints.readDocument(toKey);
      if (target?.doc.sources.some((s) => s.project === project))
        throw new CheckpointChangeError(
          `key "${toKey}" already has checkpoints for project ${project} in ${this.oursLocation}; reset it first`,
        );
      // Written under the new key first: a failure between the two writes leaves the checkpoint under
      // both keys (the old one still works), never under neither.
      const moved = moving.map((s) => ({ ...s, checkpointKey: toKey }));
      await this.checkpoints.write(toKey, moved, { runId: from.doc.runId, manifest: from.doc.manifest });
      await this.checkpoints.removeProject(key, project);
      return { ours: checkpointEntries(moving, runs), det: [] };
    } finally {
      for (const lease of held.reverse()) await lease.release().catch(() => undefined);
    }
  }

  async close(): Promise<void> {}
}

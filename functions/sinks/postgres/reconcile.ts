/**
 * The PostgreSQL side of `ccexport reconcile` (server and embedded): HQ's ids are COPY'd into a
 * temporary table as they arrive, and PostgreSQL compares them with each table (an anti-join), so the
 * exporter holds one page of ids at a time. One transaction from the first id to the last table: a
 * reconcile killed at any moment leaves every table as it was.
 */
import type { ReconcileRun, StagedReconcileTarget, TableReconcile } from '../../export/reconcile';
import { ReconcileGuardError } from '../../export/reconcile';
import { ConcurrentRunError, SinkStateError } from '../errors';
import { DELETED_AT_COLUMN, DELETED_COLUMN, type DeletionMode } from '../types';
import type { SqlConnection } from './connection';
import { pgName, qualified, quoteIdent } from './naming';
import { refuseForeignTables } from './ownership';
import { RECONCILE_IDS_TABLE } from './reserved';
import { exportLockId } from './sink';

const LIVE = 'pg_temp.ccexport_live_ids';

/**
 * Ids listed by the earlier slices of a sliced reconcile (the Lambda's: one invocation lasts at most 15
 * minutes), one row per id as listed (repeats allowed), kept until the reconcile's final transaction
 * compares and deletes them. A table of ours, like `commcare_export_checkpoints`.
 */
export const STAGING_TABLE = RECONCILE_IDS_TABLE;

/** Staged ids older than this belong to an abandoned reconcile; the next reconcile deletes them. */
const STALE_STAGING_DAYS = 7;

/** Identifies one sliced reconcile. */
export interface StagingRun {
  readonly runId: string;
  readonly checkpointKey: string;
  readonly project: string;
}

function csvQuoted(value: string): string {
  // Every field quoted: COPY then reads a lone `\.` or an empty id as text, never as end or NULL.
  return `"${value.replaceAll('"', '""')}"`;
}

export class PostgresReconcileTarget implements StagedReconcileTarget {
  private db: SqlConnection | undefined;
  private lockId: string | undefined;

  constructor(
    private readonly connect: () => Promise<SqlConnection>,
    private readonly options: { readonly schema?: string; readonly description?: string } = {},
  ) {}

  private get schema(): string {
    return this.options.schema ?? 'public';
  }

  private requireOpen(): SqlConnection {
    if (!this.db) throw new SinkStateError('reconcile target used before begin or after commit');
    return this.db;
  }

  /** `tables`: every table the reconcile may change; one that ccexport did not create is refused (ownership.ts). */
  async begin(run: ReconcileRun): Promise<void> {
    const db = await this.connect();
    this.db = db;
    const lockId = exportLockId(run.checkpointKey, run.project);
    const { rows } = await db.query<{ locked: boolean }>(
      'SELECT pg_try_advisory_lock($1::bigint) AS locked',
      [lockId],
    );
    if (!rows[0]?.locked) {
      this.db = undefined;
      await db.close().catch(() => undefined);
      throw new ConcurrentRunError(
        `A run of export "${run.checkpointKey}" for project "${run.project}" is writing to ${this.options.description ?? 'the database'}; ` +
          'the reconcile stops without changing anything (try again when it has finished)',
      );
    }
    this.lockId = lockId;
    await db.query(`SET TIME ZONE 'UTC'`);
    if (run.tables) {
      try {
        await refuseForeignTables(
          db,
          this.schema,
          run.tables.map((name) => ({ name, pgTable: pgName(name) })),
          this.options.description ?? 'the database',
        );
      } catch (error) {
        await this.close();
        throw error;
      }
    }
    await db.query('BEGIN');
    // No key: HQ may list an id twice (a record re-indexed during the listing).
    await db.query(`CREATE TEMP TABLE ccexport_live_ids (id text) ON COMMIT DROP`);
  }

  async addLiveIds(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    let body = '';
    for (const id of ids) body += `${csvQuoted(id)}\n`;
    await this.requireOpen().copyCsv(`${LIVE} (id)`, [Buffer.from(body, 'utf8')]);
  }

  private staging: SqlConnection | undefined;

  private get stagingTable(): string {
    return qualified(this.schema, STAGING_TABLE);
  }

  private get createStagingTable(): string {
    return (
      `CREATE TABLE IF NOT EXISTS ${this.stagingTable} (checkpoint_key text NOT NULL, project text NOT NULL, ` +
      'run_id text NOT NULL, source integer NOT NULL, id text NOT NULL, staged_at timestamptz NOT NULL DEFAULT now())'
    );
  }

  private async stagingConnection(): Promise<SqlConnection> {
    if (!this.staging) {
      const db = await this.connect();
      await db.query(this.createStagingTable);
      // A table made by a version without `staged_at` gets it (its rows count as staged now). Looked up
      // first: ALTER TABLE waits for every transaction that uses the table, even when it changes nothing.
      const { rows } = await db.query<{ found: boolean }>(
        'SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ' +
          "AND column_name = 'staged_at') AS found",
        [this.schema, STAGING_TABLE],
      );
      if (!rows[0]?.found)
        await db.query(
          `ALTER TABLE ${this.stagingTable} ADD COLUMN IF NOT EXISTS staged_at timestamptz NOT NULL DEFAULT now()`,
        );
      await db.query(
        `CREATE INDEX IF NOT EXISTS ${quoteIdent(`${STAGING_TABLE}_run`)} ON ${this.stagingTable} (run_id, source)`,
      );
      this.staging = db;
    }
    return this.staging;
  }

  /**
   * The first slice of a reconcile: forgets what a failed earlier attempt of this reconcile staged, and
   * what abandoned reconciles of the export staged more than a week ago. Ids another reconcile of the
   * export staged lately stay: it may still be listing (a reconcile started by hand while the scheduled
   * one runs), and its comparison reads only its own ids. A week is far longer than any reconcile runs
   * and matches the S3 staging's expiry.
   */
  async clearStaged(run: StagingRun): Promise<void> {
    const db = await this.stagingConnection();
    await db.query(
      `DELETE FROM ${this.stagingTable} WHERE checkpoint_key = $1 AND project = $2 ` +
        `AND (run_id = $3 OR staged_at < now() - interval '${STALE_STAGING_DAYS} days')`,
      [run.checkpointKey, run.project, run.runId],
    );
  }

  /** Stores ids of the `source`th data source, committed at once: they outlive this invocation. */
  async stageIds(run: StagingRun, source: number, ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    const db = await this.stagingConnection();
    const prefix = `${csvQuoted(run.checkpointKey)},${csvQuoted(run.project)},${csvQuoted(run.runId)},${source},`;
    let body = '';
    for (const id of ids) body += `${prefix}${csvQuoted(id)}\n`;
    await db.copyCsv(`${this.stagingTable} (checkpoint_key, project, run_id, source, id)`, [
      Buffer.from(body, 'utf8'),
    ]);
  }

  /** In the open transaction: the staged ids of the `source`th data source join the ids compared next. */
  async addStagedIds(run: StagingRun, source: number): Promise<void> {
    const db = this.requireOpen();
    await db.query(this.createStagingTable);
    await db.query(
      `INSERT INTO ${LIVE} (id) SELECT id FROM ${this.stagingTable} WHERE run_id = $1 AND source = $2`,
      [run.runId, source],
    );
  }

  /** In the open transaction: the run's staged ids go, with the comparison they served (only its own). */
  async dropStagedIds(run: StagingRun): Promise<void> {
    await this.requireOpen().query(
      `DELETE FROM ${this.stagingTable} WHERE checkpoint_key = $1 AND project = $2 AND run_id = $3`,
      [run.checkpointKey, run.project, run.runId],
    );
  }

  async settle(
    tables: readonly string[],
    mode: Exclude<DeletionMode, 'ignore'>,
    deletedAt: Date,
    maxShare: number,
  ): Promise<TableReconcile[]> {
    const db = this.requireOpen();
    await db.query(`ANALYZE ${LIVE}`);
    const out: TableReconcile[] = [];
    const checks: { table: string; target: string; where: string; rows: number; gone: number }[] = [];
    for (const table of tables) {
      const pgTable = pgName(table);
      const { rows: columns } = await db.query<{ column_name: string }>(
        'SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2',
        [this.schema, pgTable],
      );
      if (columns.length === 0) continue; // never written: nothing to compare
      const marked = columns.some((c) => c.column_name === DELETED_COLUMN);
      if (mode === 'mark' && !marked) {
        await db.query(
          `ALTER TABLE ${qualified(this.schema, pgTable)} ` +
            `ADD COLUMN IF NOT EXISTS ${quoteIdent(DELETED_COLUMN)} boolean NOT NULL DEFAULT false, ` +
            `ADD COLUMN IF NOT EXISTS ${quoteIdent(DELETED_AT_COLUMN)} timestamptz`,
        );
      }
      const id = `t.${quoteIdent('id')}`;
      // A row is live when HQ lists its id, or the part before its first '.' (DET's child-row ids).
      const gone =
        `NOT EXISTS (SELECT 1 FROM ${LIVE} l WHERE l.id = ${id} COLLATE "C") AND ` +
        `NOT EXISTS (SELECT 1 FROM ${LIVE} l WHERE l.id = split_part(${id}, '.', 1) COLLATE "C")`;
      const where = mode === 'mark' ? `NOT t.${quoteIdent(DELETED_COLUMN)}` : 'true';
      const target = qualified(this.schema, pgTable);
      // Two counts: NOT EXISTS in WHERE becomes a hash anti-join; inside a FILTER it would run once per row.
      const all = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${target} AS t WHERE ${where}`);
      const missing = await db.query<{ n: string }>(
        `SELECT count(*) AS n FROM ${target} AS t WHERE ${where} AND ${gone}`,
      );
      const rows = Number(all.rows[0]?.n ?? 0);
      const goneRows = Number(missing.rows[0]?.n ?? 0);
      if (rows > 0 && goneRows / rows > maxShare)
        throw new ReconcileGuardError(table, goneRows, rows, maxShare);
      checks.push({ table, target, where: `${where} AND ${gone}`, rows, gone: goneRows });
    }
    // Every table of the source passed the guard: only now change them.
    for (const check of checks) {
      if (check.gone > 0) {
        if (mode === 'remove') await db.query(`DELETE FROM ${check.target} AS t WHERE ${check.where}`);
        else
          await db.query(
            `UPDATE ${check.target} AS t SET ${quoteIdent(DELETED_COLUMN)} = true, ` +
              `${quoteIdent(DELETED_AT_COLUMN)} = $1::timestamptz WHERE ${check.where}`,
            [deletedAt.toISOString()],
          );
      }
      out.push({ table: check.table, rows: check.rows, gone: check.gone });
    }
    await db.query(`TRUNCATE ${LIVE}`);
    return out;
  }

  async commit(): Promise<void> {
    const db = this.requireOpen();
    await db.query('COMMIT');
    await this.close();
  }

  async abort(): Promise<void> {
    if (!this.db) return;
    await this.db.query('ROLLBACK').catch(() => undefined);
    await this.close();
  }

  /** Closes the staging connection (the end of a slice that did not finish). */
  async closeStaging(): Promise<void> {
    const staging = this.staging;
    this.staging = undefined;
    await staging?.close().catch(() => undefined);
  }

  private async close(): Promise<void> {
    await this.closeStaging();
    const db = this.db;
    this.db = undefined;
    if (!db) return;
    if (this.lockId !== undefined)
      await db.query('SELECT pg_advisory_unlock($1::bigint)', [this.lockId]).catch(() => undefined);
    await db.close().catch(() => undefined);
  }
}

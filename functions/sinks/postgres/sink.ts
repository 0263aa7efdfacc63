import { createHash } from 'node:crypto';
import { readDetCheckpoint } from '../../checkpoints/det-runs';
import {
  CHECKPOINT_TABLE,
  checkpointTableDdl,
  checkpointTableUpgrades,
  readPgCheckpoint,
  writePgCheckpoints,
} from '../../checkpoints/postgres';
import type { Cell, TableSpec } from '../../query/types';
import { describeValue } from '../cells';
import {
  ConcurrentRunError,
  DeclaredTypeError,
  SinkConfigError,
  SinkError,
  SinkStateError,
  TypeConflictError,
} from '../errors';
import {
  DELETED_AT_COLUMN,
  DELETED_COLUMN,
  type DeletionMode,
  type ExportSink,
  type RecordDeletion,
  type RunContext,
  type SourceCheckpoint,
} from '../types';
import type { SqlConnection } from './connection';
import { type ColumnType, CopyLines } from './copy-csv';
import { pgName, qualified, quoteIdent } from './naming';
import { OWNED_TABLE_COMMENT, refuseForeignTables } from './ownership';
import { DET_CHECKPOINT_TABLE, pgTableProblems } from './reserved';
import {
  convertForColumn,
  fits,
  inferPgType,
  type PgType,
  pgTypeForDataType,
  pgTypeFromCatalog,
  sqlType,
  widen,
} from './types';

export interface PostgresSinkOptions {
  /** @default 'public' */
  readonly schema?: string;
  /** @default false */
  readonly strictTypes?: boolean;
  /** @default 10000 */
  readonly batchRows?: number;
  /** For messages: where the tables go (never holds a password). */
  readonly description?: string;
}

/**
 * Rows written between two turns of the event loop while a batch is in flight. The batch's bytes
 * reach the socket, and its round trips (savepoint, COPY, release) advance, only on those turns: at
 * 200 the server waited for data between turns (~25% slower at 100k rows); a turn costs a few µs.
 */
const YIELD_EVERY_ROWS = 20;

/** Rows waiting for new or wider columns that make a batch flush before it is full. */
const RAW_ROWS_BEFORE_FLUSH = 500;

/** Rows per COPY batch unless `batchRows` says otherwise. */
export const DEFAULT_BATCH_ROWS = 10_000;

/** How one declared table maps onto the database. */
interface TablePlan {
  readonly spec: TableSpec;
  readonly pgTable: string;
  readonly pgColumns: readonly string[];
  readonly idIndex: number;
  /** Position among the declared tables, for the name of its staging table. */
  readonly ordinal: number;
  /** Columns with a declared Data Type (never widened; their values are converted). */
  readonly declared: readonly number[];
}

/** Advisory lock id for an export: 64 bits of a hash, as a signed bigint string. */
export function exportLockId(checkpointKey: string, project: string): string {
  const digest = createHash('sha256').update(`ccexport\0${checkpointKey}\0${project}`, 'utf8').digest();
  return digest.readBigInt64BE(0).toString();
}

/**
 * One advisory lock per schema for our DDL (CREATE SCHEMA/TABLE, ALTER TABLE). PostgreSQL's
 * `CREATE TABLE IF NOT EXISTS` is not safe against itself: two sessions that both find the name free
 * both insert the table's row type, and one fails on `pg_type_typname_nsp_index` (23505). Runs of
 * different exports into one database (two first runs at once) take this lock around their DDL, so
 * they never race each other; `withDdlRetry` covers DDL by anything else.
 */
export function ddlLockId(schema: string): string {
  const digest = createHash('sha256').update(`ccexport-ddl\0${schema}`, 'utf8').digest();
  return digest.readBigInt64BE(0).toString();
}

/** Errors of concurrent DDL that succeed when tried again (the other session has finished by then). */
const DDL_RACE_CODES = new Set([
  '23505', // unique_violation: pg_type_typname_nsp_index, pg_class_relname_nsp_index, pg_namespace_nspname_index
  '42P07', // duplicate_table
  '42P06', // duplicate_schema
  '42701', // duplicate_column (ADD COLUMN IF NOT EXISTS racing itself)
  '40P01', // deadlock_detected
  'XX000', // "tuple concurrently updated" on the catalog
]);
const DDL_ATTEMPTS = 4;

function isDdlRace(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return typeof code === 'string' && DDL_RACE_CODES.has(code);
}

function pgMessage(error: unknown): string {
  const e = error as { message?: unknown; code?: unknown };
  const message = typeof e?.message === 'string' ? e.message : String(error);
  return typeof e?.code === 'string' ? `${message} (SQLSTATE ${e.code})` : message;
}

function isUniqueViolation(error: unknown): boolean {
  return (error as { code?: unknown })?.code === '23505';
}

/** Encoded lines of one batch that share a column list. */
interface Segment {
  /** Quoted column names, comma-separated, as COPY lists them. */
  readonly names: string;
  readonly lines: CopyLines;
}

/** Rows of one table gathered for the next COPY. */
interface Batch {
  readonly segments: Segment[];
  /** Ids in the batch: a second row with one of them is a duplicate. */
  readonly ids: Set<string>;
  /** Rows that need the table changed first (a new column, a wider type), with their ids. */
  readonly raw: Cell[][];
  readonly rawIds: string[];
  /** Rows whose id is already in the batch; merged after it (ON CONFLICT cannot touch a row twice). */
  readonly duplicates: Cell[][];
  size: number;
}

/** The columns a table has now, by plan column (undefined: none yet), for encoding rows. */
interface Layout {
  readonly types: (ColumnType | undefined)[];
  readonly names: string;
}

/**
 * Tables in PostgreSQL (a server, or embedded PGlite through the same code): created on first use
 * with `id` text primary key, new columns added as fields appear, columns widened to text when a value
 * does not fit (unless `strictTypes`). Everything between two `commit` calls is one transaction, and
 * the checkpoints passed to `commit` are written in that same transaction.
 *
 * Rows are encoded to COPY CSV as they arrive (so the row arrays die young and memory stays small)
 * and loaded in batches of `batchRows`. A row whose values do not fit the table as it is (a new column,
 * a wider type) waits in the batch as cells; at flush the table is changed once for all of them.
 * At flush one query asks which of the batch's ids the table already has. Rows with new ids are
 * COPY'd straight into the table (one write, like a plain COPY); rows with existing ids, and rows
 * repeating an id of the same batch, are COPY'd into a temporary staging table and merged with
 * `INSERT ... ON CONFLICT (id) DO UPDATE SET c = COALESCE(excluded.c, t.c)`, so null never
 * overwrites a value (DET). The direct COPY runs under a savepoint: if another writer inserted one of
 * the ids meanwhile, it is rolled back and the rows are merged through the staging table instead.
 *
 * One batch is in flight while the next is gathered: `writeRows` returns once a batch is sent, and its
 * outcome is checked before the next batch is sent and at `commit`.
 */
export class PostgresSink implements ExportSink {
  private db: SqlConnection | undefined;
  private readonly schema: string;
  private readonly batchRows: number;
  private plans = new Map<string, TablePlan>();
  /** Columns per PostgreSQL table name, as they are inside the open transaction. */
  private columns = new Map<string, Map<string, ColumnType>>();
  private layouts = new Map<string, Layout>();
  private batches = new Map<string, Batch>();
  private sinceYield = 0;
  /** Tables where a direct COPY met an existing id in this run: their batches look ids up first. */
  private checkIds = new Set<string>();
  /** Staging tables created in the open transaction (they drop at its end), by PostgreSQL table. */
  private staged = new Map<string, string>();
  /** The batch sent to the database and not yet checked. */
  private inflight: Promise<void> | undefined;
  private run: RunContext | undefined;
  private deletions: DeletionMode = 'ignore';
  private inTransaction = false;
  private locked = false;
  private state: 'new' | 'running' | 'closed' = 'new';

  constructor(
    private readonly connect: () => Promise<SqlConnection>,
    private readonly options: PostgresSinkOptions = {},
  ) {
    this.schema = options.schema ?? 'public';
    this.batchRows = options.batchRows ?? DEFAULT_BATCH_ROWS;
    if (!Number.isInteger(this.batchRows) || this.batchRows < 1) {
      throw new SinkConfigError(`batchRows must be a positive integer, received ${this.batchRows}`);
    }
  }

  private where(): string {
    return this.options.description ?? 'the database';
  }

  async begin(tables: readonly TableSpec[], run: RunContext): Promise<void> {
    if (this.state !== 'new') throw new SinkStateError(`begin called twice (run ${run.runId})`);
    this.plans = planTables(tables);
    this.run = run;
    this.deletions = run.deletions ?? 'ignore';
    this.db = await this.connect();
    this.state = 'running';
    const { rows } = await this.db.query<{ locked: boolean }>(
      'SELECT pg_try_advisory_lock($1::bigint) AS locked',
      [exportLockId(run.checkpointKey, run.project)],
    );
    if (!rows[0]?.locked) {
      await this.close();
      this.state = 'new';
      throw new ConcurrentRunError(
        `Another run of export "${run.checkpointKey}" for project "${run.project}" is writing to ${this.where()}; ` +
          'this run stops without writing (try again when it has finished)',
      );
    }
    this.locked = true;
    const db = this.db;
    // Before anything is created: a refused run leaves the database as it found it.
    try {
      await refuseForeignTables(
        this.db,
        this.schema,
        [...this.plans.values()].map((p) => ({ name: p.spec.name, pgTable: p.pgTable })),
        this.where(),
      );
    } catch (error) {
      await this.close();
      this.state = 'closed';
      throw error;
    }

    await this.withDdlRetry(
      db,
      `the checkpoint table ${qualified(this.schema, CHECKPOINT_TABLE)}`,
      async () => {
        if (this.schema !== 'public')
          await db.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(this.schema)}`);
        await db.query(checkpointTableDdl(this.schema));
        for (const upgrade of checkpointTableUpgrades(this.schema)) await db.query(upgrade);
      },
      false,
    );
    // `_deleted_at` is timestamptz and rows carry UTC times without a zone: read them as UTC.
    await this.db.query(`SET TIME ZONE 'UTC'`);
    await this.loadColumns();
    if (this.deletions === 'mark') {
      for (const plan of this.plans.values())
        if (this.columns.has(plan.pgTable)) await this.ensureDeletionColumns(this.db, plan);
    }
  }

  /**
   * `mark` mode: `_deleted boolean NOT NULL DEFAULT false` (so rows written before, or by DET, read as
   * live) and `_deleted_at timestamptz`, added to a table that lacks them.
   */
  private async ensureDeletionColumns(db: SqlConnection, plan: TablePlan): Promise<void> {
    const existing = this.columns.get(plan.pgTable)!;
    if (existing.has(DELETED_COLUMN) && existing.has(DELETED_AT_COLUMN)) return;
    await db.query(
      `ALTER TABLE ${qualified(this.schema, plan.pgTable)} ` +
        `ADD COLUMN IF NOT EXISTS ${quoteIdent(DELETED_COLUMN)} boolean NOT NULL DEFAULT false, ` +
        `ADD COLUMN IF NOT EXISTS ${quoteIdent(DELETED_AT_COLUMN)} timestamptz`,
    );
    existing.set(DELETED_COLUMN, 'boolean');
    existing.set(DELETED_AT_COLUMN, 'timestamp');
    this.layouts.delete(plan.pgTable);
  }

  /** Columns a merge overwrites even with null: the mark, so an unarchived form's rows read as live again. */
  private overwritten(plan: TablePlan): ReadonlySet<number> {
    if (this.deletions !== 'mark') return NO_COLUMNS;
    return new Set(
      [plan.pgColumns.indexOf(DELETED_COLUMN), plan.pgColumns.indexOf(DELETED_AT_COLUMN)].filter(
        (i) => i >= 0,
      ),
    );
  }

  /**
   * Removes (`remove`) or marks (`mark`) the rows of records HQ archived or deleted, in `tables`, in the
   * open transaction, after the rows written so far. A record's rows: its own id, the ids starting with
   * `<id>.` (DET's child-row ids), and the exact row ids given.
   */
  async recordDeletions(tables: readonly string[], deletions: readonly RecordDeletion[]): Promise<void> {
    const db = this.requireRunning('recordDeletions');
    if (this.deletions === 'ignore' || deletions.length === 0) return;
    await this.flushAll();
    await this.ensureTransaction(db);
    for (const table of tables) {
      const plan = this.plans.get(table);
      if (!plan || !this.columns.has(plan.pgTable)) continue;
      const ids: string[] = [];
      const times: string[] = [];
      for (const d of deletions) {
        const at = d.deletedAt.toISOString();
        ids.push(d.id);
        times.push(at);
        for (const rowId of d.rowIds?.[table] ?? [])
          if (rowId !== d.id) {
            ids.push(rowId);
            times.push(at);
          }
      }
      await removeOrMark(db, qualified(this.schema, plan.pgTable), this.deletions, ids, times);
    }
  }

  private async loadColumns(): Promise<void> {
    const names = [...this.plans.values()].map((p) => p.pgTable);
    const { rows } = await this.db!.query<{ table_name: string; column_name: string; data_type: string }>(
      `SELECT table_name, column_name, data_type FROM information_schema.columns
        WHERE table_schema = $1 AND table_name = ANY($2::text[]) ORDER BY ordinal_position`,
      [this.schema, names],
    );
    this.columns.clear();
    this.layouts.clear();
    for (const row of rows) {
      let table = this.columns.get(row.table_name);
      if (!table) {
        table = new Map();
        this.columns.set(row.table_name, table);
      }
      table.set(row.column_name, pgTypeFromCatalog(row.data_type));
    }
  }

  private requireRunning(what: string): SqlConnection {
    if (this.state !== 'running' || !this.db)
      throw new SinkStateError(`${what} called outside a run (state ${this.state})`);
    return this.db;
  }

  async writeRows(table: string, rows: readonly Cell[][]): Promise<void> {
    this.requireRunning('writeRows');
    const plan = this.plans.get(table);
    if (!plan) throw new SinkConfigError(`writeRows for table "${table}", which begin did not declare`);
    let batch = this.batches.get(table);
    if (!batch) {
      batch = { segments: [], ids: new Set(), raw: [], rawIds: [], duplicates: [], size: 0 };
      this.batches.set(table, batch);
    }
    const layout = this.layout(plan);
    for (const given of rows) {
      const id = rowId(plan, given, batch.size);
      const row = plan.declared.length > 0 ? this.convertDeclared(plan, given, id) : given;
      batch.size += 1;
      if (batch.ids.has(id)) {
        batch.duplicates.push(row);
        continue;
      }
      batch.ids.add(id);
      if (!segmentFor(batch, layout.names).lines.row(row, id, plan.idIndex, layout.types)) {
        batch.raw.push(row);
        batch.rawIds.push(id);
      }
    }
    // Callers write rows without real I/O in between (a page of records is all microtasks), so the
    // socket would not take the batch in flight until the next flush: yield now and then to let it.
    this.sinceYield += rows.length;
    if (this.inflight && this.sinceYield >= YIELD_EVERY_ROWS) {
      this.sinceYield = 0;
      await new Promise((resolve) => setImmediate(resolve));
    }
    // Rows waiting for a table change are held as cells (several times their encoded size): change
    // the table early rather than hold a whole batch of them (the first batch of a new table).
    if (batch.size >= this.batchRows || batch.raw.length >= RAW_ROWS_BEFORE_FLUSH) await this.flush(table);
  }

  /**
   * The row with each value of a declared column converted to the column's type (its type in the
   * database when the table exists, else the declared one): DET never changes such a column, and
   * PostgreSQL converts `'12'` into an integer column for it. A value that cannot be converted stops
   * the run; the transaction (everything since the last commit) is rolled back.
   */
  private convertDeclared(plan: TablePlan, row: Cell[], id: string): Cell[] {
    let out: Cell[] | undefined;
    const existing = this.columns.get(plan.pgTable);
    for (const i of plan.declared) {
      const cell = row[i] ?? null;
      if (cell === null) continue;
      const type = existing?.get(plan.pgColumns[i]!) ?? pgTypeForDataType(plan.spec.dataTypes[i]!);
      const converted = convertForColumn(cell, type);
      if (converted === undefined) {
        throw new DeclaredTypeError(
          `Table "${plan.spec.name}", column "${plan.spec.headings[i]}" (${sqlType(type as PgType)}), row id "${id}": ` +
            `${describeValue(cell)} cannot be converted to ${sqlType(type as PgType)}; nothing since the last commit was written`,
        );
      }
      if (converted !== cell) {
        out ??= [...row];
        out[i] = converted;
      }
    }
    return out ?? row;
  }

  /** The table's columns as `CopyLines.row` needs them; recomputed after the table changes. */
  private layout(plan: TablePlan): Layout {
    let layout = this.layouts.get(plan.pgTable);
    if (!layout) {
      const existing = this.columns.get(plan.pgTable);
      const types = plan.pgColumns.map((column, i) =>
        i === plan.idIndex ? ('text' as const) : existing?.get(column),
      );
      const names = plan.pgColumns
        .filter((_, i) => types[i] !== undefined)
        .map(quoteIdent)
        .join(', ');
      layout = { types, names };
      this.layouts.set(plan.pgTable, layout);
    }
    return layout;
  }

  private async ensureTransaction(db: SqlConnection): Promise<void> {
    if (!this.inTransaction) {
      await db.query('BEGIN');
      this.inTransaction = true;
    }
  }

  /** Waits for the batch in flight; throws its error if it failed. */
  private async settle(): Promise<void> {
    const inflight = this.inflight;
    this.inflight = undefined;
    await inflight;
  }

  private async flushAll(): Promise<void> {
    for (const table of [...this.batches.keys()]) await this.flush(table);
    await this.settle();
  }

  private async flush(table: string): Promise<void> {
    const db = this.requireRunning('flush');
    const batch = this.batches.get(table);
    this.batches.delete(table);
    if (!batch || batch.size === 0) return;
    const plan = this.plans.get(table)!;
    try {
      // Let the batch in flight finish before this one issues any statement: its direct COPY may roll
      // back to its savepoint, which would also undo a schema change issued here in the meantime.
      await this.settle();
      await this.ensureTransaction(db);
      // The first batch of a table that does not exist yet creates it, with no rows waiting too.
      if (batch.raw.length > 0 || !this.columns.has(plan.pgTable)) {
        await this.evolveSchema(db, plan, batch.raw);
        const layout = this.layout(plan);
        const segment = segmentFor(batch, layout.names);
        batch.raw.forEach((row, r) => {
          this.encodeFitting(plan, segment, row, batch.rawIds[r]!, layout);
        });
      }
      let duplicates: Segment | undefined;
      if (batch.duplicates.length > 0) {
        const merged = mergeById(plan, batch.duplicates, this.overwritten(plan));
        await this.evolveSchema(db, plan, merged.rows);
        const layout = this.layout(plan);
        duplicates = { names: layout.names, lines: new CopyLines() };
        const segment = duplicates;
        merged.rows.forEach((row, r) => {
          this.encodeFitting(plan, segment, row, merged.ids[r]!, layout);
        });
      }
      const inflight = this.load(db, plan, batch, duplicates);
      // Checked by settle(); the handler only keeps node from reporting it as unhandled meanwhile.
      inflight.catch(() => undefined);
      this.inflight = inflight;
    } catch (error) {
      // A failed batch in flight aborts the transaction; its error, not the follow-up one, is the cause.
      await this.settle();
      throw error;
    }
  }

  /** Encodes a row the table has just been changed to take. */
  private encodeFitting(
    plan: TablePlan,
    segment: Segment,
    row: readonly Cell[],
    id: string,
    layout: Layout,
  ): void {
    if (!segment.lines.row(row, id, plan.idIndex, layout.types)) {
      throw new SinkError(`A row of table "${plan.spec.name}" (id "${id}") still does not fit its columns`);
    }
  }

  /**
   * Sends one batch. Rows with new ids go straight into the table by COPY, under a savepoint; rows
   * with ids the table has go through the staging table. While a table has shown no existing id in
   * this run (a first load, new forms), the whole batch is COPY'd without looking ids up first; the
   * first unique violation rolls that back, and from then on each batch asks which ids exist.
   */
  private async load(
    db: SqlConnection,
    plan: TablePlan,
    batch: Batch,
    duplicates: Segment | undefined,
  ): Promise<void> {
    const target = qualified(this.schema, plan.pgTable);
    const direct = async (parts: readonly { names: string; body: Buffer[] }[]): Promise<boolean> => {
      if (parts.length === 0) return true;
      await db.query('SAVEPOINT ccexport_batch');
      try {
        for (const part of parts) await db.copyCsv(`${target} (${part.names})`, part.body);
        await db.query('RELEASE SAVEPOINT ccexport_batch');
        return true;
      } catch (error) {
        if (!isUniqueViolation(error)) throw error;
        await db.query('ROLLBACK TO SAVEPOINT ccexport_batch');
        await db.query('RELEASE SAVEPOINT ccexport_batch');
        this.checkIds.add(plan.pgTable);
        return false;
      }
    };
    const done =
      !this.checkIds.has(plan.pgTable) &&
      (await direct(
        batch.segments.filter((s) => s.lines.size > 0).map((s) => ({ names: s.names, body: s.lines.body() })),
      ));
    if (!done) {
      const found = await db.query<{ id: string }>(`SELECT id FROM ${target} WHERE id = ANY($1::text[])`, [
        [...batch.ids],
      ]);
      const existing = new Set(found.rows.map((r) => r.id));
      const fresh: { names: string; body: Buffer[] }[] = [];
      const update: { names: string; body: Buffer[] }[] = [];
      for (const segment of batch.segments) {
        const { yes, no } = segment.lines.split((id) => existing.has(id));
        if (no.length > 0) fresh.push({ names: segment.names, body: no });
        if (yes.length > 0) update.push({ names: segment.names, body: yes });
      }
      // Another writer may have inserted one of the new ids since we looked: then merge those too.
      if (!(await direct(fresh))) update.unshift(...fresh);
      for (const part of update) await this.merge(db, plan, part.names, part.body);
    }
    // Repeated ids go last: they apply on top of the batch's first row for that id.
    if (duplicates) await this.merge(db, plan, duplicates.names, duplicates.lines.body());
  }

  /** COPY into the staging table, then one `INSERT ... ON CONFLICT` where null never overwrites. */
  private async merge(
    db: SqlConnection,
    plan: TablePlan,
    names: string,
    body: readonly Buffer[],
  ): Promise<void> {
    const target = qualified(this.schema, plan.pgTable);
    let stage = this.staged.get(plan.pgTable);
    if (stage) await db.query(`TRUNCATE ${stage}`);
    else {
      stage = `pg_temp.${quoteIdent(`ccexport_stage_${plan.ordinal}`)}`;
      await db.query(`DROP TABLE IF EXISTS ${stage}`);
      await db.query(`CREATE TEMP TABLE ${stage} (LIKE ${target}) ON COMMIT DROP`);
      this.staged.set(plan.pgTable, stage);
    }
    await db.copyCsv(`${stage} (${names})`, body);
    const marks =
      this.deletions === 'mark' ? [quoteIdent(DELETED_COLUMN), quoteIdent(DELETED_AT_COLUMN)] : [];
    const updates = names
      .split(', ')
      .filter((c) => c !== quoteIdent('id'))
      .map((c) => (marks.includes(c) ? `${c} = excluded.${c}` : `${c} = COALESCE(excluded.${c}, t.${c})`));
    await db.query(
      `INSERT INTO ${target} AS t (${names}) SELECT ${names} FROM ${stage} ` +
        `ON CONFLICT (${quoteIdent('id')}) DO ${updates.length ? `UPDATE SET ${updates.join(', ')}` : 'NOTHING'}`,
    );
  }

  /**
   * Runs DDL under the schema's DDL lock (`ddlLockId`), trying again when it lost a race with other DDL,
   * and names `what` in the error when it fails for good. Inside the run's transaction a savepoint
   * keeps the rows already written in it; outside, the DDL gets its own transaction. Either way the
   * lock is a transaction lock, released at the end of that transaction.
   */
  private async withDdlRetry(
    db: SqlConnection,
    what: string,
    ddl: () => Promise<void>,
    inTransaction: boolean,
  ): Promise<void> {
    const [open, done, undo] = inTransaction
      ? ['SAVEPOINT ccexport_ddl', 'RELEASE SAVEPOINT ccexport_ddl', 'ROLLBACK TO SAVEPOINT ccexport_ddl']
      : ['BEGIN', 'COMMIT', 'ROLLBACK'];
    for (let attempt = 1; ; attempt += 1) {
      await db.query(open);
      try {
        await db.query('SELECT pg_advisory_xact_lock($1::bigint)', [ddlLockId(this.schema)]);
        await ddl();
        await db.query(done);
        return;
      } catch (error) {
        await db.query(undo).catch(() => undefined);
        if (inTransaction) await db.query('RELEASE SAVEPOINT ccexport_ddl').catch(() => undefined);
        if (attempt < DDL_ATTEMPTS && isDdlRace(error)) continue;
        if (error instanceof SinkError) throw error;
        throw new SinkError(`Could not create or change ${what} in ${this.where()}: ${pgMessage(error)}`, {
          cause: error,
        });
      }
    }
  }

  /** Creates the table, adds and widens columns so every value of the batch fits; returns the columns to write. */
  private async evolveSchema(
    db: SqlConnection,
    plan: TablePlan,
    rows: readonly Cell[][],
  ): Promise<Map<number, ColumnType>> {
    let write = new Map<number, ColumnType>();
    const columns = this.columns.get(plan.pgTable);
    const before = columns ? new Map(columns) : undefined;
    await this.withDdlRetry(
      db,
      `table "${plan.spec.name}" (${qualified(this.schema, plan.pgTable)})`,
      async () => {
        // A retry starts from the columns known before the failed attempt.
        if (before) this.columns.set(plan.pgTable, new Map(before));
        else this.columns.delete(plan.pgTable);
        this.layouts.delete(plan.pgTable);
        write = await this.changeSchema(db, plan, rows);
      },
      true,
    );
    return write;
  }

  private async changeSchema(
    db: SqlConnection,
    plan: TablePlan,
    rows: readonly Cell[][],
  ): Promise<Map<number, ColumnType>> {
    const target = qualified(this.schema, plan.pgTable);
    let existing = this.columns.get(plan.pgTable);
    if (!existing) {
      // `COLLATE "C"`: ids are compared byte for byte anyway (equality is the same under every
      // deterministic collation), and the primary key then orders them by bytes instead of through the
      // locale. HQ's ids are random UUIDs, so every row lands somewhere in the index; with RDS's default
      // en_US.UTF-8 (or even C.UTF-8) each comparison goes through strcoll, and a COPY of 100,000 rows
      // took 1.49 s against 1.15 s with "C" here. Tables created before keep their collation.
      // The table may have appeared since `begin` looked: made by a run of another export (fine), or by
      // somebody else (refused, as at `begin`).
      await refuseForeignTables(
        db,
        this.schema,
        [{ name: plan.spec.name, pgTable: plan.pgTable }],
        this.where(),
      );
      await db.query(
        `CREATE TABLE IF NOT EXISTS ${target} (${quoteIdent('id')} text COLLATE "C" PRIMARY KEY)`,
      );
      // The mark that lets later runs write into it (ownership.ts); committed with the table.
      await db.query(`COMMENT ON TABLE ${target} IS ${quoteLiteral(OWNED_TABLE_COMMENT)}`);
      existing = new Map([['id', 'text']]);
      this.columns.set(plan.pgTable, existing);
      this.layouts.delete(plan.pgTable);
      if (this.deletions === 'mark') await this.ensureDeletionColumns(db, plan);
    }
    const write = new Map<number, ColumnType>();
    const changes: string[] = [];
    for (let i = 0; i < plan.pgColumns.length; i++) {
      const column = plan.pgColumns[i]!;
      if (i === plan.idIndex) {
        write.set(i, 'text');
        continue;
      }
      const declared = plan.spec.dataTypes[i];
      const current = existing.get(column);
      let type: ColumnType | undefined = current ?? (declared ? pgTypeForDataType(declared) : undefined);
      // text, jsonb and other columns take anything: no need to look at the values. A declared column
      // keeps its type (its values were converted by convertDeclared).
      if (!declared && type !== 'text' && type !== 'jsonb' && type !== 'other') {
        for (let r = 0; r < rows.length; r++) {
          const cell = rows[r]![i] ?? null;
          if (cell === null) continue;
          if (type === undefined) type = inferPgType(cell);
          if (!fits(cell, type)) {
            if (current !== undefined && this.options.strictTypes) {
              throw new TypeConflictError(
                `Column "${plan.spec.headings[i]}" of table "${plan.spec.name}" is ${current} but received ` +
                  `${describeValue(cell)}; strictTypes forbids widening it`,
              );
            }
            type = widen(type as PgType, cell);
            if (type === 'text') break;
          }
        }
      }
      if (type === undefined) continue; // always null and no declared type: DET creates no column
      if (current === undefined) {
        changes.push(`ADD COLUMN IF NOT EXISTS ${quoteIdent(column)} ${sqlType(type as PgType)}`);
        existing.set(column, type);
      } else if (current !== type) {
        const sql = sqlType(type as PgType);
        changes.push(`ALTER COLUMN ${quoteIdent(column)} TYPE ${sql} USING ${quoteIdent(column)}::${sql}`);
        existing.set(column, type);
      }
      write.set(i, type);
    }
    if (changes.length > 0) {
      this.layouts.delete(plan.pgTable);
      // One statement for all changes: a table rewrite (type change) happens once, not per column.
      await db.query(`ALTER TABLE ${target} ${changes.join(', ')}`);
      const stage = this.staged.get(plan.pgTable);
      if (stage) {
        // The staging table copies the target's columns when created; make a new one next time.
        this.staged.delete(plan.pgTable);
        await db.query(`DROP TABLE IF EXISTS ${stage}`);
      }
    }
    return write;
  }

  private async endTransaction(db: SqlConnection, statement: 'COMMIT' | 'ROLLBACK'): Promise<void> {
    this.staged.clear();
    if (!this.inTransaction) return;
    this.inTransaction = false;
    await db.query(statement);
  }

  async commit(checkpoints: readonly SourceCheckpoint[]): Promise<void> {
    const db = this.requireRunning('commit');
    await this.flushAll();
    if (checkpoints.length > 0) {
      await this.ensureTransaction(db);
      await writePgCheckpoints(db, this.schema, checkpoints, this.run!.runId);
    }
    await this.endTransaction(db, 'COMMIT');
  }

  async finish(): Promise<void> {
    const db = this.requireRunning('finish');
    await this.flushAll();
    await this.endTransaction(db, 'COMMIT');
    this.state = 'closed';
    await this.close();
  }

  async abort(_error: unknown): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.batches.clear();
    await this.inflight?.catch(() => undefined);
    this.inflight = undefined;
    if (this.db) await this.endTransaction(this.db, 'ROLLBACK').catch(() => undefined);
    this.inTransaction = false;
    await this.close();
  }

  private async close(): Promise<void> {
    const db = this.db;
    this.db = undefined;
    if (!db) return;
    try {
      if (this.locked && this.run) {
        await db
          .query('SELECT pg_advisory_unlock($1::bigint)', [
            exportLockId(this.run.checkpointKey, this.run.project),
          ])
          .catch(() => undefined);
      }
    } finally {
      this.locked = false;
      await db.close().catch(() => undefined);
    }
  }

  async readCheckpoint(
    checkpointKey: string,
    project: string,
    dataSource: string,
    tables?: readonly string[],
  ): Promise<SourceCheckpoint | null> {
    // Inside a run, read on the run's connection (a second PGlite handle on the same folder is not possible).
    if (this.db) return this.readCheckpointOn(this.db, checkpointKey, project, dataSource, tables);
    const db = await this.connect();
    try {
      return await this.readCheckpointOn(db, checkpointKey, project, dataSource, tables);
    } finally {
      await db.close();
    }
  }

  /** Ours first; without one, DET's last checkpoint for the same tables is taken over (see det-runs.ts). */
  private async readCheckpointOn(
    db: SqlConnection,
    checkpointKey: string,
    project: string,
    dataSource: string,
    tables: readonly string[] | undefined,
  ): Promise<SourceCheckpoint | null> {
    const ours = await readPgCheckpoint(db, this.schema, checkpointKey, project, dataSource);
    if (ours || !tables) return ours;
    const det = await readDetCheckpoint(db, this.schema, checkpointKey, project, tables);
    if (!det) return null;
    return {
      checkpointKey,
      project,
      dataSource,
      tables: [...tables],
      position: det.position,
      writtenAt: new Date().toISOString(),
      takenOver:
        `DET's checkpoint from ${qualified(this.schema, DET_CHECKPOINT_TABLE)} for ${det.tables.join(', ')}` +
        ` (${det.paginationMode} since ${det.sinceParam}, run at ${det.timeOfRun}` +
        `${det.queryFileName ? `, query ${det.queryFileName}` : ''}); DET's tables are used as they are`,
    };
  }
}

/** A string literal for SQL where parameters cannot go (COMMENT ON). */
function quoteLiteral(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

/** Validates declared tables and maps their names to PostgreSQL identifiers. */
export function planTables(tables: readonly TableSpec[]): Map<string, TablePlan> {
  const plans = new Map<string, TablePlan>();
  for (const spec of tables) {
    if (spec.headings.indexOf('id') < 0) {
      throw new SinkConfigError(
        `Table "${spec.name}" has no "id" column; SQL output upserts on id (add a Field named id), headings: ${spec.headings.join(', ')}`,
      );
    }
  }
  const [problem] = pgTableProblems(tables);
  if (problem) throw new SinkConfigError(problem.message);
  for (const spec of tables) {
    const pgTable = pgName(spec.name);
    const pgColumns = spec.headings.map(pgName);
    plans.set(spec.name, {
      spec,
      pgTable,
      pgColumns,
      idIndex: spec.headings.indexOf('id'),
      ordinal: plans.size + 1,
      declared: spec.dataTypes.flatMap((t, i) => (t && i !== spec.headings.indexOf('id') ? [i] : [])),
    });
  }
  return plans;
}

/** A row's id as text (the column is text); an empty id is refused. */
function rowId(plan: TablePlan, row: readonly Cell[], n: number): string {
  const raw = row[plan.idIndex];
  if (typeof raw === 'string' && raw !== '') return raw;
  if (raw === null || raw === undefined || raw === '') {
    throw new SinkError(
      `Row ${n + 1} of a batch for table "${plan.spec.name}" has an empty id; SQL output needs one`,
    );
  }
  return typeof raw === 'object' && !(raw instanceof Date) ? JSON.stringify(raw) : String(raw);
}

const NO_COLUMNS: ReadonlySet<number> = new Set();

/**
 * Deletes (`remove`) or marks (`mark`) the rows of `table` whose id is one of `ids` or starts with one
 * of them followed by `.`, each with the time at the same position in `times`. The prefix test is a
 * byte range (`id >= 'x.'` and `< 'x/'`, `/` following `.` in ASCII), which the primary key of a table
 * we created (`COLLATE "C"`) answers from its index.
 */
export async function removeOrMark(
  db: SqlConnection,
  table: string,
  mode: 'remove' | 'mark',
  ids: readonly string[],
  times: readonly string[],
): Promise<number> {
  const id = quoteIdent('id');
  const match =
    `(t.${id} = d.rid OR (t.${id} COLLATE "C" >= d.rid || '.' COLLATE "C" ` +
    `AND t.${id} COLLATE "C" < d.rid || '/' COLLATE "C"))`;
  const source = 'unnest($1::text[], $2::timestamptz[]) AS d(rid, at)';
  const result =
    mode === 'remove'
      ? await db.query(`DELETE FROM ${table} AS t USING ${source} WHERE ${match}`, [ids, times])
      : await db.query(
          `UPDATE ${table} AS t SET ${quoteIdent(DELETED_COLUMN)} = true, ${quoteIdent(DELETED_AT_COLUMN)} = d.at ` +
            `FROM ${source} WHERE ${match} AND NOT t.${quoteIdent(DELETED_COLUMN)}`,
          [ids, times],
        );
  return result.rowCount ?? 0;
}

/** The segment that takes the batch's next lines for this column list. */
function segmentFor(batch: Batch, names: string): Segment {
  let segment = batch.segments[batch.segments.length - 1];
  if (segment?.names !== names) {
    segment = { names, lines: new CopyLines() };
    batch.segments.push(segment);
  }
  return segment;
}

/**
 * One row per id, in first-seen order, with the ids as text: a later row's non-null values overwrite
 * earlier ones, exactly as applying the upserts one after the other would (ON CONFLICT cannot touch a
 * row twice per statement). Rows are not copied unless a later one merges into them.
 */
export function mergeById(
  plan: TablePlan,
  rows: readonly Cell[][],
  overwrite: ReadonlySet<number> = NO_COLUMNS,
): { rows: Cell[][]; ids: string[] } {
  const at = new Map<string, number>();
  const out: Cell[][] = [];
  const ids: string[] = [];
  let copied: Set<number> | undefined;
  for (let n = 0; n < rows.length; n++) {
    const row = rows[n]!;
    const id = rowId(plan, row, n);
    const earlierAt = at.get(id);
    if (earlierAt === undefined) {
      at.set(id, out.length);
      out.push(row);
      ids.push(id);
      continue;
    }
    copied ??= new Set();
    let earlier = out[earlierAt]!;
    if (!copied.has(earlierAt)) {
      // The caller's array stays untouched.
      earlier = [...earlier];
      out[earlierAt] = earlier;
      copied.add(earlierAt);
    }
    for (let i = 0; i < row.length; i++) {
      const cell = row[i];
      if ((cell !== null && cell !== undefined) || overwrite.has(i)) earlier[i] = cell ?? null;
    }
  }
  return { rows: out, ids };
}

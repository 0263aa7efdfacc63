import { createHash } from 'node:crypto';
import {
  CHECKPOINT_TABLE,
  checkpointTableDdl,
  readPgCheckpoint,
  writePgCheckpoints,
} from '../../checkpoints/postgres';
import type { Cell, TableSpec } from '../../query/types';
import { ConcurrentRunError, SinkConfigError, SinkError, SinkStateError, TypeConflictError } from '../errors';
import type { ExportSink, RunContext, SourceCheckpoint } from '../types';
import type { SqlConnection } from './connection';
import { pgName, qualified, quoteIdent } from './naming';
import {
  copyText,
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
  /** @default 5000 */
  readonly batchRows?: number;
  /** For messages: where the tables go (never holds a password). */
  readonly description?: string;
}

/** How one declared table maps onto the database. */
interface TablePlan {
  readonly spec: TableSpec;
  readonly pgTable: string;
  readonly pgColumns: readonly string[];
  readonly idIndex: number;
}

type ColumnType = PgType | 'other';

/** Advisory lock id for an export: 64 bits of a hash, as a signed bigint string. */
export function exportLockId(checkpointKey: string, project: string): string {
  const digest = createHash('sha256').update(`ccexport\0${checkpointKey}\0${project}`, 'utf8').digest();
  return digest.readBigInt64BE(0).toString();
}

function csvField(text: string | null): string {
  // Unquoted empty is NULL in COPY CSV; every value is quoted so an empty string stays a string.
  return text === null ? '' : `"${text.replaceAll('"', '""')}"`;
}

/**
 * Tables in PostgreSQL (a server, or embedded PGlite through the same code): created on first use
 * with `id` text primary key, new columns added as fields appear, columns widened to text when a value
 * does not fit (unless `strictTypes`). Rows are upserted in batches: COPY into a temporary table, then
 * one `INSERT ... ON CONFLICT (id) DO UPDATE SET c = COALESCE(excluded.c, t.c)`, so null never
 * overwrites a value (DET). Everything between two `commit` calls is one transaction, and the
 * checkpoints passed to `commit` are written in that same transaction.
 */
export class PostgresSink implements ExportSink {
  private db: SqlConnection | undefined;
  private readonly schema: string;
  private readonly batchRows: number;
  private plans = new Map<string, TablePlan>();
  /** Columns per PostgreSQL table name, as they are inside the open transaction. */
  private columns = new Map<string, Map<string, ColumnType>>();
  private pending = new Map<string, Cell[][]>();
  private run: RunContext | undefined;
  private inTransaction = false;
  private locked = false;
  private state: 'new' | 'running' | 'closed' = 'new';

  constructor(
    private readonly connect: () => Promise<SqlConnection>,
    private readonly options: PostgresSinkOptions = {},
  ) {
    this.schema = options.schema ?? 'public';
    this.batchRows = options.batchRows ?? 5000;
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
    if (this.schema !== 'public')
      await this.db.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(this.schema)}`);
    await this.db.query(checkpointTableDdl(this.schema));
    await this.loadColumns();
  }

  private async loadColumns(): Promise<void> {
    const names = [...this.plans.values()].map((p) => p.pgTable);
    const { rows } = await this.db!.query<{ table_name: string; column_name: string; data_type: string }>(
      `SELECT table_name, column_name, data_type FROM information_schema.columns
        WHERE table_schema = $1 AND table_name = ANY($2::text[]) ORDER BY ordinal_position`,
      [this.schema, names],
    );
    this.columns.clear();
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
    if (!this.plans.has(table))
      throw new SinkConfigError(`writeRows for table "${table}", which begin did not declare`);
    let pending = this.pending.get(table);
    if (!pending) {
      pending = [];
      this.pending.set(table, pending);
    }
    for (const row of rows) pending.push(row);
    if (pending.length >= this.batchRows) await this.flush(table);
  }

  private async ensureTransaction(db: SqlConnection): Promise<void> {
    if (!this.inTransaction) {
      await db.query('BEGIN');
      this.inTransaction = true;
    }
  }

  private async flushAll(): Promise<void> {
    for (const table of this.pending.keys()) await this.flush(table);
  }

  private async flush(table: string): Promise<void> {
    const db = this.requireRunning('flush');
    const rows = this.pending.get(table);
    this.pending.delete(table);
    if (!rows || rows.length === 0) return;
    const plan = this.plans.get(table)!;
    await this.ensureTransaction(db);
    const merged = mergeById(plan, rows);
    const columns = await this.evolveSchema(db, plan, merged);
    await this.upsert(db, plan, merged, columns);
  }

  /** Creates the table, adds and widens columns so every value of the batch fits; returns the columns to write. */
  private async evolveSchema(
    db: SqlConnection,
    plan: TablePlan,
    rows: readonly Cell[][],
  ): Promise<Map<number, ColumnType>> {
    const target = qualified(this.schema, plan.pgTable);
    let existing = this.columns.get(plan.pgTable);
    if (!existing) {
      await db.query(`CREATE TABLE IF NOT EXISTS ${target} (${quoteIdent('id')} text PRIMARY KEY)`);
      existing = new Map([['id', 'text']]);
      this.columns.set(plan.pgTable, existing);
    }
    const write = new Map<number, ColumnType>();
    for (let i = 0; i < plan.pgColumns.length; i++) {
      const column = plan.pgColumns[i]!;
      if (i === plan.idIndex) {
        write.set(i, 'text');
        continue;
      }
      const declared = plan.spec.dataTypes[i];
      const current = existing.get(column);
      let type: ColumnType | undefined = current ?? (declared ? pgTypeForDataType(declared) : undefined);
      for (const row of rows) {
        const cell = row[i] ?? null;
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
        }
      }
      if (type === undefined) continue; // always null and no declared type: DET creates no column
      if (current === undefined) {
        await db.query(
          `ALTER TABLE ${target} ADD COLUMN IF NOT EXISTS ${quoteIdent(column)} ${sqlType(type as PgType)}`,
        );
        existing.set(column, type);
      } else if (current !== type) {
        await db.query(
          `ALTER TABLE ${target} ALTER COLUMN ${quoteIdent(column)} TYPE ${sqlType(type as PgType)} ` +
            `USING ${quoteIdent(column)}::${sqlType(type as PgType)}`,
        );
        existing.set(column, type);
      }
      write.set(i, type);
    }
    return write;
  }

  private async upsert(
    db: SqlConnection,
    plan: TablePlan,
    rows: readonly Cell[][],
    columns: Map<number, ColumnType>,
  ): Promise<void> {
    const indexes = [...columns.keys()];
    const names = indexes.map((i) => quoteIdent(plan.pgColumns[i]!));
    const stage = quoteIdent('ccexport_stage');
    const target = qualified(this.schema, plan.pgTable);
    let csv = '';
    for (const row of rows) {
      csv += `${indexes.map((i) => csvField(copyText(row[i] ?? null, columns.get(i)!))).join(',')}\n`;
    }
    await db.query(`CREATE TEMP TABLE ${stage} (LIKE ${target})`);
    try {
      await db.copyCsv(`${stage} (${names.join(', ')})`, csv);
      const updates = indexes
        .filter((i) => i !== plan.idIndex)
        .map((i) => {
          const c = quoteIdent(plan.pgColumns[i]!);
          return `${c} = COALESCE(excluded.${c}, t.${c})`;
        });
      await db.query(
        `INSERT INTO ${target} AS t (${names.join(', ')}) SELECT ${names.join(', ')} FROM ${stage} ` +
          `ON CONFLICT (${quoteIdent('id')}) DO ${updates.length ? `UPDATE SET ${updates.join(', ')}` : 'NOTHING'}`,
      );
    } finally {
      await db.query(`DROP TABLE IF EXISTS ${stage}`);
    }
  }

  async commit(checkpoints: readonly SourceCheckpoint[]): Promise<void> {
    const db = this.requireRunning('commit');
    await this.flushAll();
    if (checkpoints.length > 0) {
      await this.ensureTransaction(db);
      await writePgCheckpoints(db, this.schema, checkpoints, this.run!.runId);
    }
    if (this.inTransaction) {
      await db.query('COMMIT');
      this.inTransaction = false;
    }
  }

  async finish(): Promise<void> {
    const db = this.requireRunning('finish');
    await this.flushAll();
    if (this.inTransaction) {
      await db.query('COMMIT');
      this.inTransaction = false;
    }
    this.state = 'closed';
    await this.close();
  }

  async abort(_error: unknown): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.pending.clear();
    if (this.db && this.inTransaction) await this.db.query('ROLLBACK').catch(() => undefined);
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
  ): Promise<SourceCheckpoint | null> {
    // Inside a run, read on the run's connection (a second PGlite handle on the same folder is not possible).
    if (this.db) return readPgCheckpoint(this.db, this.schema, checkpointKey, project, dataSource);
    const db = await this.connect();
    try {
      return await readPgCheckpoint(db, this.schema, checkpointKey, project, dataSource);
    } finally {
      await db.close();
    }
  }
}

function describeValue(cell: Exclude<Cell, null>): string {
  if (cell instanceof Date) return `the date ${cell.toISOString()}`;
  if (typeof cell === 'object') return 'a JSON value';
  const text = String(cell);
  return `the ${typeof cell} "${text.length > 40 ? `${text.slice(0, 40)}…` : text}"`;
}

/** Validates declared tables and maps their names to PostgreSQL identifiers. */
export function planTables(tables: readonly TableSpec[]): Map<string, TablePlan> {
  const plans = new Map<string, TablePlan>();
  const pgTables = new Map<string, string>();
  for (const spec of tables) {
    const idIndex = spec.headings.indexOf('id');
    if (idIndex < 0) {
      throw new SinkConfigError(
        `Table "${spec.name}" has no "id" column; SQL output upserts on id (add a Field named id), headings: ${spec.headings.join(', ')}`,
      );
    }
    const pgTable = pgName(spec.name);
    if (pgTable === CHECKPOINT_TABLE || pgTables.has(pgTable)) {
      throw new SinkConfigError(
        `Table "${spec.name}" maps to the PostgreSQL table "${pgTable}", which ${pgTable === CHECKPOINT_TABLE ? 'holds our checkpoints' : `table "${pgTables.get(pgTable)}" also uses`}`,
      );
    }
    pgTables.set(pgTable, spec.name);
    const pgColumns = spec.headings.map(pgName);
    const seen = new Map<string, string>();
    spec.headings.forEach((heading, i) => {
      const column = pgColumns[i]!;
      if (seen.has(column)) {
        throw new SinkConfigError(
          `Table "${spec.name}" has two columns named "${heading}" in PostgreSQL ("${column}")`,
        );
      }
      seen.set(column, heading);
    });
    plans.set(spec.name, { spec, pgTable, pgColumns, idIndex });
  }
  return plans;
}

/**
 * One row per id, in first-seen order: a later row's non-null values overwrite earlier ones, exactly
 * as applying the upserts one after the other would (ON CONFLICT cannot touch a row twice per statement).
 */
export function mergeById(plan: TablePlan, rows: readonly Cell[][]): Cell[][] {
  const byId = new Map<string, Cell[]>();
  rows.forEach((row, n) => {
    const raw = row[plan.idIndex];
    if (raw === null || raw === undefined || raw === '') {
      throw new SinkError(
        `Row ${n + 1} of a batch for table "${plan.spec.name}" has an empty id; SQL output needs one`,
      );
    }
    const id =
      typeof raw === 'string'
        ? raw
        : typeof raw === 'object' && !(raw instanceof Date)
          ? JSON.stringify(raw)
          : String(raw);
    const earlier = byId.get(id);
    const normal = [...row];
    normal[plan.idIndex] = id;
    if (!earlier) byId.set(id, normal);
    else
      normal.forEach((cell, i) => {
        if (cell !== null && cell !== undefined) earlier[i] = cell;
      });
  });
  return [...byId.values()];
}

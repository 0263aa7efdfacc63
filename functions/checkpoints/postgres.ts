import type { PullPosition } from '../commcare/types';
import type { SqlConnection } from '../sinks/postgres/connection';
import { qualified } from '../sinks/postgres/naming';
import type { SourceCheckpoint } from '../sinks/types';

/** Our checkpoint table. DET's `commcare_export_runs` is left untouched. */
export const CHECKPOINT_TABLE = 'commcare_export_checkpoints';

export function checkpointTableDdl(schema: string): string {
  return `CREATE TABLE IF NOT EXISTS ${qualified(schema, CHECKPOINT_TABLE)} (
  checkpoint_key text NOT NULL,
  project text NOT NULL,
  data_source text NOT NULL,
  tables jsonb NOT NULL,
  position jsonb NOT NULL,
  written_at timestamptz NOT NULL,
  run_id text,
  PRIMARY KEY (checkpoint_key, project, data_source)
)`;
}

/** Upserts checkpoints; the caller runs this inside the transaction that holds the rows they cover. */
export async function writePgCheckpoints(
  db: SqlConnection,
  schema: string,
  checkpoints: readonly SourceCheckpoint[],
  runId: string,
): Promise<void> {
  for (const c of checkpoints) {
    await db.query(
      `INSERT INTO ${qualified(schema, CHECKPOINT_TABLE)}
         (checkpoint_key, project, data_source, tables, position, written_at, run_id)
       VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6::timestamptz, $7)
       ON CONFLICT (checkpoint_key, project, data_source) DO UPDATE SET
         tables = excluded.tables, position = excluded.position,
         written_at = excluded.written_at, run_id = excluded.run_id`,
      [
        c.checkpointKey,
        c.project,
        c.dataSource,
        JSON.stringify(c.tables),
        JSON.stringify(c.position),
        c.writtenAt,
        runId,
      ],
    );
  }
}

interface CheckpointRow {
  checkpoint_key: string;
  project: string;
  data_source: string;
  tables: string[] | string;
  position: PullPosition | string;
  written_at: Date | string;
}

function parseJson<T>(value: T | string): T {
  return typeof value === 'string' ? (JSON.parse(value) as T) : value;
}

/** The latest committed checkpoint, or null (also when the table does not exist yet). */
export async function readPgCheckpoint(
  db: SqlConnection,
  schema: string,
  checkpointKey: string,
  project: string,
  dataSource: string,
): Promise<SourceCheckpoint | null> {
  const exists = await db.query<{ name: string | null }>('SELECT to_regclass($1) AS name', [
    qualified(schema, CHECKPOINT_TABLE),
  ]);
  if (!exists.rows[0]?.name) return null;
  const { rows } = await db.query<CheckpointRow>(
    `SELECT checkpoint_key, project, data_source, tables, position, written_at
       FROM ${qualified(schema, CHECKPOINT_TABLE)}
      WHERE checkpoint_key = $1 AND project = $2 AND data_source = $3`,
    [checkpointKey, project, dataSource],
  );
  const row = rows[0];
  if (!row) return null;
  const writtenAt =
    row.written_at instanceof Date ? row.written_at.toISOString() : new Date(row.written_at).toISOString();
  return {
    checkpointKey: row.checkpoint_key,
    project: row.project,
    dataSource: row.data_source,
    tables: parseJson(row.tables),
    position: parseJson(row.position),
    writtenAt,
  };
}

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
  config jsonb,
  PRIMARY KEY (checkpoint_key, project, data_source)
)`;
}

/**
 * Columns added to the checkpoint table after its first version, for tables an older version created:
 * `config` holds the tables' columns and the config fingerprint at each commit (`SourceCheckpoint`).
 */
export function checkpointTableUpgrades(schema: string): string[] {
  return [`ALTER TABLE ${qualified(schema, CHECKPOINT_TABLE)} ADD COLUMN IF NOT EXISTS config jsonb`];
}

/** What the `config` column holds. */
interface CheckpointConfig {
  readonly columns?: Readonly<Record<string, readonly string[]>>;
  readonly fingerprint?: string;
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
         (checkpoint_key, project, data_source, tables, position, written_at, run_id, config)
       VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6::timestamptz, $7, $8::jsonb)
       ON CONFLICT (checkpoint_key, project, data_source) DO UPDATE SET
         tables = excluded.tables, position = excluded.position,
         written_at = excluded.written_at, run_id = excluded.run_id, config = excluded.config`,
      [
        c.checkpointKey,
        c.project,
        c.dataSource,
        JSON.stringify(c.tables),
        JSON.stringify(c.position),
        c.writtenAt,
        runId,
        c.columns === undefined && c.configFingerprint === undefined
          ? null
          : JSON.stringify({
              ...(c.columns !== undefined ? { columns: c.columns } : {}),
              ...(c.configFingerprint !== undefined ? { fingerprint: c.configFingerprint } : {}),
            } satisfies CheckpointConfig),
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
  config: CheckpointConfig | string | null;
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
    // `config` through to_jsonb: a table an older version created, read before a run upgraded it, has none.
    `SELECT checkpoint_key, project, data_source, tables, position, written_at, to_jsonb(c) -> 'config' AS config
       FROM ${qualified(schema, CHECKPOINT_TABLE)} c
      WHERE checkpoint_key = $1 AND project = $2 AND data_source = $3`,
    [checkpointKey, project, dataSource],
  );
  const row = rows[0];
  if (!row) return null;
  const writtenAt =
    row.written_at instanceof Date ? row.written_at.toISOString() : new Date(row.written_at).toISOString();
  const config = row.config === null ? null : parseJson(row.config);
  return {
    checkpointKey: row.checkpoint_key,
    project: row.project,
    dataSource: row.data_source,
    tables: parseJson(row.tables),
    position: parseJson(row.position),
    writtenAt,
    ...(config?.columns ? { columns: config.columns } : {}),
    ...(config?.fingerprint ? { configFingerprint: config.fingerprint } : {}),
  };
}

import type { PullPosition } from '../commcare/types';
import type { SqlConnection } from '../sinks/postgres/connection';
import { qualified } from '../sinks/postgres/naming';
import { DET_CHECKPOINT_TABLE } from '../sinks/postgres/reserved';

/**
 * Taking over a warehouse that DET (`commcare-export` 1.15) has been filling: reading its checkpoint
 * table `commcare_export_runs` (DET's `commcare_export/checkpoint.py` and its alembic migrations).
 *
 * DET writes one row per table at every batch and at the end of a run: `id` (uuid hex), `query_file_name`,
 * `query_file_md5`, `table_name`, `key` (`--checkpoint-key`, else null), `project`, `commcare` (the HQ
 * URL), `since_param` (the last record's `indexed_on`, naive UTC ISO text), `time_of_run` (naive UTC ISO
 * text), `final`, `data_source`, `last_doc_id`, `pagination_mode` (`date_indexed`, `date_modified`,
 * `cursor`; null on legacy rows) and `cursor`. All are text except `final` (boolean).
 *
 * DET's own rule for resuming, followed here: with a checkpoint key, the rows of that `key`; without,
 * the rows whose `query_file_md5` is the query file's MD5 and whose `key` is null (our checkpoint key is
 * `--checkpoint-key`, else that MD5, so one lookup covers both). Per table the latest row (by
 * `time_of_run`), and of those the earliest, so that no table misses records.
 *
 * Decisions beyond DET's: a data source is taken over only when every one of its tables has a DET
 * checkpoint (DET would resume from the tables it finds and leave a new table without its older
 * records); UCR cursor checkpoints are not taken over (their position is HQ's opaque cursor); a legacy
 * `date_modified` checkpoint resumes at `indexed_on >= since_param`, which repeats some records but
 * misses none (HQ indexes a record after it is modified). A run only reads DET's table, never writes it:
 * our own checkpoints go to `commcare_export_checkpoints`, and DET can still be run against its own rows.
 * Only `ccexport checkpoint` changes DET's rows, when asked (`admin.ts`).
 */
export interface DetCheckpoint {
  readonly position: PullPosition;
  readonly sinceParam: string;
  readonly timeOfRun: string;
  readonly paginationMode: string;
  readonly queryFileName: string | null;
  readonly tables: readonly string[];
}

interface DetRunRow {
  table_name: string;
  since_param: string | null;
  time_of_run: string | null;
  pagination_mode: string | null;
  query_file_name: string | null;
}

/** DET's last checkpoint covering all of `tables`, or null (also when DET's table does not exist). */
export async function readDetCheckpoint(
  db: SqlConnection,
  schema: string,
  checkpointKey: string,
  project: string,
  tables: readonly string[],
): Promise<DetCheckpoint | null> {
  if (tables.length === 0) return null;
  const table = qualified(schema, DET_CHECKPOINT_TABLE);
  const exists = await db.query<{ name: string | null }>('SELECT to_regclass($1) AS name', [table]);
  if (!exists.rows[0]?.name) return null;
  const { rows } = await db.query<DetRunRow>(
    `SELECT DISTINCT ON (table_name) table_name, since_param, time_of_run, pagination_mode, query_file_name
       FROM ${table}
      WHERE project = $1 AND table_name = ANY($2::text[])
        AND (key = $3 OR (key IS NULL AND query_file_md5 = $3))
      ORDER BY table_name, time_of_run DESC NULLS LAST`,
    [project, [...tables], checkpointKey],
  );
  if (rows.length < new Set(tables).size) return null;
  const earliest = [...rows].sort((a, b) => (a.time_of_run ?? '').localeCompare(b.time_of_run ?? ''))[0];
  if (!earliest?.since_param) return null;
  const mode = earliest.pagination_mode || 'date_modified';
  if (mode !== 'date_indexed' && mode !== 'date_modified') return null;
  return {
    position: { indexedOn: earliest.since_param, boundaryIds: [] },
    sinceParam: earliest.since_param,
    timeOfRun: earliest.time_of_run ?? '',
    paginationMode: mode,
    queryFileName: earliest.query_file_name,
    tables: rows.map((r) => r.table_name),
  };
}

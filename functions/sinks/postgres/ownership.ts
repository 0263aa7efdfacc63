/**
 * Which existing tables the PostgreSQL output may write into. A run upserts rows, adds and widens
 * columns, and removes the rows of archived records; done to a table somebody else made (an
 * application's `forms` table in the same schema), that would change or lose their data. So the output
 * writes only into tables it created, and refuses a run whose table name is taken, before it writes.
 *
 * A table is ours when:
 * - its comment starts with `ccexport` (every table the output creates gets `OWNED_TABLE_COMMENT`, in
 *   the transaction that creates it; a comment survives pg_dump and restore, an OID would not);
 * - or a checkpoint of ours (`commcare_export_checkpoints.tables`) names it: tables created by versions
 *   that did not comment them;
 * - or DET's checkpoint table (`commcare_export_runs.table_name`) names it: DET's tables, which a run
 *   takes over as they are (`checkpoints/det-runs.ts`).
 *
 * - or it is one of DET's built-in tables (`commcare_users`, `commcare_locations`): DET fills them with
 *   `--users`/`--locations` without a checkpoint, and no query file may use these names (they are
 *   reserved for them, in DET and here), so a table of that name is DET's or ours.
 *
 * Anything else with the name (a table, view, sequence, index, foreign table) is refused with
 * `SinkConfigError` (permanent on Lambda) naming it and what to do.
 */
import { CHECKPOINT_TABLE } from '../../checkpoints/postgres';
import { LOCATIONS_TABLE_NAME, USERS_TABLE_NAME } from '../../query/builtin';
import { SinkConfigError } from '../errors';
import type { SqlConnection } from './connection';
import { qualified } from './naming';
import { DET_CHECKPOINT_TABLE } from './reserved';

/** Set on every table the output creates. */
export const OWNED_TABLE_COMMENT =
  'ccexport: created by the CommCare export (ccexport), which writes only into tables carrying this comment';

/** A comment that marks a table as the output's (the one above, or `ccexport` set by hand to hand a table over). */
export function isOwnedComment(comment: string | null | undefined): boolean {
  return typeof comment === 'string' && comment.startsWith('ccexport');
}

/** A table of the run as the query names it and as PostgreSQL does. */
export interface TableName {
  readonly name: string;
  readonly pgTable: string;
}

/** DET's built-in tables (query/builtin.ts), which only `--users`/`--locations` write. */
const BUILTIN_TABLES: ReadonlySet<string> = new Set([USERS_TABLE_NAME, LOCATIONS_TABLE_NAME]);

const KINDS: Record<string, string> = {
  r: 'table',
  p: 'partitioned table',
  v: 'view',
  m: 'materialized view',
  f: 'foreign table',
  S: 'sequence',
  i: 'index',
  I: 'partitioned index',
  c: 'composite type',
  t: 'TOAST table',
};

/**
 * Throws `SinkConfigError` naming every table of `tables` whose PostgreSQL name is taken in `schema` by
 * something the output did not create (see above). Reads only the catalog and the checkpoint tables.
 */
export async function refuseForeignTables(
  db: SqlConnection,
  schema: string,
  given: readonly TableName[],
  where: string,
): Promise<void> {
  const tables = given.filter((t) => !BUILTIN_TABLES.has(t.pgTable));
  if (tables.length === 0) return;
  const { rows } = await db.query<{ relname: string; relkind: string; comment: string | null }>(
    `SELECT c.relname, c.relkind, obj_description(c.oid, 'pg_class') AS comment
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = ANY($2::text[])`,
    [schema, tables.map((t) => t.pgTable)],
  );
  const unmarked = rows.filter(
    (r) => !((r.relkind === 'r' || r.relkind === 'p') && isOwnedComment(r.comment)),
  );
  if (unmarked.length === 0) return;
  const listed = await namesInCheckpoints(
    db,
    schema,
    tables.filter((t) => unmarked.some((r) => r.relname === t.pgTable)).map((t) => t.name),
  );
  const foreign = unmarked.filter(
    (r) =>
      !(r.relkind === 'r' || r.relkind === 'p') ||
      !tables.some((t) => t.pgTable === r.relname && listed.has(t.name)),
  );
  if (foreign.length === 0) return;
  const lines = foreign.map((r) => {
    const table = tables.find((t) => t.pgTable === r.relname)!;
    const kind = KINDS[r.relkind] ?? 'relation';
    const target = qualified(schema, r.relname);
    const commented = r.comment ? ` and its comment is not ccexport's ("${short(r.comment)}")` : '';
    return (
      `table "${table.name}" would be written into ${target}, which is a ${kind} that ccexport did not create ` +
      `(no checkpoint of ccexport or of DET names it${commented})`
    );
  });
  const example = qualified(schema, foreign[0]!.relname);
  throw new SinkConfigError(
    `${where} already has ${foreign.length === 1 ? 'a relation' : 'relations'} of the same name: ${lines.join('; ')}. ` +
      'ccexport writes only into tables it created, so this run stops before writing anything. ' +
      'Give the table another name in the query file (its sheet or Name), or drop or rename the existing ' +
      `${foreign.length === 1 ? 'one' : 'ones'}, or export into another schema. If it is a table of an ` +
      `earlier ccexport export that you want to keep filling, hand it over: COMMENT ON TABLE ${example} IS 'ccexport';`,
  );
}

/** Which of `names` a checkpoint of ours or of DET names (tables created before tables were commented). */
async function namesInCheckpoints(
  db: SqlConnection,
  schema: string,
  names: readonly string[],
): Promise<Set<string>> {
  const found = new Set<string>();
  if (names.length === 0) return found;
  const exists = async (table: string) =>
    (await db.query<{ name: string | null }>('SELECT to_regclass($1) AS name', [qualified(schema, table)]))
      .rows[0]?.name != null;
  if (await exists(CHECKPOINT_TABLE)) {
    const { rows } = await db.query<{ name: string }>(
      `SELECT DISTINCT t.name FROM ${qualified(schema, CHECKPOINT_TABLE)} c,
              jsonb_array_elements_text(c.tables) AS t(name)
        WHERE t.name = ANY($1::text[])`,
      [[...names]],
    );
    for (const row of rows) found.add(row.name);
  }
  if (await exists(DET_CHECKPOINT_TABLE)) {
    const { rows } = await db.query<{ name: string }>(
      `SELECT DISTINCT table_name AS name FROM ${qualified(schema, DET_CHECKPOINT_TABLE)}
        WHERE table_name = ANY($1::text[])`,
      [[...names]],
    );
    for (const row of rows) found.add(row.name);
  }
  return found;
}

function short(text: string): string {
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}

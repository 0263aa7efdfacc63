/**
 * What the PostgreSQL output refuses in a set of tables, as plain checks over names: `planTables`
 * raises the first problem at the start of a run, and `validate-query --output-format sql` reports
 * all of them before any run, so the two can never disagree.
 */
import { CHECKPOINT_TABLE } from '../../checkpoints/postgres';
import { truncateUtf8 } from '../cells';
import { PG_MAX_IDENTIFIER_BYTES, pgName } from './naming';

/** DET's own checkpoint table: a table of that name would mix export rows into DET's run history. */
export const DET_CHECKPOINT_TABLE = 'commcare_export_runs';

/** Ids a sliced reconcile has listed so far (postgres/reconcile.ts). */
export const RECONCILE_IDS_TABLE = 'commcare_export_reconcile_ids';

/** The index PostgreSQL names for a table's primary key: `<table>_pkey`, the table cut to fit 63 bytes. */
export function primaryKeyIndexName(pgTable: string): string {
  return `${truncateUtf8(pgTable, PG_MAX_IDENTIFIER_BYTES - '_pkey'.length)}_pkey`;
}

/**
 * Relations of the exporter and of DET in the target schema, with what each holds. Tables, indexes and
 * sequences share one namespace per schema, so a table may take none of these names.
 */
const RESERVED_RELATIONS: ReadonlyMap<string, string> = new Map([
  [CHECKPOINT_TABLE, 'holds our checkpoints'],
  [primaryKeyIndexName(CHECKPOINT_TABLE), "is the index of our checkpoints' primary key"],
  [DET_CHECKPOINT_TABLE, "holds DET's checkpoints"],
  [primaryKeyIndexName(DET_CHECKPOINT_TABLE), "is the index of DET's checkpoints' primary key"],
  ['alembic_version', "holds the version of DET's tables (DET's alembic migrations)"],
  [RECONCILE_IDS_TABLE, 'holds the ids a sliced reconcile has listed'],
  [`${RECONCILE_IDS_TABLE}_run`, 'is the index of the ids a sliced reconcile has listed'],
]);

export interface TableNameProblem {
  /** The table's name as the query file gives it. */
  readonly table: string;
  readonly message: string;
}

export function pgTableProblems(
  tables: readonly { readonly name: string; readonly headings: readonly string[] }[],
): TableNameProblem[] {
  const problems: TableNameProblem[] = [];
  const pgTables = new Map<string, string>();
  for (const table of tables) {
    const pgTable = pgName(table.name);
    const owner = tables.find((t) => t !== table && primaryKeyIndexName(pgName(t.name)) === pgTable);
    const reserved =
      RESERVED_RELATIONS.get(pgTable) ??
      (owner ? `is the index of table "${owner.name}"'s primary key (PostgreSQL names it so)` : undefined);
    const other = pgTables.get(pgTable);
    if (reserved || other !== undefined) {
      problems.push({
        table: table.name,
        message:
          `Table "${table.name}" maps to the PostgreSQL table "${pgTable}", which ` +
          `${reserved ?? `table "${other}" also uses`}; rename the table (its sheet or Name) in the query file`,
      });
    }
    if (!pgTables.has(pgTable)) pgTables.set(pgTable, table.name);
    const columns = new Map<string, string>();
    for (const heading of table.headings) {
      const column = pgName(heading);
      const first = columns.get(column);
      if (first !== undefined) {
        problems.push({
          table: table.name,
          message:
            first === heading
              ? `Table "${table.name}" has two columns named "${heading}"; PostgreSQL needs distinct column names`
              : `Table "${table.name}" has columns "${first}" and "${heading}", which are both "${column}" in PostgreSQL`,
        });
      } else {
        columns.set(column, heading);
      }
    }
  }
  return problems;
}

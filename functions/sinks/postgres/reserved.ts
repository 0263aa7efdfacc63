/**
 * What the PostgreSQL output refuses in a set of tables, as plain checks over names: `planTables`
 * raises the first problem at the start of a run, and `validate-query --output-format sql` reports
 * all of them before any run, so the two can never disagree.
 */
import { CHECKPOINT_TABLE } from '../../checkpoints/postgres';
import { pgName } from './naming';

/** DET's own checkpoint table: a table of that name would mix export rows into DET's run history. */
export const DET_CHECKPOINT_TABLE = 'commcare_export_runs';

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
    const reserved =
      pgTable === CHECKPOINT_TABLE
        ? 'holds our checkpoints'
        : pgTable === DET_CHECKPOINT_TABLE
          ? "holds DET's checkpoints"
          : undefined;
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

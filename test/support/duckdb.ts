/**
 * DuckDB (the Python package, installed by .ci/run with pip) as the independent reader of the Parquet
 * files we write and the engine that runs the latest-state SQL. Each call runs one python3 process that
 * executes the statements in order and prints the last one's result as JSON.
 */
import { spawnSync } from 'node:child_process';

const PYTHON = process.env.CCEXPORT_TEST_PYTHON ?? 'python3';

const SCRIPT = `
import datetime, decimal, json, sys
import duckdb
statements = json.load(sys.stdin)
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
result = None
for sql in statements:
    result = con.execute(sql)
columns = [d[0] for d in result.description]
types = [str(d[1]) for d in result.description]
def plain(v):
    if isinstance(v, datetime.datetime):
        return v.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    return v
rows = [[plain(v) for v in row] for row in result.fetchall()]
json.dump({"columns": columns, "types": types, "rows": rows}, sys.stdout)
`;

export interface DuckResult {
  readonly columns: string[];
  /** DuckDB's type names (VARCHAR, BIGINT, BOOLEAN, DATE, TIMESTAMP, ...). */
  readonly types: string[];
  /** Timestamps as `YYYY-MM-DD HH:MM:SS.mmm` (UTC), dates as `YYYY-MM-DD`. */
  readonly rows: unknown[][];
}

/** Whether python3 can import duckdb. In CI it must (the tests fail instead of skipping). */
export function duckdbAvailable(): boolean {
  const probe = spawnSync(PYTHON, ['-c', 'import duckdb'], { stdio: 'ignore' });
  if (probe.status === 0) return true;
  if (process.env.CI)
    throw new Error('DuckDB for Python is missing: .ci/run installs it with "pip install duckdb"');
  return false;
}

/** Runs the statements in one DuckDB connection and returns the last one's rows. */
export function duckdb(...statements: string[]): DuckResult {
  const run = spawnSync(PYTHON, ['-c', SCRIPT], {
    input: JSON.stringify(statements),
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  if (run.status !== 0) throw new Error(`duckdb failed: ${run.stderr || run.error?.message}`);
  return JSON.parse(run.stdout) as DuckResult;
}

/** A path or glob as a SQL string literal. */
export function sqlString(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

/**
 * The deletion records of a table folder as Athena reads them through the Glue deletions table: text
 * columns, the header skipped, and the object each record was read from as `"$path"` (Athena's hidden
 * column; DuckDB's `filename`).
 */
export function duckdbDeletionRecords(tableFolder: string): string {
  return (
    `(SELECT *, filename AS "$path" FROM read_csv(${sqlString(`${tableFolder}/deletions/*.csv`)}, header = true, ` +
    `all_varchar = true, filename = true, columns = {'id': 'VARCHAR', 'deleted_at': 'VARCHAR', 'reason': 'VARCHAR'}))`
  );
}

/**
 * The export's manifests as the views read them through the Glue table `ccexport_manifests`. Athena's
 * UNNEST of an array of structs gives a column per struct field, DuckDB's gives one struct column; so
 * here `deletions` is the list of the keys alone, and the views' `UNNEST(deletions) AS u(key)` reads the
 * same in both.
 */
export function duckdbManifests(output: string): string {
  return (
    `(SELECT list_transform(deletions, x -> x."key") AS deletions FROM read_json(${sqlString(`${output}/manifests/*.json`)}, ` +
    `columns = {'deletions': 'STRUCT("key" VARCHAR)[]'}))`
  );
}

import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ccexport } from '../support/cli-process';
import { duckdb, duckdbAvailable, sqlString } from '../support/duckdb';
import { TABLE_SHEET_HEADINGS, workbook } from '../support/query-workbook';
import { sandboxAndFolder, sandboxExportArgs } from '../support/sandbox-export';

/**
 * `ccexport --output-format parquet` with a query whose Data Types do not fit every answer HQ sends,
 * typed as a user types it: a value its typed column cannot take stops the run with a message naming
 * table, column, row id and value, as the PostgreSQL output stops; it is never written as null.
 */

const KEY = 'parquet-types-key-7d21';
const USER = 'analyst@example.org';
const PROJECT = 'district';
const REGISTRATION = 'http://openrosa.org/formdesigner/5C1B5E2A-7F3D-4E11-9C2B-REGISTRATION';

const hq = sandboxAndFolder(
  {
    seed: 23,
    projects: [{ name: PROJECT, forms: 40, cases: 5 }],
    credentials: [{ username: USER, apiKey: KEY }],
  },
  'ccexport-parquet-types-',
);

/** A query file of one `households` table over every form, with `column` typed `integer`. */
async function householdsQuery(name: string, column: [field: string, source: string]): Promise<string> {
  const path = join(hq.work, name);
  const rows = [
    TABLE_SHEET_HEADINGS,
    ['form', null, null, 'households', 'id', 'id', null, null, null, null],
    [null, null, null, null, 'xmlns', 'form.@xmlns', null, null, null, null],
    [null, null, null, null, column[0], column[1], null, null, 'integer', null],
  ];
  writeFileSync(path, await workbook([{ name: 'Households', rows }]));
  return path;
}

function run(query: string, output: string, ...extra: string[]) {
  const source = { url: hq.sandbox.url, project: PROJECT, username: USER, query };
  return ccexport(sandboxExportArgs(source, 'parquet', output, '--auth-mode', 'apikey', ...extra), {
    ...process.env,
    CCEXPORT_API_KEY: KEY,
  });
}

function parquetFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.parquet'));
}

describe('ccexport run --output-format parquet with Data Types', () => {
  it('fails naming table, column, row id and value when an answer does not read as its Data Type', async () => {
    // prepare: household names declared as integers
    const query = await householdsQuery('names-as-integers.xlsx', ['household_name', 'form.household_name']);
    const output = join(hq.work, 'names');

    // act
    const result = await run(query, output);

    // assert
    expect(result.code, result.out).not.toBe(0);
    expect(result.err).toMatch(
      /DeclaredTypeError.*Table "households", column "household_name" \(bigint\), row id "[^"]+": the string "[^"]+" cannot be read as bigint/,
    );
    expect(parquetFiles(output)).toEqual([]);
  });

  it.skipIf(!duckdbAvailable())(
    'writes answers that read as the Data Type, and the missing-value text of forms without the question as null',
    async () => {
      // prepare: household sizes ("1" to "9") declared as integers; only registration forms have one
      const query = await householdsQuery('sizes.xlsx', ['household_size', 'form.household_size']);
      const output = join(hq.work, 'sizes');

      // act
      const result = await run(query, output, '--missing-value', 'n/a');

      // assert
      expect(result.code, result.err).toBe(0);
      const read = duckdb(
        `SELECT xmlns = ${sqlString(REGISTRATION)} AS registration, typeof(household_size) AS type, ` +
          'count(*) AS n, count(household_size) AS sized, min(household_size) AS least ' +
          `FROM read_parquet(${sqlString(join(output, 'households', '**', '*.parquet'))}) GROUP BY ALL ORDER BY 1`,
      );
      const [others, registrations] = read.rows;
      expect(others?.slice(0, 2)).toEqual([false, 'BIGINT']);
      expect(others?.[3]).toBe(0);
      expect(registrations?.slice(0, 2)).toEqual([true, 'BIGINT']);
      expect(registrations?.[3]).toBe(registrations?.[2]);
      expect(registrations?.[4]).toBeGreaterThanOrEqual(1);
    },
  );
});

/**
 * Every refusal a run with `--output-format sql` makes before writing is also reported by
 * `ccexport validate-query FILE --output-format sql`, which connects nowhere: one table of hostile query
 * files, each run both ways, the same message expected from both. (A table that already exists in the
 * database and was not made by ccexport is the one refusal only a run can see: existing-tables.test.ts.)
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { CHAOS_KEY, CHAOS_USER, createDatabase, dropDatabase } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { formSheet, type SheetRows, workbook } from '../support/query-workbook';
import { sandboxAndFolder, sandboxExportArgs } from '../support/sandbox-export';

const PROJECT = 'refusals';
const hq = sandboxAndFolder(
  {
    seed: 4,
    projects: [{ name: PROJECT, forms: 10, cases: 2 }],
    credentials: [{ username: CHAOS_USER, apiKey: CHAOS_KEY }],
  },
  'ccexport-refusals-',
);
let databaseUrl: string;
const DATABASE = `refusals_${process.pid}`;

beforeAll(async () => {
  databaseUrl = await createDatabase(inject('pgUrl'), DATABASE);
});

afterAll(async () => {
  await dropDatabase(inject('pgUrl'), DATABASE).catch(() => undefined);
});

const plain = formSheet([
  ['id', 'id'],
  ['received', 'received_on'],
]);

/** A MiniLinq query (DET's JSON form) with one table per entry; every column reads the form id. */
function miniLinq(tables: [name: string, headings: string[]][]): string {
  const emit = (table: string, headings: string[]) => ({
    Emit: {
      table,
      headings: headings.map((h) => ({ Lit: h })),
      source: {
        Map: {
          body: { List: headings.map(() => ({ Ref: 'id' })) },
          source: { Apply: { fn: { Ref: 'api_data' }, args: [{ Lit: 'form' }] } },
          name: null,
        },
      },
      missing_value: null,
    },
  });
  return JSON.stringify({ List: tables.map(([name, headings]) => emit(name, headings)) });
}

interface Case {
  readonly refusal: string;
  readonly sheets?: { name: string; rows: SheetRows }[];
  readonly json?: string;
  readonly flags?: string[];
  /** What both the run and validate-query must say. */
  readonly says: string;
}

const CASES: Case[] = [
  {
    refusal: 'a table named like our checkpoint table',
    sheets: [{ name: 'commcare_export_checkpoints', rows: plain }],
    says: 'maps to the PostgreSQL table "commcare_export_checkpoints", which holds our checkpoints',
  },
  {
    refusal: "a table named like DET's checkpoint table",
    sheets: [{ name: 'commcare_export_runs', rows: plain }],
    says: "which holds DET's checkpoints",
  },
  {
    refusal: 'a table named like the ids table of a sliced reconcile',
    sheets: [{ name: 'commcare_export_reconcile_ids', rows: plain }],
    says: 'which holds the ids a sliced reconcile has listed',
  },
  {
    refusal: "a table named like DET's alembic_version table",
    sheets: [{ name: 'alembic_version', rows: plain }],
    says: "which holds the version of DET's tables",
  },
  {
    refusal: "a table named like another table's primary key index",
    sheets: [
      { name: 'visits', rows: plain },
      { name: 'visits_pkey', rows: plain },
    ],
    says: 'Table "visits_pkey" maps to the PostgreSQL table "visits_pkey", which is the index of table "visits"\'s primary key',
  },
  {
    refusal: 'a table named like a built-in table',
    sheets: [{ name: 'commcare_users', rows: plain }],
    says: 'table name "commcare_users" is reserved for the built-in users/locations tables',
  },
  {
    refusal: 'two columns of one name',
    sheets: [
      {
        name: 'visits',
        rows: formSheet([
          ['id', 'id'],
          ['when', 'received_on'],
          ['when', 'indexed_on'],
        ]),
      },
    ],
    says: 'Table "visits" has two columns named "when"',
  },
  {
    refusal: 'a column name over 63 bytes',
    sheets: [
      {
        name: 'visits',
        rows: formSheet([
          ['id', 'id'],
          ['x'.repeat(64), 'received_on'],
        ]),
      },
    ],
    says: `column name "${'x'.repeat(64)}" is 64 bytes; PostgreSQL allows at most 63`,
  },
  {
    refusal: 'a table without an id field',
    sheets: [{ name: 'visits', rows: formSheet([['received', 'received_on']]) }],
    says: 'table "visits" has no "id" field',
  },
  {
    refusal: 'two tables that are one PostgreSQL table',
    json: miniLinq([
      ['a\0b', ['id']],
      ['a_b', ['id']],
    ]),
    says: 'maps to the PostgreSQL table "a_b", which table "a\0b" also uses',
  },
  {
    refusal: 'two columns that are one PostgreSQL column',
    json: miniLinq([['visits', ['id', 'p\0q', 'p_q']]]),
    says: 'which are both "p_q" in PostgreSQL',
  },
  {
    refusal: 'a field named like a column --deletions mark adds',
    sheets: [
      {
        name: 'visits',
        rows: formSheet([
          ['id', 'id'],
          ['_deleted', 'archived'],
        ]),
      },
    ],
    flags: ['--deletions', 'mark'],
    says: 'table "visits" has a field named "_deleted", a column the run adds itself',
  },
];

async function cli(args: string[]) {
  const io = captureIO({ CCEXPORT_API_KEY: CHAOS_KEY });
  const code = await main(args, io);
  return { code, out: io.out() + io.err() };
}

describe('validate-query --output-format sql reports what a SQL run refuses', () => {
  for (const [n, c] of CASES.entries()) {
    it(`${c.refusal}: the run refuses before any request, and validate-query says the same`, async () => {
      const file = join(hq.work, `case-${n}.${c.json ? 'json' : 'xlsx'}`);
      writeFileSync(file, c.json ?? (await workbook(c.sheets ?? [])));
      const requestsBefore = hq.sandbox.requestLog.length;

      const source = { url: hq.sandbox.url, project: PROJECT, username: CHAOS_USER, query: file };
      const run = await cli(sandboxExportArgs(source, 'sql', databaseUrl, ...(c.flags ?? [])));
      const validate = await cli(['validate-query', file, '--output-format', 'sql', ...(c.flags ?? [])]);

      expect(run.code).not.toBe(0);
      expect(run.out).toContain(c.says);
      expect(validate.code).toBe(1);
      expect(validate.out).toContain(c.says);
      expect(hq.sandbox.requestLog.length).toBe(requestsBefore);
    });
  }

  it('left the database as it was: no table, not even the checkpoint table', async () => {
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      const { rows } = await client.query(`SELECT tablename FROM pg_tables WHERE schemaname = 'public'`);
      expect(rows).toEqual([]);
    } finally {
      await client.end();
    }
  });

  it('passes a query file the run accepts', async () => {
    const file = join(hq.work, 'fine.xlsx');
    writeFileSync(file, await workbook([{ name: 'visits', rows: plain }]));

    const validate = await cli(['validate-query', file, '--output-format', 'sql', '--deletions', 'mark']);

    expect(validate.code).toBe(0);
  });
});

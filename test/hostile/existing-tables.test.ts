/**
 * A table of the export's name that ccexport did not create (an application's own `Forms` table in the
 * same schema): the run must refuse before writing anything, naming the table and what to do, for every
 * SQL output (a PostgreSQL server and the embedded database), whether the table's columns differ from the
 * export's or match them. Tables ccexport made, and tables handed over with a `ccexport` comment, are
 * written into as before.
 */
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openEmbeddedDatabase } from '../../functions/sinks';
import { CHAOS_KEY, CHAOS_USER, createDatabase, dropDatabase } from '../chaos/support';
import { writeFormsQuery } from '../support/query-workbook';
import { runInProcess, sandboxAndFolder, sandboxExportArgs } from '../support/sandbox-export';

const PROJECT = 'owners';
const hq = sandboxAndFolder(
  {
    seed: 8,
    projects: [{ name: PROJECT, forms: 40, cases: 5 }],
    credentials: [{ username: CHAOS_USER, apiKey: CHAOS_KEY }],
  },
  'ccexport-owners-',
);
let query: string;
const databases: string[] = [];

beforeAll(async () => {
  query = await writeFormsQuery(join(hq.work, 'forms.xlsx'), [
    ['id', 'id'],
    ['received', 'received_on'],
  ]);
});

afterAll(async () => {
  for (const name of databases) await dropDatabase(inject('pgUrl'), name).catch(() => undefined);
});

async function freshDatabase(): Promise<string> {
  const name = `owners_${databases.length}_${process.pid}`;
  databases.push(name);
  return await createDatabase(inject('pgUrl'), name);
}

async function sql<R>(url: string, text: string): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text)).rows as R[];
  } finally {
    await client.end();
  }
}

async function runCli(output: string, ...extra: string[]) {
  return await command([], output, ...extra);
}

async function command(before: string[], output: string, ...extra: string[]) {
  const source = { url: hq.sandbox.url, project: PROJECT, username: CHAOS_USER, query };
  return await runInProcess([...before, ...sandboxExportArgs(source, 'sql', output, ...extra)], {
    CCEXPORT_API_KEY: CHAOS_KEY,
  });
}

/** What a user's table holds, in a form that shows any change: columns with types, then every row. */
const SNAPSHOT = `
  SELECT (SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
            FROM information_schema.columns WHERE table_name = 'Forms') AS columns,
         (SELECT json_agg(t ORDER BY t::text) FROM "Forms" t)::text AS rows,
         to_regclass('commcare_export_checkpoints') IS NOT NULL AS bookkeeping`;

const USER_TABLES = [
  {
    shape: 'different columns',
    ddl: `CREATE TABLE "Forms" (order_no integer PRIMARY KEY, customer text);
          INSERT INTO "Forms" VALUES (1, 'Amina'), (2, 'Bongani')`,
  },
  {
    shape: "the export's own columns",
    ddl: `CREATE TABLE "Forms" (id text PRIMARY KEY, received text);
          INSERT INTO "Forms" VALUES ('mine-1', 'kept'), ('mine-2', 'kept')`,
  },
  {
    shape: 'a view',
    ddl: `CREATE TABLE orders (id text PRIMARY KEY); INSERT INTO orders VALUES ('o-1');
          CREATE VIEW "Forms" AS SELECT id, 'x'::text AS received FROM orders`,
  },
];

describe('an existing table that ccexport did not create', () => {
  for (const user of USER_TABLES) {
    it(`refuses to write into it on a PostgreSQL server (${user.shape}), naming it, and changes nothing`, async () => {
      const url = await freshDatabase();
      await sql(url, user.ddl);
      const before = await sql(url, SNAPSHOT);
      const requestsBefore = hq.sandbox.requestLog.length;

      const run = await runCli(url);

      expect(run.code).toBe(1);
      expect(run.err).toContain('"public"."Forms"');
      expect(run.err).toContain('table "Forms" would be written into');
      expect(run.err).toMatch(/another name in the query file.*drop or rename/);
      expect(await sql(url, SNAPSHOT)).toEqual(before);
      expect(before[0]).toMatchObject({ bookkeeping: false });
      // Nothing was requested from HQ either: the refusal comes before the first page.
      const requests = hq.sandbox.requestLog.slice(requestsBefore);
      expect(requests.filter((r) => r.path.includes(`/a/${PROJECT}/api/`))).toHaveLength(0);
    });
  }

  it("writes into DET's built-in commcare_users table, which DET fills without a checkpoint", async () => {
    const url = await freshDatabase();
    await sql(
      url,
      `CREATE TABLE commcare_users (id varchar(255) PRIMARY KEY, username text);
       INSERT INTO commcare_users VALUES ('det-user', 'kept@example.org')`,
    );

    const run = await runCli(url, '--users');

    expect(run.err).not.toContain('did not create');
    expect(run.code).toBe(0);
    const users = await sql<{ n: string }>(url, 'SELECT count(*) AS n FROM commcare_users');
    expect(Number(users[0]?.n)).toBeGreaterThan(1);
  });

  it('refuses a reconcile that would remove rows from it', async () => {
    const url = await freshDatabase();
    await sql(url, USER_TABLES[1]!.ddl);
    const before = await sql(url, SNAPSHOT);

    const run = await command(['reconcile'], url);

    expect(run.code).toBe(1);
    expect(run.err).toContain('"public"."Forms"');
    expect(await sql(url, SNAPSHOT)).toEqual(before);
  });

  it('refuses it in the embedded database as well', async () => {
    const folder = join(hq.work, 'warehouse');
    const db = await openEmbeddedDatabase(folder);
    try {
      await db.query(`CREATE TABLE "Forms" (id text PRIMARY KEY, received text)`);
      await db.query(`INSERT INTO "Forms" VALUES ('mine-1', 'kept')`);
    } finally {
      await db.close();
    }

    const run = await runCli(folder);

    expect(run.code).toBe(1);
    expect(run.err).toContain('"public"."Forms"');
    expect(run.err).toMatch(/did not create/);
    const after = await openEmbeddedDatabase(folder);
    try {
      expect((await after.query('SELECT * FROM "Forms"')).rows).toEqual([{ id: 'mine-1', received: 'kept' }]);
    } finally {
      await after.close();
    }
  }, 120_000);

  it("writes into tables it created, tables an earlier version's checkpoint names, and tables handed over", async () => {
    const url = await freshDatabase();
    expect((await runCli(url)).code).toBe(0);
    const count = 'SELECT count(*) AS n FROM "Forms"';
    const [exported] = await sql<{ n: string }>(url, count);
    expect(Number(exported?.n)).toBeGreaterThan(hq.sandbox.dataset.count(PROJECT, 'form') * 0.9);
    const comment = `SELECT obj_description('"Forms"'::regclass, 'pg_class') AS c`;
    expect((await sql<{ c: string }>(url, comment))[0]?.c).toMatch(/^ccexport/);

    // A table created by an earlier version carries no comment; its checkpoint names it.
    await sql(url, `COMMENT ON TABLE "Forms" IS NULL`);
    expect((await runCli(url, '--start-over')).code).toBe(0);

    // A user's table handed over as the refusal says.
    const other = await freshDatabase();
    await sql(
      other,
      `CREATE TABLE "Forms" (id text PRIMARY KEY, received text); COMMENT ON TABLE "Forms" IS 'ccexport'`,
    );
    const handed = await runCli(other);

    expect(handed.err).toBe('');
    expect(handed.code).toBe(0);
    expect(await sql<{ n: string }>(other, count)).toEqual([exported]);
  });
});

import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { openEmbeddedDatabase } from '../../functions/sinks';
import { createDatabase, dropDatabase } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { everythingWritten, KEY, useLeakTestBed } from './support';

const bed = useLeakTestBed();
const databases: string[] = [];

afterAll(async () => {
  for (const name of databases) await dropDatabase(inject('pgUrl'), name).catch(() => undefined);
});

describe('the API key never leaves the process into a database, even with --verbose and every HQ fault on', () => {
  it('is in no output line, no file and no table of an embedded PostgreSQL', async () => {
    const output = bed.folder('embedded');
    const { code, text } = await bed.exportWithFaults('sql', output);
    expect(code).toBe(0);
    expect(text).not.toContain(KEY);
    expect(await everythingWritten(output)).not.toContain(KEY);
    const db = await openEmbeddedDatabase(output);
    try {
      const tables = await db.query<{ t: string }>(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) AS t FROM pg_tables WHERE schemaname = 'public'",
      );
      expect(tables.rows.length).toBeGreaterThan(1);
      for (const { t } of tables.rows) {
        const dump = await db.query<{ d: string | null }>(`SELECT string_agg(x::text, '') AS d FROM ${t} x`);
        expect(dump.rows[0]?.d ?? '').not.toContain(KEY);
      }
    } finally {
      await db.close();
    }
  });

  it('is in no output line and no table of a PostgreSQL server', async () => {
    const name = `security_${process.pid}`;
    databases.push(name);
    const dbUrl = await createDatabase(inject('pgUrl'), name);
    const { code, text } = await bed.exportWithFaults('sql', dbUrl);
    expect(code).toBe(0);
    expect(text).not.toContain(KEY);
    const client = new pg.Client({ connectionString: dbUrl });
    await client.connect();
    try {
      const tables = await client.query<{ t: string }>(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) AS t FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
      );
      expect(tables.rows.length).toBeGreaterThan(1);
      for (const { t } of tables.rows) {
        const dump = await client.query<{ d: string | null }>(
          `SELECT string_agg(x::text, '') AS d FROM ${t} x`,
        );
        expect(dump.rows[0]?.d ?? '').not.toContain(KEY);
      }
      // Nor in what the server saw as this session's application name or any comment.
      const comments = await client.query<{ d: string | null }>(
        "SELECT string_agg(coalesce(obj_description(oid), ''), '') AS d FROM pg_class WHERE relnamespace = 'public'::regnamespace",
      );
      expect(comments.rows[0]?.d ?? '').not.toContain(KEY);
    } finally {
      await client.end();
    }
  });

  it('is in no request the sandbox logged', () => {
    expect(bed.sandbox().requestLog.length).toBeGreaterThan(0);
    expect(JSON.stringify(bed.sandbox().requestLog)).not.toContain(KEY);
  });
});

describe('keys on the command line', () => {
  const attempts: [string, string[]][] = [
    ['--key VALUE', ['keys', 'submit', 'commcare-main', '--key', KEY]],
    ['--api-key=VALUE', ['keys', 'submit', 'commcare-main', `--api-key=${KEY}`]],
    ['an extra argument', ['keys', 'submit', 'commcare-main', KEY]],
  ];
  for (const [label, argv] of attempts) {
    it(`"keys submit" refuses a key given as ${label} without echoing it`, async () => {
      const io = captureIO();
      const code = await main(argv, io);
      expect(code).toBe(2);
      expect(io.err()).toMatch(/refusing/);
      expect(io.out() + io.err()).not.toContain(KEY);
    });
  }
});

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ExcelJS from 'exceljs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { openEmbeddedDatabase } from '../../functions/sinks';
import { CHAOS_USER, createDatabase, dropDatabase, HOUSEHOLD_QUERY } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { filesUnder } from '../hostile/support';

/** A made-up sandbox key with a distinctive shape, so any copy of it is found. */
const KEY = 'SECRETKEY-0b7e1d9c-4a2f-leak-canary';
const PROJECT = 'secure';
let sandbox: RunningSandbox;
let work: string;
const databases: string[] = [];

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 9,
    projects: [{ name: PROJECT, forms: 60, cases: 10 }],
    credentials: [{ username: CHAOS_USER, apiKey: KEY }],
  });
  work = mkdtempSync(join(tmpdir(), 'ccexport-security-'));
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
  for (const name of databases) await dropDatabase(inject('pgUrl'), name).catch(() => undefined);
});

/** Every retryable fault at once; hangs are left out because the CLI's timeout is 60 s. */
const EVERY_FAULT = {
  throttleEvery: 2,
  retryAfterSeconds: 0,
  serverErrorEvery: 3,
  serverErrorBurst: 1,
  truncateEvery: 5,
  resetEvery: 7,
};

async function exportWithFaults(format: string, output: string) {
  const io = captureIO();
  sandbox.setFaults(EVERY_FAULT);
  try {
    const code = await main(
      [
        '--project',
        PROJECT,
        '--commcare-hq',
        sandbox.url,
        '--username',
        CHAOS_USER,
        '--password',
        KEY,
        '--verbose',
        '--query',
        HOUSEHOLD_QUERY,
        '--output-format',
        format,
        '--output',
        output,
        '--batch-size',
        '5',
      ],
      io,
    );
    return { code, text: io.out() + io.err() };
  } finally {
    sandbox.setFaults({});
  }
}

/** Raw bytes of every file, plus the cell text of workbooks (their zip entries are compressed). */
async function everythingWritten(folder: string): Promise<string> {
  let text = '';
  for (const file of filesUnder(folder)) {
    const bytes = readFileSync(file);
    text += bytes.toString('latin1');
    if (file.endsWith('.xlsx')) {
      const wb = new ExcelJS.Workbook();
      await wb.xlsx.load(bytes as unknown as ArrayBuffer);
      wb.eachSheet((ws) =>
        ws.eachRow((row) => {
          text += JSON.stringify(row.values);
        }),
      );
    }
  }
  return text;
}

describe('the API key never leaves the process into a database, even with --verbose and every HQ fault on', () => {
  it('is in no output line, no file and no table of an embedded PostgreSQL', async () => {
    const output = join(work, 'embedded');
    const { code, text } = await exportWithFaults('sql', output);
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
    const { code, text } = await exportWithFaults('sql', dbUrl);
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
    expect(sandbox.requestLog.length).toBeGreaterThan(0);
    expect(JSON.stringify(sandbox.requestLog)).not.toContain(KEY);
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

/**
 * Runs at the same time: first runs of two exports into one new PostgreSQL database while other DDL
 * holds the checkpoint table's name; two raw JSON-lines runs into one folder; processes taking over a stale embedded-database lock together.
 * Each probe runs the CLI as a user types it against the sandbox, or real processes.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { checkpointTableDdl } from '../../functions/checkpoints/postgres';
import { main } from '../../functions/cli/main';
import {
  DEFAULT_API_KEY,
  DEFAULT_USERNAME,
  type RunningSandbox,
  startSandbox,
} from '../../functions/sandbox/server';
import { createDatabase, dropDatabase } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { writeFormsQuery } from '../support/query-workbook';
import { filesUnder } from './support';

let work: string;
let sandbox: RunningSandbox;
let query: string;
const databases: string[] = [];

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'ccexport-hostile-concurrent-'));
  sandbox = await startSandbox({ projects: [{ name: 'demo', forms: 60, cases: 10 }] });
  query = await writeFormsQuery(join(work, 'forms.xlsx'), [
    ['id', 'id'],
    ['received_on', 'received_on'],
  ]);
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
  for (const name of databases) await dropDatabase(inject('pgUrl'), name).catch(() => undefined);
});

async function ccexport(args: string[]): Promise<{ code: number; err: string }> {
  const io = captureIO({ CCEXPORT_API_KEY: DEFAULT_API_KEY });
  const code = await main(
    [
      '--project',
      'demo',
      '--commcare-hq',
      sandbox.url,
      '--username',
      DEFAULT_USERNAME,
      '--progress',
      'none',
      ...args,
    ],
    io,
  );
  return { code, err: io.err() };
}

/** Sessions of `db` other than `except` waiting on a lock. */
async function lockWaiters(admin: pg.Client, db: string, except: number): Promise<number> {
  const { rows } = await admin.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = $1 AND pid <> $2 AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'`,
    [db, except],
  );
  return rows[0]?.n ?? 0;
}

describe('first runs of two exports into one new PostgreSQL database at once', () => {
  for (const ending of ['COMMIT', 'ROLLBACK'] as const) {
    it(`both succeed while another session creates the checkpoint table and then ${ending === 'COMMIT' ? 'commits' : 'rolls back'}`, async () => {
      // Prepare: a new database, and a session creating the checkpoint table without finishing, so
      // that both runs reach their first DDL while the name is taken by an uncommitted table.
      const name = `hostile_ddl_${ending.toLowerCase()}_${process.pid}`;
      databases.push(name);
      const dbUrl = await createDatabase(inject('pgUrl'), name);
      const other = new pg.Client({ connectionString: dbUrl });
      const admin = new pg.Client({ connectionString: dbUrl });
      await other.connect();
      await admin.connect();
      try {
        await other.query('BEGIN');
        await other.query(checkpointTableDdl('public'));
        const otherPid = (await other.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;

        // Act: two exports (two checkpoint keys, the same table) start together.
        const runs = ['export-a', 'export-b'].map((key) =>
          ccexport(['--query', query, '--output-format', 'sql', '--output', dbUrl, '--checkpoint-key', key]),
        );
        for (let k = 0; k < 600 && (await lockWaiters(admin, name, otherPid)) < 2; k++)
          await new Promise((resolve) => setTimeout(resolve, 50));
        expect(await lockWaiters(admin, name, otherPid)).toBe(2);
        await other.query(ending);
        const results = await Promise.all(runs);

        // Assert
        for (const r of results) {
          expect(r.err).not.toMatch(/pg_type_typname_nsp_index|duplicate key/);
          expect(r.code, r.err).toBe(0);
        }
        const { rows } = await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM "Forms"');
        expect(rows[0]?.n).toBeGreaterThan(0);
        const keys = await admin.query<{ checkpoint_key: string }>(
          'SELECT DISTINCT checkpoint_key FROM commcare_export_checkpoints ORDER BY 1',
        );
        expect(keys.rows.map((r) => r.checkpoint_key)).toEqual(['export-a', 'export-b']);
      } finally {
        await other.end().catch(() => undefined);
        await admin.end().catch(() => undefined);
      }
    }, 60_000);
  }
});

/** A process that waits for `go`, takes the folder's lock, says whether it got it, and holds it until `done`. */
const LOCKER = `
const { existsSync } = require('node:fs');
const [folder, go, done] = process.argv.slice(-3);
const wait = (file) => new Promise((resolve) => { const t = setInterval(() => { if (existsSync(file)) { clearInterval(t); resolve(); } }, 2); });
import('./functions/sinks/embedded.ts').then(async ({ lockEmbeddedFolder }) => {
  process.stdout.write('ready\\n');
  await wait(go);
  let unlock = null;
  try { unlock = await lockEmbeddedFolder(folder); process.stdout.write('got\\n'); }
  catch (e) { process.stdout.write('busy ' + e.name + '\\n'); }
  await wait(done);
  if (unlock) await unlock();
});
`;

/** The pid of a process that has ended. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0']);
  await new Promise((resolve) => child.on('exit', resolve));
  return child.pid!;
}

describe('processes taking over a stale embedded-database lock at once', () => {
  it('let exactly one of them have it, in every trial', async () => {
    for (let trial = 0; trial < 2; trial++) {
      // Prepare: a folder locked by a process that no longer runs, and four processes ready to start.
      const folder = join(work, `embedded-lock-${trial}`);
      mkdirSync(folder, { recursive: true });
      writeFileSync(join(folder, 'ccexport.lock'), String(await deadPid()));
      const go = join(folder, 'go');
      const done = join(folder, 'done');
      const children = Array.from({ length: 4 }, () => {
        const child = spawn(process.execPath, ['--import', 'tsx', '-e', LOCKER, folder, go, done], {
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        let out = '';
        child.stdout.on('data', (chunk: Buffer) => {
          out += chunk.toString();
        });
        const exited = new Promise((resolve) => child.on('exit', resolve));
        return { output: () => out, exited };
      });
      for (let k = 0; k < 3000 && !children.every((c) => c.output().includes('ready')); k++)
        await new Promise((resolve) => setTimeout(resolve, 10));

      // Act: all four take the lock at the same moment.
      writeFileSync(go, '');
      for (let k = 0; k < 3000 && !children.every((c) => /got|busy/.test(c.output())); k++)
        await new Promise((resolve) => setTimeout(resolve, 10));
      writeFileSync(done, '');
      await Promise.all(children.map((c) => c.exited));

      // Assert
      const outcomes = children.map((c) => c.output().trim().split('\n').pop());
      expect(
        outcomes.filter((o) => o === 'got'),
        outcomes.join(', '),
      ).toHaveLength(1);
      expect(outcomes.filter((o) => o === 'busy ConcurrentRunError')).toHaveLength(3);
      expect(existsSync(join(folder, 'ccexport.lock'))).toBe(false);
    }
  }, 120_000);
});

describe('two raw JSON-lines runs into one folder at once', () => {
  it('let one write the file whole and stop the other before it writes anything', async () => {
    // Prepare: a little latency per request so that the two runs overlap.
    sandbox.setFaults({ latencyMs: 20 });
    const output = join(work, 'raw-together');
    const args = ['--resource', 'form', '--output-format', 'jsonl', '--output', output, '--batch-size', '20'];

    // Act
    const [a, b] = await Promise.all([ccexport(args), ccexport(args)]);
    sandbox.setFaults({});

    // Assert: one run succeeded, the other was refused as concurrent; the file is whole.
    expect([a.code, b.code].sort()).toEqual([0, 1]);
    const refused = a.code === 1 ? a : b;
    expect(refused.err).toMatch(/Another run|still running|in use/);
    const lines = readFileSync(join(output, 'form.jsonl'), 'utf8').trimEnd().split('\n');
    const ids = lines.map((line) => String((JSON.parse(line) as { id: string }).id));
    const forms = [...sandbox.dataset.timeline('demo', 'form')].filter((f) => !f.archived);
    expect(lines.length).toBeGreaterThan(0);
    expect(new Set(ids).size).toBe(new Set(forms.map((f) => String(f.id))).size);
    expect(filesUnder(output).filter((f) => f.endsWith('.partial'))).toEqual([]);
  }, 60_000);
});

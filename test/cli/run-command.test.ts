import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseArgs, UsageError } from '../../functions/cli/args';
import { main } from '../../functions/cli/main';
import { settingsFromFlags } from '../../functions/cli/run-command';
import { RUN_FLAGS } from '../../functions/cli/run-flags';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { captureIO } from './capture';

const KEY = 'cli-test-key-7f3a9c1e5b';
const USER = 'analyst@example.org';

let sandbox: RunningSandbox;
let work: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 7,
    projects: [{ name: 'clinic', forms: 450, cases: 120 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  work = mkdtempSync(join(tmpdir(), 'ccexport-cli-'));
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

function readAll(folder: string): string {
  let text = '';
  for (const entry of readdirSync(folder, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) text += readFileSync(join(entry.parentPath, entry.name), 'utf8');
  }
  return text;
}

/** The clinic project on the test sandbox as this user, plus the given flags (`'--a b --c'` or arrays). */
function clinic(...extra: (string | string[])[]): string[] {
  const flags = extra.flatMap((e) => (Array.isArray(e) ? e : e.split(' ')));
  return ['--project', 'clinic', '--commcare-hq', sandbox.url, '--username', USER, ...flags];
}

describe('ccexport command line', () => {
  it('accepts any unambiguous prefix of a flag, as DET (argparse) does', () => {
    const { flags } = parseArgs(['--proj', 'p', '--output-f', 'csv', '--start-o'], RUN_FLAGS);
    expect(flags).toMatchObject({ project: 'p', 'output-format': 'csv', 'start-over': true });
  });

  it('fails on an ambiguous prefix, naming the candidates', () => {
    expect(() => parseArgs(['--out', 'x'], RUN_FLAGS)).toThrow(
      /ambiguous.*--output-format.*--output|ambiguous.*--output.*--output-format/,
    );
    expect(() => parseArgs(['--out', 'x'], RUN_FLAGS)).toThrow(UsageError);
  });

  it('fails without --project with a message and exit code 2', async () => {
    const io = captureIO();
    const code = await main(['--resource', 'form', '--output-format', 'jsonl'], io);
    expect(code).toBe(2);
    expect(io.err()).toContain('--project is required');
  });

  it('refuses --auth-mode password with a hint to use an API key', async () => {
    const io = captureIO();
    const code = await main(
      ['--project', 'p', '--resource', 'form', '--output-format', 'jsonl', '--auth-mode', 'password'],
      io,
    );
    expect(code).toBe(2);
    expect(io.err()).toContain('API keys only');
  });

  it('fails without a key when not on a terminal, naming the ways to give one', async () => {
    const io = captureIO();
    const code = await main(clinic('--resource form --output-format jsonl'), io);
    expect(code).toBe(1);
    expect(io.err()).toContain('CCEXPORT_API_KEY');
  });

  it('exports raw records with the key from the environment, behaving as "run" without a subcommand', async () => {
    const output = join(work, 'env');
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    const code = await main(
      clinic('--auth-mode apikey --resource form --output-format jsonl --batch-size 100', [
        '--output',
        output,
      ]),
      io,
    );
    expect(code).toBe(0);
    const lines = readFileSync(join(output, 'form.jsonl'), 'utf8').trim().split('\n');
    const ids = new Set(lines.map((l) => (JSON.parse(l) as { id: string }).id));
    // HQ leaves archived forms out unless include_archived is sent (reference §2.3); a form archived
    // later was still served, unarchived, at its earlier indexed_on.
    const expected = new Set<string>();
    for (const r of sandbox.dataset.timeline('clinic', 'form'))
      if (r.archived !== true) expected.add(String(r.id));
    expect([...ids].sort()).toEqual([...expected].sort());
    expect(io.out()).toContain('Export finished');
    expect(io.err()).toContain('"event":"source-finished"');
  });

  it('warns that --password is visible to other users, and works', async () => {
    const io = captureIO();
    const code = await main(
      clinic(['--password', KEY], '--resource case --output-format jsonl --progress none', [
        '--output',
        join(work, 'pw'),
      ]),
      io,
    );
    expect(code).toBe(0);
    expect(io.err()).toContain('other users of this machine');
  });

  it('fails on a wrong key with the likely causes, exit code 1', async () => {
    const io = captureIO({ CCEXPORT_API_KEY: 'not-the-key' });
    const code = await main(
      clinic('--resource form --output-format jsonl', ['--output', join(work, 'bad')]),
      io,
    );
    expect(code).toBe(1);
    expect(io.err()).toMatch(/allow-list/);
    expect(io.err()).not.toContain('not-the-key');
  });

  it('never prints or writes the key, even with --verbose and every fault on', async () => {
    const output = join(work, 'faults');
    sandbox.setFaults({
      throttleEvery: 3,
      retryAfterSeconds: 0,
      serverErrorEvery: 5,
      serverErrorBurst: 1,
      truncateEvery: 7,
      resetEvery: 11,
    });
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    try {
      const code = await main(
        clinic('--verbose --resource form --resource case --output-format jsonl --batch-size 50', [
          '--output',
          output,
        ]),
        io,
      );
      expect(code).toBe(0);
    } finally {
      sandbox.setFaults({});
    }
    expect(io.out() + io.err()).not.toContain(KEY);
    expect(readAll(output)).not.toContain(KEY);
    expect(sandbox.requestLog.some((e) => JSON.stringify(e).includes(KEY))).toBe(false);
  });
});

describe("DET's flags", () => {
  const settings = (...flags: string[]) =>
    settingsFromFlags(
      parseArgs(['--project', 'p', '--query', 'q.xlsx', ...flags], RUN_FLAGS).flags,
      captureIO(),
    );

  it("accepts SQLAlchemy's PostgreSQL URLs with a driver as PostgreSQL", () => {
    for (const scheme of ['postgresql+psycopg2', 'postgresql+psycopg', 'postgres+pg8000']) {
      const url = `${scheme}://me:secret@db:5432/exports`;
      expect(settings('--output-format', 'sql', '--output', url).output).toBe(
        'postgresql://me:secret@db:5432/exports',
      );
    }
  });

  it('refuses MySQL and SQL Server URLs by name, as not supported yet', () => {
    expect(() => settings('--output-format', 'sql', '--output', 'mysql+pymysql://u@h/db')).toThrow(
      /--output mysql\+pymysql:\/\/\.\.\. is MySQL, which is not supported yet/,
    );
    expect(() => settings('--output-format', 'sql', '--output', 'mssql+pyodbc://u@h/db')).toThrow(
      /is SQL Server, which is not supported yet/,
    );
  });

  it("selects DET's v0.5 URLs with --api-version 0.5 and refuses versions HQ does not serve", () => {
    expect(settings('--api-version', '0.5').urlStyle).toBe('legacy');
    expect(settings().urlStyle).toBeUndefined();
    expect(() => settings('--api-version', '0.4')).toThrow(/--api-version 0.4 is not supported/);
  });

  it('defaults to DET outputs: reports.zip for csv, standard output for json and markdown', () => {
    expect(settings('--output-format', 'csv').output).toBe('reports.zip');
    expect(settings('--output-format', 'json').output).toBe('-');
    expect(settings('--output-format', 'markdown').output).toBe('-');
  });

  it('prints the tables the query compiles to with --dump-tables, without asking for a key', async () => {
    const io = captureIO();
    const code = await main(
      [
        '--project',
        'p',
        '--query',
        join(import.meta.dirname, '../fixtures/queries/small.xlsx'),
        '--dump-tables',
      ],
      io,
    );
    expect(code, io.err()).toBe(0);
    const tables = JSON.parse(io.out()) as { name: string; resource: string; columns: unknown[] }[];
    expect(tables.length).toBeGreaterThan(0);
    expect(tables[0]).toMatchObject({ name: expect.any(String), resource: expect.any(String) });
  });

  it('appends the log to DIR/commcare_export.log with --log-dir, as DET does, and writes none with --no-logfile', async () => {
    const logs = join(work, 'logs');
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    const flags = clinic('--resource form --output-format jsonl --batch-size 200 --progress none', [
      '--output',
      join(work, 'logged'),
      '--log-dir',
      logs,
      '--password',
      KEY,
    ]);
    expect(await main(flags, io), io.err()).toBe(0);
    const lines = readFileSync(join(logs, 'commcare_export.log'), 'utf8').trim().split('\n');
    expect(lines.some((l) => (JSON.parse(l) as { message: string }).message.includes('--password'))).toBe(
      true,
    );
    expect(readFileSync(join(logs, 'commcare_export.log'), 'utf8')).not.toContain(KEY);

    const quiet = join(work, 'quiet-logs');
    expect(
      await main(
        [...flags.slice(0, -4), '--log-dir', quiet, '--no-logfile'],
        captureIO({ CCEXPORT_API_KEY: KEY }),
      ),
    ).toBe(0);
    expect(existsSync(quiet)).toBe(false);
  });
});

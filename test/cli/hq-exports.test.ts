import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { readWorkbook } from '../../functions/query/excel';
import { type RunningSandbox, type SandboxDetExport, startSandbox } from '../../functions/sandbox';
import { createDatabase, withDb } from '../support/databases';
import { captureIO } from './capture';

const USER = 'manager@example.org';
const KEY = 'hq-exports-test-key-0123456789';
const REGISTRATION = 'http://openrosa.org/formdesigner/5C1B5E2A-7F3D-4E11-9C2B-REGISTRATION';

let sandbox: RunningSandbox;
let work: string;

const registrations = (columns: SandboxDetExport['columns']): SandboxDetExport => ({
  id: 'exp-registrations',
  name: 'Registrations',
  type: 'form',
  xmlns: REGISTRATION,
  columns,
});
const BASE_COLUMNS = [
  { field: 'formid', source: 'id' },
  { field: 'household_name', source: 'form.household_name' },
];

beforeAll(async () => {
  sandbox = await startSandbox({
    projects: [
      {
        name: 'clinic',
        forms: 300,
        cases: 40,
        detExports: [
          registrations(BASE_COLUMNS),
          {
            id: 'exp-a',
            name: 'Twin',
            type: 'case',
            caseType: 'household',
            columns: [{ field: 'caseid', source: 'id' }],
          },
          {
            id: 'exp-b',
            name: 'Twin',
            type: 'case',
            caseType: 'person',
            columns: [{ field: 'caseid', source: 'id' }],
          },
          { id: 'exp-broken', name: 'Broken', type: 'form', xmlns: REGISTRATION, columns: [], broken: true },
        ],
      },
    ],
    credentials: [
      { username: USER, apiKey: KEY },
      { username: 'viewer@example.org', apiKey: 'no-reports-key-000000', viewReports: false },
    ],
  });
  work = mkdtempSync(join(tmpdir(), 'ccexport-hq-exports-'));
});
afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

async function ccexport(args: string[], key = KEY, user = USER) {
  const io = captureIO({ CCEXPORT_API_KEY: key }, work);
  const code = await main([...args, '--commcare-hq', sandbox.url, '--username', user], io);
  return { code, out: io.out(), err: io.err() };
}

/**
 * A PostgreSQL database whose checkpoint table an earlier version created (without the `config` column
 * later versions add), as a warehouse filled before this version would have it.
 */
async function olderWarehouse(): Promise<string> {
  const url = await createDatabase('hq_exports');
  await withDb(url, (db) =>
    db.query(`CREATE TABLE commcare_export_checkpoints (
    checkpoint_key text NOT NULL, project text NOT NULL, data_source text NOT NULL, tables jsonb NOT NULL,
    position jsonb NOT NULL, written_at timestamptz NOT NULL, run_id text,
    PRIMARY KEY (checkpoint_key, project, data_source))`),
  );
  return url;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath, d.name));
}

describe('ccexport hq-exports', () => {
  it("lists the project's DET exports with id, type, case type or form and de-identification", async () => {
    const { code, out } = await ccexport(['hq-exports', '--project', 'clinic']);
    expect(code).toBe(0);
    expect(out.split('\n')[0]).toMatch(/^name\s+id\s+type\s+case type \/ form\s+de-identified$/);
    expect(out).toMatch(/Registrations\s+exp-registrations\s+form\s+http:\/\/openrosa/);
    expect(out).toMatch(/Twin\s+exp-a\s+case\s+household\s+no/);
  });

  it("saves an export's DET config, which validates as a query file", async () => {
    const { code, out } = await ccexport([
      'hq-exports',
      'download',
      'Registrations',
      '--project',
      'clinic',
      '--out',
      'reg.xlsx',
    ]);
    expect(code).toBe(0);
    expect(out).toContain('exp-registrations');
    const sheets = await readWorkbook(readFileSync(join(work, 'reg.xlsx')));
    expect(sheets).toHaveLength(1);
    const io = captureIO({}, work);
    expect(await main(['validate-query', join(work, 'reg.xlsx')], io)).toBe(0);
  });

  it('fails with 403 said plainly for a user without View Reports', async () => {
    const { code, err } = await ccexport(
      ['hq-exports', '--project', 'clinic'],
      'no-reports-key-000000',
      'viewer@example.org',
    );
    expect(code).toBe(1);
    expect(err).toMatch(/403/);
    expect(err).not.toContain('no-reports-key-000000');
  });
});

describe('ccexport --query hq:<name or id>', () => {
  const run = (ref: string, out: string) =>
    ccexport([
      '--project',
      'clinic',
      '--query',
      `hq:${ref}`,
      '--output-format',
      'csv',
      '--output',
      join(work, out),
      '--progress',
      'none',
    ]);

  it('runs an export by name and by id, and writes no config file', async () => {
    const byName = await run('Registrations', 'by-name');
    expect(byName.err).toContain('HQ export "Registrations" (exp-registrations)');
    expect(byName.code).toBe(0);
    const byId = await run('exp-registrations', 'by-id');
    expect(byId.code).toBe(0);
    const csv = filesUnder(join(work, 'by-id')).filter((f) => f.endsWith('.csv'));
    expect(csv.length).toBeGreaterThan(0);
    expect(readFileSync(csv[0]!, 'utf8').split(/\r?\n/)[0]).toBe('formid,household_name');
    expect(filesUnder(work).filter((f) => f.endsWith('.xlsx') && !f.endsWith('reg.xlsx'))).toEqual([]);
    for (const f of filesUnder(work)) expect(readFileSync(f).includes(Buffer.from(KEY))).toBe(false);
  });

  it('refuses a name two exports share, naming both ids', async () => {
    const { code, err } = await run('Twin', 'twin');
    expect(code).toBe(1);
    expect(err).toContain('exp-a');
    expect(err).toContain('exp-b');
  });

  it('fails clearly when HQ cannot build the config, and for an unknown export', async () => {
    const broken = await run('Broken', 'broken');
    expect(broken.code).toBe(1);
    expect(broken.err).toContain('CommCareDetConfigError: CommCare HQ did not send a DET config workbook');
    expect(broken.err).toContain('Sorry, something went wrong creating that file');
    const missing = await run('Nope', 'nope');
    expect(missing.code).toBe(1);
    expect(missing.err).toContain('Registrations');
  });

  it('follows an edit in HQ at the next run: a new column appears, the checkpoint carries on', async () => {
    const first = await run('exp-registrations', 'edited');
    expect(first.code).toBe(0);
    sandbox.setDetExports('clinic', [
      registrations([...BASE_COLUMNS, { field: 'household_size', source: 'form.household_size' }]),
      ...sandbox.detExports('clinic').filter((e) => e.id !== 'exp-registrations'),
    ]);
    const second = await run('exp-registrations', 'edited');
    expect(second.code).toBe(0);
    const csv = filesUnder(join(work, 'edited')).filter((f) => f.endsWith('.csv'));
    const headers = new Set(csv.map((f) => readFileSync(f, 'utf8').split(/\r?\n/)[0]));
    expect(headers).toContain('formid,household_name,household_size');
    expect(existsSync(join(work, 'edited'))).toBe(true);
  });

  // Files keep checkpoints in an object next to the data, PostgreSQL in its checkpoint table.
  it.each(['csv', 'sql'])(
    'says which columns appeared and disappeared since the last run, and the config it ran before (%s)',
    async (format) => {
      const output = format === 'sql' ? await olderWarehouse() : join(work, `changes-${format}`);
      const runAs = () =>
        ccexport([
          ...['--project', 'clinic', '--query', 'hq:Registrations', '--output-format', format],
          ...['--output', output, '--progress', 'none'],
        ]);
      // SQL needs an "id" column as the primary key.
      const id = { field: 'id', source: 'id' };
      const base = registrations([id, BASE_COLUMNS[1]!]);
      const others = () => sandbox.detExports('clinic').filter((e) => e.id !== 'exp-registrations');
      sandbox.setDetExports('clinic', [base, ...others()]);
      const first = await runAs();
      const fingerprint = (err: string) => /config ([0-9a-f]{32})/.exec(err)?.[1];
      const again = await runAs();
      sandbox.setDetExports('clinic', [
        registrations([id, { field: 'household_size', source: 'form.household_size' }]),
        ...others(),
      ]);
      const edited = await runAs();

      expect([first.code, again.code, edited.code]).toEqual([0, 0, 0]);
      expect(first.out).toContain(
        `HQ export config ${fingerprint(first.err)}: no earlier run to compare with`,
      );
      expect(again.out).toContain(`HQ export config ${fingerprint(first.err)}: unchanged since the last run`);
      expect(again.err).not.toContain('columns appeared');
      expect(fingerprint(edited.err)).not.toBe(fingerprint(first.err));
      expect(edited.out).toContain(
        `HQ export config ${fingerprint(edited.err)}: changed since the last run (was ${fingerprint(first.err)}); columns changed in 1 table`,
      );
      expect(edited.err).toMatch(
        /note: table "[^"]+": columns appeared: household_size; disappeared: household_name \(since the last run\)/,
      );
      // Each checkpoint keeps the fingerprint of the last commit; history shows it, for files and databases.
      const history = captureIO({}, work);
      expect(
        await main(['history', '--output', output, '--checkpoint-key', 'hq:exp-registrations'], history),
      ).toBe(0);
      expect(history.out()).toMatch(
        new RegExp(`hq:exp-registrations\\s+clinic.*\\s${fingerprint(edited.err)}\\n`),
      );
      if (format === 'csv') {
        // File outputs list their runs too (manifests), newest first, each with the config it ran.
        const runs = history.out().split('\nRuns (')[1] ?? '';
        const configs = [...runs.matchAll(/\s([0-9a-f]{32})$/gm)].map((m) => m[1]);
        expect(configs).toEqual([fingerprint(edited.err), fingerprint(first.err), fingerprint(first.err)]);
      }
    },
  );
});

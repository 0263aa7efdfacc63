import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import pg from 'pg';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { DEMO_QUERY } from '../../functions/cli/demo-command';
import { exportLockId } from '../../functions/sinks/postgres/sink';
import { motoS3 } from '../support/aws';
import { ccexport } from '../support/cli-process';
import { createDatabase, withDb } from '../support/databases';
import { ccexportInProcess, sandboxAndFolder, sandboxExportArgs } from '../support/sandbox-export';

/**
 * `ccexport history` and `ccexport checkpoint` (DET's `commcare-export-utils history` and
 * `set-checkpoint-key`) on every output that keeps checkpoints, typed as a user types them (the commands
 * run as `node bin/ccexport.js`; the exports they look at are run in this process, to save time): a
 * folder of csv files, an S3 prefix (moto), the embedded database in a folder, and a PostgreSQL server
 * that also holds DET's `commcare_export_runs`, shaped as DET 1.15's migrations leave it.
 */

const KEY = 'checkpoint-admin-key-51c0';
const USER = 'admin-user@example.org';
const PROJECT = 'ledger';
const MD5 = createHash('md5').update(readFileSync(DEMO_QUERY)).digest('hex');
const S3_ENV = {
  AWS_ENDPOINT_URL_S3: '',
  AWS_ACCESS_KEY_ID: 'testing',
  AWS_SECRET_ACCESS_KEY: 'testing',
  AWS_REGION: 'us-east-1',
};

const hq = sandboxAndFolder(
  {
    seed: 31,
    projects: [{ name: PROJECT, forms: 60, cases: 10 }],
    credentials: [{ username: USER, apiKey: KEY }],
  },
  'checkpoint-admin-',
);

beforeAll(() => {
  S3_ENV.AWS_ENDPOINT_URL_S3 = inject('motoEndpoint');
});

/** One export run, in this process. */
async function exportRun(format: string, output: string, ...extra: string[]): Promise<void> {
  const source = { url: hq.sandbox.url, project: PROJECT, username: USER };
  // The S3 client reads its endpoint and credentials from the process environment.
  const env = { CCEXPORT_API_KEY: KEY, ...(output.startsWith('s3://') ? S3_ENV : {}) };
  await ccexportInProcess(sandboxExportArgs(source, format, output, ...extra), env);
}

/** `ccexport checkpoint --output <output> --project <PROJECT> <flags>`, typed as a user types it. */
function checkpointCommand(output: string, flags: string[], env?: NodeJS.ProcessEnv) {
  return ccexport(['checkpoint', '--output', output, '--project', PROJECT, ...flags], env);
}

/** The rows the newest run in `history`'s run list wrote ("households 26, household_members 35"). */
function newestRunRows(history: string): string | undefined {
  const runs = history.split('Runs (manifests/, newest first):\n')[1]?.split('\n') ?? [];
  return /(households \d+.*)$/.exec(runs[2] ?? '')?.[1];
}

describe('a folder of csv files', () => {
  it('history lists checkpoints and runs; checkpoint moves them to a new key and resets them', async () => {
    const output = join(hq.work, 'csv-folder');
    await exportRun('csv', output);

    const history = await ccexport(['history', '--output', output, '--project', PROJECT]);
    expect(history.code, history.err).toBe(0);
    expect(history.out).toContain(`Checkpoints (${join(output, 'checkpoints')}/):`);
    expect(history.out).toMatch(
      new RegExp(`${MD5}\\s+${PROJECT}\\s+households, household_members\\s+form\\S*\\s+20`),
    );
    const everything = newestRunRows(history.out);
    expect(everything).toMatch(/^households [1-9]\d*, household_members [1-9]\d*$/);

    const move = await checkpointCommand(output, ['--query', DEMO_QUERY, '--to-key', 'kept']);
    expect(move.code, move.err).toBe(0);
    expect(move.out).toContain(
      `Moved 1 checkpoint(s) of ours (${join(output, 'checkpoints')}/) of project ${PROJECT}, key ${MD5} to key kept`,
    );
    expect(existsSync(join(output, 'checkpoints', 'kept.json'))).toBe(true);
    expect(existsSync(join(output, 'checkpoints', `${MD5}.json`))).toBe(false);
    const moved = JSON.parse(readFileSync(join(output, 'checkpoints', 'kept.json'), 'utf8'));
    expect(moved.sources.map((s: { checkpointKey: string }) => s.checkpointKey)).toEqual(['kept']);

    // A run under the new key continues from the moved checkpoint: HQ has nothing newer.
    await exportRun('csv', output, '--checkpoint-key', 'kept');
    const after = await ccexport(['history', '--output', output, '--checkpoint-key', 'kept', '--limit', '1']);
    expect(newestRunRows(after.out)).toBe('households 0, household_members 0');

    const reset = await checkpointCommand(output, ['--checkpoint-key', 'kept', '--reset']);
    expect(reset.code, reset.err).toBe(0);
    expect(reset.out).toContain('The next run exports everything.');
    await exportRun('csv', output, '--checkpoint-key', 'kept');
    const full = await ccexport(['history', '--output', output, '--checkpoint-key', 'kept']);
    expect(newestRunRows(full.out)).toBe(everything);

    const again = await ccexport([
      'checkpoint',
      '--output',
      output,
      '--project',
      'nobody',
      '--checkpoint-key',
      'kept',
      '--reset',
    ]);
    expect(again.code).toBe(1);
    expect(again.err).toContain('no checkpoint of key "kept" for project nobody');
  }, 240_000);

  it('refuses a single-file output, which keeps no checkpoints', async () => {
    const output = join(hq.work, 'reports.zip');
    await exportRun('csv', output);
    const r = await ccexport(['history', '--output', output]);
    expect(r.code).toBe(2);
    expect(r.err).toContain('is a single file: it keeps no checkpoints');
  }, 120_000);
});

describe('an S3 prefix', () => {
  it('history and checkpoint work as for a folder, and a run holding the lease stops a change', async () => {
    const s3 = motoS3(S3_ENV.AWS_ENDPOINT_URL_S3);
    const bucket = `ckpt-${randomBytes(3).toString('hex')}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const output = `s3://${bucket}/exports`;
    await exportRun('json', output);
    const env = { ...process.env, ...S3_ENV };

    const history = await ccexport(['history', '--output', output], env);
    expect(history.code, history.err).toBe(0);
    expect(history.out).toContain(`Checkpoints (${output}/checkpoints/):`);
    expect(history.out).toMatch(new RegExp(`${MD5}\\s+${PROJECT}\\s+households, household_members\\s+form`));

    const move = await checkpointCommand(output, ['--checkpoint-key', MD5, '--to-key', 'kept'], env);
    expect(move.code, move.err).toBe(0);
    const doc = JSON.parse(
      await (
        await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'exports/checkpoints/kept.json' }))
      ).Body!.transformToString(),
    );
    expect(doc.sources[0]).toMatchObject({ checkpointKey: 'kept', project: PROJECT });

    // Another host's run of the export holds its lease: the change waits for it instead of racing it.
    await s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: `exports/checkpoints/kept.${PROJECT}.lease.json`,
        Body: JSON.stringify({
          holder: randomUUID(),
          runId: 'run-elsewhere',
          expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
          host: 'another-host',
          pid: 4242,
          startedAt: new Date().toISOString(),
        }),
      }),
    );
    const blocked = await checkpointCommand(output, ['--checkpoint-key', 'kept', '--reset'], env);
    expect(blocked.code).toBe(1);
    expect(blocked.err).toContain('Another run (run-elsewhere) of this export is in progress');
    expect((await ccexport(['history', '--output', output, '--checkpoint-key', 'kept'], env)).out).toMatch(
      /kept\s+ledger/,
    );
  }, 240_000);
});

describe('the embedded database in a folder', () => {
  it('history lists its checkpoints', async () => {
    const output = join(hq.work, 'embedded');
    await exportRun('sql', output);
    const r = await ccexport(['history', '--output', output]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('Checkpoints (commcare_export_checkpoints):');
    expect(r.out).toMatch(new RegExp(`${MD5}\\s+${PROJECT}\\s+households, household_members\\s+form`));
  }, 240_000);
});

/** commcare_export_runs after DET 1.15's migrations, in their column order. */
const DET_RUNS_DDL = `CREATE TABLE commcare_export_runs (
  id VARCHAR(64) NOT NULL, query_file_name VARCHAR(255), query_file_md5 VARCHAR(255), since_param VARCHAR(32),
  final BOOLEAN, time_of_run VARCHAR(32), project VARCHAR(32), commcare VARCHAR(255), key VARCHAR(255),
  table_name VARCHAR(255), data_source VARCHAR(255), last_doc_id VARCHAR(255), pagination_mode VARCHAR(255),
  cursor VARCHAR(255), PRIMARY KEY (id))`;

describe("a PostgreSQL database with DET's checkpoints", () => {
  let url: string;
  const detRows = (where: string, params: unknown[] = []) =>
    withDb(
      url,
      async (db) =>
        (await db.query(`SELECT * FROM commcare_export_runs WHERE ${where} ORDER BY id`, params)).rows,
    );

  beforeAll(async () => {
    url = await createDatabase('ckpt_admin');
    await exportRun('sql', url);
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    await db.query(DET_RUNS_DDL);
    // DET's rows as its CheckpointManager writes them: per table, a final row of an older run and of the
    // last run (no --checkpoint-key: key null, the query file's MD5), and rows of another project and key.
    const rows: [string, string, string, string, string | null, string][] = [];
    for (const table of ['households', 'household_members']) {
      rows.push([`a-${table}`, MD5, '2026-01-01T10:00:00', '2026-01-01T10:05:00.000001', null, PROJECT]);
      rows.push([`b-${table}`, MD5, '2026-01-02T10:00:00', '2026-01-02T10:05:00.000001', null, PROJECT]);
      rows.push([`c-${table}`, MD5, '2026-01-03T10:00:00', '2026-01-03T10:05:00', null, 'other-project']);
      rows.push([
        `d-${table}`,
        'another-md5',
        '2026-01-03T10:00:00',
        '2026-01-03T10:05:00',
        'other-key',
        PROJECT,
      ]);
    }
    for (const [id, md5, since, at, key, project] of rows) {
      await db.query(
        `INSERT INTO commcare_export_runs (id, query_file_name, query_file_md5, since_param, final, time_of_run,
           project, commcare, key, table_name, data_source, last_doc_id, pagination_mode, cursor)
         VALUES ($1, 'household-registration.xlsx', $2, $3, true, $4, $5, 'prod', $6, $7, 'form', NULL, 'date_indexed', NULL)`,
        [id, md5, since, at, project, key, id.slice(2)],
      );
    }
    await db.end();
  }, 240_000);

  it("history lists ours and DET's rows, newest first, filtered by key and project", async () => {
    const r = await ccexport(['history', '--output', url, '--project', PROJECT, '--query', DEMO_QUERY]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(new RegExp(`${MD5}\\s+${PROJECT}\\s+households, household_members\\s+form`));
    const det = r.out.split("DET's checkpoints (commcare_export_runs, newest first):\n")[1] ?? '';
    const ids = [...det.matchAll(/ ([abcd]-household\w*)$/gm)].map((m) => m[1]);
    expect(ids).toEqual(['b-household_members', 'b-households', 'a-household_members', 'a-households']);
  }, 60_000);

  it("checkpoint moves ours and DET's rows to the new key, as DET's set-checkpoint-key does", async () => {
    const r = await checkpointCommand(url.replace(/^postgresql:/, 'postgresql+psycopg2:'), [
      '--query',
      DEMO_QUERY,
      '--to-key',
      'moved',
    ]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(
      `Moved 1 checkpoint(s) of ours (commcare_export_checkpoints) of project ${PROJECT}, key ${MD5} to key moved`,
    );
    expect(r.out).toContain(
      `Moved 4 of DET's rows (commcare_export_runs) of project ${PROJECT}, key ${MD5} to key moved (DET continues from them with --checkpoint-key moved)`,
    );
    // What DET 1.15 reads with --checkpoint-key moved: per table, the latest row with that key.
    expect((await detRows(`key = 'moved' AND project = $1`, [PROJECT])).map((row) => row.id)).toEqual([
      'a-household_members',
      'a-households',
      'b-household_members',
      'b-households',
    ]);
    // Other projects and keys are left alone; nothing is left under the MD5 for this project.
    expect(await detRows('key IS NULL AND project = $1', [PROJECT])).toEqual([]);
    expect((await detRows('project = $1', ['other-project'])).every((row) => row.key === null)).toBe(true);
    expect((await detRows(`key = 'other-key'`)).length).toBe(2);

    const taken = await checkpointCommand(url, ['--checkpoint-key', 'moved', '--to-key', 'other-key']);
    expect(taken.code).toBe(1);
    expect(taken.err).toContain(`key "other-key" already has DET checkpoints for project ${PROJECT}`);
  }, 60_000);

  it('refuses to change the checkpoints of an export that is running', async () => {
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock($1::bigint)', [exportLockId('moved', PROJECT)]);
      const r = await checkpointCommand(url, ['--checkpoint-key', 'moved', '--reset']);
      expect(r.code).toBe(1);
      expect(r.err).toContain(
        `a run of the export with checkpoint key "moved" for project ${PROJECT} is in progress`,
      );
      expect((await detRows(`key = 'moved'`)).length).toBe(4);
    } finally {
      await holder.end();
    }
  }, 60_000);

  it("checkpoint --reset removes DET's rows (printed in full) and ours; --only chooses whose", async () => {
    const det = await checkpointCommand(url, ['--checkpoint-key', 'moved', '--reset', '--only', 'det']);
    expect(det.code, det.err).toBe(0);
    expect(det.out).toContain(
      `Removed 4 of DET's rows (commcare_export_runs) of project ${PROJECT}, key moved:`,
    );
    expect(det.out).toMatch(
      /moved\s+ledger\s+households\s+household-registration\.xlsx\s+2026-01-02T10:00:00\s+2026-01-02T10:05:00\.000001\s+true\s+date_indexed\s+prod\s+b-households/,
    );
    expect(det.out).not.toContain('commcare_export_checkpoints');
    expect(await detRows(`key = 'moved'`)).toEqual([]);

    const ours = await checkpointCommand(url, ['--checkpoint-key', 'moved', '--reset']);
    expect(ours.code, ours.err).toBe(0);
    expect(ours.out).toContain(
      `Removed 1 checkpoint(s) of ours (commcare_export_checkpoints) of project ${PROJECT}, key moved:`,
    );
    expect(ours.out).toContain('The next run exports everything.');
    expect((await detRows('true')).length).toBe(4);
  }, 60_000);
});

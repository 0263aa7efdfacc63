import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import ExcelJS from 'exceljs';
import JSZip from 'jszip';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { parseCsv } from '../sinks/helpers';
import { motoS3 } from '../support/aws';
import { createDatabase, withDb } from '../support/databases';
import { liveRegistrationIds } from '../support/registrations';
import { sandboxExportArgs } from '../support/sandbox-export';
import { captureIO } from './capture';

const KEY = 'outputs-test-key-51c0d';
const USER = 'exporter@example.org';

let sandbox: RunningSandbox;
let work: string;
let dbUrl: string;
let expectedHouseholds: number;
/** Registration forms with a version HQ served unarchived: what DET's single files hold (`--deletions ignore`). */
let servedHouseholds: number;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 11,
    projects: [{ name: 'district', forms: 600, cases: 50 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  work = mkdtempSync(join(tmpdir(), 'ccexport-outputs-'));
  dbUrl = await createDatabase('outputs');
  // Ground truth: the registration forms HQ lists today (latest version not archived); the default
  // `--deletions remove` keeps the tables to those.
  expectedHouseholds = liveRegistrationIds(sandbox.dataset, 'district').length;
  const served = new Set<string>();
  for (const r of sandbox.dataset.timeline('district', 'form')) {
    const form = r.form as Record<string, unknown>;
    if (r.archived !== true && String(form['@xmlns']).endsWith('REGISTRATION')) served.add(String(r.id));
  }
  servedHouseholds = served.size;
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

function args(format: string, output: string, ...extra: string[]): string[] {
  const source = { url: sandbox.url, project: 'district', username: USER };
  return sandboxExportArgs(source, format, output, '--auth-mode', 'apikey', '--batch-size', '100', ...extra);
}

async function count(table: string): Promise<number> {
  const result = await withDb(dbUrl, (db) => db.query<{ n: string }>(`select count(*) as n from "${table}"`));
  return Number(result.rows[0]?.n);
}

describe('ccexport run outputs', () => {
  it('loads PostgreSQL, and a second run resumes from the checkpoint without duplicating a row', async () => {
    const first = captureIO({ CCEXPORT_API_KEY: KEY });
    expect(await main(args('sql', dbUrl), first)).toBe(0);
    expect(await count('households')).toBe(expectedHouseholds);
    const members = await count('household_members');
    expect(members).toBeGreaterThan(expectedHouseholds);

    const second = captureIO({ CCEXPORT_API_KEY: KEY });
    expect(await main(args('sql', dbUrl), second)).toBe(0);
    expect(second.out()).toMatch(/Export finished: \d+ records/);
    expect(await count('households')).toBe(expectedHouseholds);
    expect(await count('household_members')).toBe(members);
  });

  it('re-exports everything with --start-over and still holds each row once', async () => {
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    expect(await main(args('sql', dbUrl, '--start-over'), io)).toBe(0);
    expect(io.out()).toMatch(/Export finished: [\d,]+ records/);
    expect(await count('households')).toBe(expectedHouseholds);
  });

  it('writes csv objects and a manifest to S3', async () => {
    const endpoint = inject('motoEndpoint');
    const s3 = motoS3(endpoint);
    await s3.send(new CreateBucketCommand({ Bucket: 'cli-outputs' }));
    const io = captureIO({
      CCEXPORT_API_KEY: KEY,
      AWS_ENDPOINT_URL_S3: endpoint,
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_REGION: 'us-east-1',
    });
    // The SDK reads its endpoint and credentials from the process environment.
    const saved = { ...process.env };
    Object.assign(process.env, io.env);
    try {
      expect(await main(args('csv', 's3://cli-outputs/district'), io)).toBe(0);
    } finally {
      process.env = saved;
    }
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: 'cli-outputs', Prefix: 'district/' }));
    const keys = (listed.Contents ?? []).map((o) => o.Key ?? '');
    expect(keys.some((k) => /^district\/households\/.+\.csv$/.test(k))).toBe(true);
    expect(keys.some((k) => /^district\/household_members\/.+\.csv$/.test(k))).toBe(true);
    expect(keys.some((k) => k.startsWith('district/manifests/'))).toBe(true);
  });

  it('writes one workbook per table to a local folder for xlsx', async () => {
    const output = join(work, 'xlsx');
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    expect(await main(args('xlsx', output), io)).toBe(0);
    expect(readdirSync(join(output, 'households')).some((f) => f.endsWith('.xlsx'))).toBe(true);
  });

  it('writes csv as one zip of <table>.csv, a full export each run, as DET does', async () => {
    const output = join(work, 'single', 'reports.zip');
    for (const run of [1, 2]) {
      const io = captureIO({ CCEXPORT_API_KEY: KEY });
      expect(await main(args('csv', output), io), io.err()).toBe(0);
      const zip = await JSZip.loadAsync(readFileSync(output));
      expect(Object.keys(zip.files).sort(), `run ${run}`).toEqual([
        'household_members.csv',
        'households.csv',
      ]);
      const households = parseCsv(await zip.file('households.csv')!.async('string'));
      expect(new Set(households.slice(1).map((r) => r[0])).size, `run ${run}`).toBe(servedHouseholds);
    }
    expect(readdirSync(join(work, 'single'))).toEqual(['reports.zip']);
  });

  it('writes xlsx as one workbook with a sheet per table', async () => {
    const output = join(work, 'single-xlsx', 'report.xlsx');
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    expect(await main(args('xlsx', output), io), io.err()).toBe(0);
    const book = new ExcelJS.Workbook();
    await book.xlsx.readFile(output);
    expect(book.worksheets.map((s) => s.name)).toEqual(['households', 'household_members']);
    const ids = book.getWorksheet('households')!.getColumn(1).values.slice(2);
    expect(new Set(ids).size).toBe(servedHouseholds);
  });

  it('prints json to standard output without --output, as DET does, and the summary to stderr', async () => {
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    const flags = args('json', 'unused');
    flags.splice(flags.indexOf('--output'), 2);
    expect(await main(flags, io), io.err()).toBe(0);
    const tables = JSON.parse(io.out()) as { name: string; headings: string[]; rows: unknown[][] }[];
    expect(tables.map((t) => t.name)).toEqual(['households', 'household_members']);
    expect(new Set(tables[0]!.rows.map((r) => r[0])).size).toBe(servedHouseholds);
    expect(io.err()).toMatch(/Export finished/);
  });

  it('refuses an --output file name of another format instead of making a folder of that name', async () => {
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    expect(await main(args('csv', join(work, 'wrong.xlsx')), io)).toBe(2);
    expect(io.err()).toMatch(/does not fit --output-format csv: give a \.zip file/);
    expect(existsSync(join(work, 'wrong.xlsx'))).toBe(false);
  });

  it('writes s3://bucket/key.zip as one object', async () => {
    const endpoint = inject('motoEndpoint');
    const s3 = motoS3(endpoint);
    await s3.send(new CreateBucketCommand({ Bucket: 'cli-single' }));
    const io = captureIO({
      CCEXPORT_API_KEY: KEY,
      AWS_ENDPOINT_URL_S3: endpoint,
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_REGION: 'us-east-1',
    });
    const saved = { ...process.env };
    Object.assign(process.env, io.env);
    try {
      expect(await main(args('csv', 's3://cli-single/exports/district.zip'), io), io.err()).toBe(0);
    } finally {
      process.env = saved;
    }
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: 'cli-single' }));
    expect((listed.Contents ?? []).map((o) => o.Key)).toEqual(['exports/district.zip']);
    const body = await s3.send(new GetObjectCommand({ Bucket: 'cli-single', Key: 'exports/district.zip' }));
    const zip = await JSZip.loadAsync(await body.Body!.transformToByteArray());
    expect(Object.keys(zip.files).sort()).toEqual(['household_members.csv', 'households.csv']);
  });

  it("exports DET's users and locations tables with --with-organization, and commcare_userid on form tables", async () => {
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    const code = await main(args('sql', dbUrl, '--with-organization', '--start-over'), io);
    expect(
      io
        .err()
        .split('\n')
        .filter((l) => l.startsWith('ccexport:')),
    ).toEqual([]);
    expect(code).toBe(0);
    expect(await count('commcare_users')).toBe(sandbox.dataset.count('district', 'user'));
    expect(await count('commcare_locations')).toBe(sandbox.dataset.count('district', 'location'));
    const client = new pg.Client({ connectionString: dbUrl });
    await client.connect();
    try {
      const result = await client.query<{ n: string }>(
        'select count(*) as n from households where commcare_userid is not null',
      );
      expect(Number(result.rows[0]?.n)).toBe(expectedHouseholds);
    } finally {
      await client.end();
    }
  });

  it('exports --users alone to SQL without a query file (DET crashes on this)', async () => {
    const output = join(work, 'users-only');
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    const code = await main(
      [
        '--project',
        'district',
        '--commcare-hq',
        sandbox.url,
        '--username',
        USER,
        '--users',
        '--output-format',
        'csv',
        '--output',
        output,
        '--progress',
        'none',
      ],
      io,
    );
    expect(code).toBe(0);
    expect(readdirSync(join(output, 'commcare_users')).some((f) => f.endsWith('.csv'))).toBe(true);
  });
});

import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { DEMO_QUERY } from '../../functions/cli/demo-command';
import { main } from '../../functions/cli/main';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { motoS3 } from '../support/aws';
import { captureIO } from './capture';

const KEY = 'outputs-test-key-51c0d';
const USER = 'exporter@example.org';

let sandbox: RunningSandbox;
let work: string;
let dbUrl: string;
let expectedHouseholds: number;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 11,
    projects: [{ name: 'district', forms: 600, cases: 50 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  work = mkdtempSync(join(tmpdir(), 'ccexport-outputs-'));
  const admin = new pg.Client({ connectionString: inject('pgUrl') });
  await admin.connect();
  const name = `outputs_${randomBytes(4).toString('hex')}`;
  await admin.query(`create database ${name}`);
  await admin.end();
  dbUrl = inject('pgUrl').replace(/\/postgres$/, `/${name}`);
  // Ground truth: distinct unarchived registration forms the sandbox serves.
  const ids = new Set<string>();
  for (const r of sandbox.dataset.timeline('district', 'form')) {
    const form = r.form as Record<string, unknown>;
    if (r.archived !== true && String(form['@xmlns']).endsWith('REGISTRATION')) ids.add(String(r.id));
  }
  expectedHouseholds = ids.size;
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

function args(format: string, output: string, ...extra: string[]): string[] {
  return [
    '--project',
    'district',
    '--commcare-hq',
    sandbox.url,
    '--username',
    USER,
    '--auth-mode',
    'apikey',
    '--query',
    DEMO_QUERY,
    '--output-format',
    format,
    '--output',
    output,
    '--batch-size',
    '100',
    '--progress',
    'none',
    ...extra,
  ];
}

async function count(table: string): Promise<number> {
  const client = new pg.Client({ connectionString: dbUrl });
  await client.connect();
  try {
    const result = await client.query<{ n: string }>(`select count(*) as n from "${table}"`);
    return Number(result.rows[0]?.n);
  } finally {
    await client.end();
  }
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

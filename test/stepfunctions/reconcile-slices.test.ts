/**
 * The scheduled reconcile runs in slices like an export: the synthesized state machine (local
 * interpreter) invokes the bundled export function, each invocation lists ids until its Lambda context
 * says time is up, stages them in the database and hands back a continuation saying where the listing
 * resumes; the last invocation compares and removes in one transaction. The function verifies the
 * database (verify-full), so the run happens in a child process that trusts the test CA
 * (NODE_EXTRA_CA_CERTS), as the stack makes the function trust the RDS CAs.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import type { ExportJob, ExportSliceEvent } from '../../functions/config/job';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { exportFunctionEnv, motoS3, motoSecretsManager } from '../support/aws';
import { shellEnv } from '../support/cli-process';
import { liveRegistrationIds, registrationsWithMembers } from '../support/registrations';
import { ccexportInProcess, sandboxExportArgs } from '../support/sandbox-export';
import { type RunningPostgres, startPostgres } from '../support/services';
import { makeCertificates } from '../support/tls';
import type { ChildOrders, ChildRun } from './bundled-run-child';
import {
  exportHandlerEntry,
  findState,
  fixtureConfig,
  pointJobsAt,
  repoRoot,
  type SynthesizedExport,
  synthesizeExport,
} from './harness';

const USER = 'exporter@example.org';
const KEY = `reconcile-slices-${randomUUID()}`;

let synthesized: SynthesizedExport;
let sandbox: RunningSandbox;
let server: RunningPostgres;
let certs: string;
let env: Record<string, string>;
let secret: (value: unknown) => Promise<string>;

beforeAll(async () => {
  certs = mkdtempSync(join(tmpdir(), 'reconcile-slices-'));
  server = await startPostgres({ tls: makeCertificates(certs) });
  synthesized = synthesizeExport(fixtureConfig, 'households', exportHandlerEntry);
  sandbox = await startSandbox({
    seed: 71,
    projects: [
      { name: 'north', forms: 6_000, cases: 20, mobileUsers: 8 },
      { name: 'south', forms: 3_000, cases: 20, mobileUsers: 8 },
    ],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  pointJobsAt(synthesized, sandbox.url);
  const endpoint = inject('motoEndpoint');
  const secrets = motoSecretsManager(endpoint);
  secret = async (value: unknown) =>
    (
      await secrets.send(
        new CreateSecretCommand({
          Name: `slices-${randomUUID().slice(0, 8)}`,
          SecretString: JSON.stringify(value),
        }),
      )
    ).ARN as string;
  const bucket = `slices-${randomUUID().slice(0, 8)}`;
  await motoS3(endpoint).send(new CreateBucketCommand({ Bucket: bucket }));
  const credentialSecretArn = await secret({
    provider: 'commcare',
    baseUrl: sandbox.url,
    username: USER,
    key: KEY,
    keyName: 'det-2026-12',
    createdAt: new Date().toISOString(),
    projects: ['north', 'south'],
  });
  env = exportFunctionEnv({ credentialSecretArn, bucket, codeRoot: synthesized.codeRoot, endpoint });
}, 400_000);

afterAll(async () => {
  await sandbox?.close();
  server?.stop();
  rmSync(certs, { recursive: true, force: true });
});

/** The database secret (RDS's shape) of database `dbname`; the certificate names localhost, which verify-full checks. */
function databaseSecret(dbname: string): Promise<string> {
  return secret({
    host: 'localhost',
    port: server.port,
    username: 'postgres',
    password: 'unused-trust-auth',
    dbname,
  });
}

/** The deployed job, as a reconcile of a PostgreSQL output. */
function reconcileJob(project: string, changes: Partial<ExportJob> = {}): ExportJob {
  const load = findState(synthesized.definition, 'Load deployed jobs') as {
    Result: { slices: ExportSliceEvent[] };
  };
  return {
    ...load.Result.slices[0]!.job,
    project,
    output: { type: 'postgres', schema: 'public' },
    deletions: 'remove',
    task: 'reconcile',
    ...changes,
  };
}

/** Runs the state machine in a child process trusting the test CA, the function reading database `dbname`. */
async function runInChild(
  dbname: string,
  orders: Omit<ChildOrders, 'synthesized' | 'env'>,
): Promise<ChildRun> {
  const functionEnv = { ...env, DATABASE_SECRET_ARN: await databaseSecret(dbname) };
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(repoRoot, 'test/stepfunctions/bundled-run-child.ts')],
    {
      cwd: repoRoot,
      env: {
        ...shellEnv(),
        NODE_EXTRA_CA_CERTS: join(certs, 'ca.crt'),
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString('utf8');
  });
  child.stderr.on('data', (c: Buffer) => {
    err += c.toString('utf8');
  });
  child.stdin.end(JSON.stringify({ ...orders, synthesized, env: functionEnv } satisfies ChildOrders));
  const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
  return new Promise((resolve, reject) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(JSON.parse(out) as ChildRun);
      else reject(new Error(`the child run exited with ${code}: ${err.slice(-2000)}`));
    }),
  );
}

async function sql<T extends pg.QueryResultRow>(
  db: string,
  text: string,
  values: unknown[] = [],
): Promise<T[]> {
  const client = new pg.Client({
    connectionString: server.url.replace(/\/postgres$/, `/${db}`),
    ssl: { rejectUnauthorized: false },
  });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** Exports the project into a new database `db` with the CLI, as its first load. */
async function exportInto(project: string, db: string): Promise<void> {
  await sql('postgres', `create database ${db}`);
  const url = `postgresql://postgres@127.0.0.1:${server.port}/${db}?sslmode=require`;
  // --progress json is what a run whose stderr is not a terminal reports anyway.
  const source = { url: sandbox.url, project, username: USER, progress: 'json' };
  await ccexportInProcess(sandboxExportArgs(source, 'sql', url, '--batch-size', '1000'), {
    CCEXPORT_API_KEY: KEY,
  });
}

const registrations = (project: string): JsonObject[] => registrationsWithMembers(sandbox.dataset, project);

const live = (project: string): string[] => liveRegistrationIds(sandbox.dataset, project);

describe('the scheduled reconcile in the state machine, with the bundled function', () => {
  it('lists in several slices, resuming from the continuation, and removes the gone records in the last', async () => {
    const db = 'north_wh';
    await exportInto('north', db);
    const [deleted, archived] = registrations('north');
    sandbox.apply(
      'north',
      { kind: 'archive-form', id: String(deleted!.id), reindex: false },
      { kind: 'delete-form', id: String(deleted!.id) },
      { kind: 'archive-form', id: String(archived!.id), reindex: false },
    );

    const run = await runInChild(db, {
      name: 'reconcile-north',
      input: { slices: [{ job: reconcileJob('north'), continuation: null }] },
      pagesPerSlice: 0,
      maxExecutions: 5,
    });

    expect(run.failed).toBeUndefined();
    console.log(`reconcile of north: ${run.slices.length} slices`);
    expect(run.slices.length).toBeGreaterThanOrEqual(3);
    expect(run.slices.every((s) => s.error === undefined)).toBe(true);
    expect(run.slices.slice(0, -1).every((s) => (s.result as { done: boolean }).done === false)).toBe(true);
    expect(run.slices.at(-1)!.result).toMatchObject({ done: true, rows: expect.any(Number) });
    // Every slice after the first resumed where the previous one stopped.
    const cursors = run.slices
      .slice(1)
      .map((s) => (s.continuation as { reconcile: { pages: number } }).reconcile);
    expect(cursors.map((c) => c.pages)).toEqual([...cursors.map((c) => c.pages)].sort((a, b) => a - b));
    expect(cursors[0]!.pages).toBeGreaterThan(0);
    const households = (await sql<{ id: string }>(db, 'select id from households')).map((r) => r.id).sort();
    expect(households).toEqual(live('north'));
    expect(
      await sql(db, `select id from household_members where split_part(id, '.', 1) = any($1)`, [
        [String(deleted!.id), String(archived!.id)],
      ]),
    ).toEqual([]);
    expect(await sql(db, 'select * from commcare_export_reconcile_ids')).toEqual([]);
  }, 600_000);

  it('fails at the guard in the last slice and changes nothing', async () => {
    const db = 'south_wh';
    await exportInto('south', db);
    for (const form of registrations('south').slice(0, 300))
      sandbox.apply(
        'south',
        { kind: 'archive-form', id: String(form.id), reindex: false },
        { kind: 'delete-form', id: String(form.id) },
      );
    const before = await sql(db, 'select count(*)::int as n from households');

    const run = await runInChild(db, {
      name: 'reconcile-south',
      input: { slices: [{ job: reconcileJob('south'), continuation: null }] },
      pagesPerSlice: 0,
      maxExecutions: 5,
    });

    expect(run.failed?.name).toBe('ReconcileGuardError');
    expect(await sql(db, 'select count(*)::int as n from households')).toEqual(before);
  }, 600_000);
});

/**
 * TLS to PostgreSQL as the export function connects: `verify-full` against a throwaway server whose
 * certificate comes from a CA made for this test. An untrusted chain or a wrong host name must stop the
 * connection (with `require`, any certificate was accepted, so anyone on the path could pose as the
 * database); the CA made trusted through NODE_EXTRA_CA_CERTS, as the stack does on Lambda for the RDS
 * certificate authorities, lets it through.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExportJob } from '../../functions/config/job';
import type { ExportSliceDeps } from '../../functions/export/handler';
import { runExportSlice } from '../../functions/export/slice';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { connectPostgres } from '../../functions/sinks/postgres/connection';
import { PERMANENT_ERRORS } from '../../lib/export-pipeline';
import { recordingMetrics } from '../stepfunctions/harness';
import { type RunningPostgres, startPostgres } from '../support/services';
import { makeCertificates } from '../support/tls';

const repoRoot = join(import.meta.dirname, '../..');
const USER = 'tls@example.org';
const KEY = `tls-key-${randomUUID()}`;

let certs: string;
let server: RunningPostgres;
let sandbox: RunningSandbox;

/** Connects in a fresh Node process (NODE_EXTRA_CA_CERTS is read at start) and reports the TLS state. */
async function connectInProcessWith(env: Record<string, string>, host: string): Promise<string> {
  const script = `
    const { connectPostgres } = await import(${JSON.stringify(join(repoRoot, 'functions/sinks/postgres/connection.ts'))});
    try {
      const c = await connectPostgres({ host: ${JSON.stringify(host)}, port: ${server.port}, username: 'postgres', dbname: 'postgres', sslmode: 'verify-full' });
      const r = await c.query('select ssl from pg_stat_ssl where pid = pg_backend_pid()');
      await c.close();
      console.log(r.rows[0].ssl ? 'tls' : 'plain');
    } catch (e) { console.log('refused: ' + e.message); }`;
  return await new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: repoRoot, env: { ...process.env, ...env }, encoding: 'utf8' },
      (error, stdout, stderr) => (error ? reject(new Error(stderr)) : resolve(stdout.trim())),
    );
  });
}

beforeAll(async () => {
  certs = mkdtempSync(join(tmpdir(), 'pg-tls-'));
  server = await startPostgres({ tls: makeCertificates(certs) });
  sandbox = await startSandbox({
    seed: 3,
    projects: [{ name: 'tls-project', forms: 30, cases: 5 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
}, 120_000);

afterAll(async () => {
  server?.stop();
  await sandbox?.close();
  rmSync(certs, { recursive: true, force: true });
});

/** A connection to the server as `localhost` with verify-full, trusting the test CA. */
function connectVerified() {
  return connectPostgres({
    host: 'localhost',
    port: server.port,
    username: 'postgres',
    dbname: 'postgres',
    sslmode: 'verify-full',
    caFile: join(certs, 'ca.crt'),
  });
}

/** The export function's dependencies with the sandbox's credential and the given database secret. */
function sliceDeps(databaseSecret: ExportSliceDeps['databaseSecret']): ExportSliceDeps {
  const credentials = async () => ({ username: USER, apiKey: KEY, baseUrl: sandbox.url });
  return {
    credentials,
    refreshCredentials: credentials,
    logger: new Logger({ logLevel: 'SILENT' }),
    metrics: recordingMetrics().metrics,
    s3Client: new S3Client({ region: 'us-east-1' }),
    databaseSecret,
  };
}

describe('TLS to PostgreSQL with verify-full', () => {
  it('connects when the CA is trusted and the certificate names the host', async () => {
    const connection = await connectVerified();
    const { rows } = await connection.query<{ ssl: boolean }>(
      'select ssl from pg_stat_ssl where pid = pg_backend_pid()',
    );
    await connection.close();

    expect(rows).toEqual([{ ssl: true }]);
  });

  it('fails on a certificate that does not name the host it connected to', async () => {
    const connecting = connectPostgres({
      host: '127.0.0.1',
      port: server.port,
      username: 'postgres',
      dbname: 'postgres',
      sslmode: 'verify-full',
      caFile: join(certs, 'ca.crt'),
    });

    await expect(connecting).rejects.toThrow(/altnames|does not match|Hostname/i);
  });

  it('trusts the CA file named by NODE_EXTRA_CA_CERTS, as the stack sets it for the RDS CAs on Lambda', async () => {
    expect(await connectInProcessWith({}, 'localhost')).toMatch(/^refused: .*certificate/);
    expect(await connectInProcessWith({ NODE_EXTRA_CA_CERTS: join(certs, 'ca.crt') }, 'localhost')).toBe(
      'tls',
    );
  });

  it('makes the export function refuse a database whose certificate it cannot verify', async () => {
    // The RDS secret shape; the server's CA is trusted nowhere in this process.
    const deps = sliceDeps(async () => ({
      host: 'localhost',
      port: server.port,
      username: 'postgres',
      password: 'unused',
      dbname: 'postgres',
    }));
    const job: ExportJob = {
      exportName: 'tls-check',
      project: 'tls-project',
      credential: { name: 'hq', provider: 'commcare', baseUrl: sandbox.url, username: USER },
      queryFile: join(repoRoot, 'examples/queries/forms.xlsx'),
      output: { type: 'postgres', schema: 'tls_check' },
      mode: 'incremental',
    };

    const slice = runExportSlice(
      deps,
      { job, continuation: null, runId: 'tls-run' },
      { remainingMs: () => 600_000, safetyMarginMs: 60_000 },
    );

    await expect(slice).rejects.toThrow(/Cannot connect to PostgreSQL .*certificate/);
  });

  it('makes the export function refuse a table it did not create, as a permanent error, writing nothing', async () => {
    const admin = await connectVerified();
    try {
      await admin.query('CREATE SCHEMA owned_check');
      await admin.query('CREATE TABLE owned_check."Forms" (id text PRIMARY KEY, note text)');
      await admin.query(`INSERT INTO owned_check."Forms" VALUES ('mine', 'kept')`);
    } finally {
      await admin.close();
    }
    // The test's CA given as a CA file (on Lambda, NODE_EXTRA_CA_CERTS holds the RDS CAs).
    const deps = sliceDeps(
      async () =>
        ({
          host: 'localhost',
          port: server.port,
          username: 'postgres',
          password: 'unused',
          dbname: 'postgres',
          caFile: join(certs, 'ca.crt'),
        }) as Awaited<ReturnType<NonNullable<ExportSliceDeps['databaseSecret']>>>,
    );
    const job: ExportJob = {
      exportName: 'owned-check',
      project: 'tls-project',
      credential: { name: 'hq', provider: 'commcare', baseUrl: sandbox.url, username: USER },
      queryFile: join(repoRoot, 'examples/queries/forms.xlsx'),
      output: { type: 'postgres', schema: 'owned_check' },
      mode: 'incremental',
    };

    const failure = await runExportSlice(
      deps,
      { job, continuation: null, runId: 'owned-run' },
      { remainingMs: () => 600_000, safetyMarginMs: 60_000 },
    ).then(
      () => new Error('the slice succeeded'),
      (error: unknown) => error as Error,
    );

    expect(failure.message).toContain('"owned_check"."Forms"');
    expect(failure.message).toContain('did not create');
    // The state machine never retries it (matched by name, as in the deployed bundle).
    expect(PERMANENT_ERRORS).toContain(failure.name);
    const after = await connectVerified();
    try {
      expect((await after.query('SELECT * FROM owned_check."Forms"')).rows).toEqual([
        { id: 'mine', note: 'kept' },
      ]);
    } finally {
      await after.close();
    }
  });
});

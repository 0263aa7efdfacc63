/**
 * The export function as it ships: the stack bundles functions/export/handler.ts with the esbuild
 * options every deployment uses (lib/function-defaults.ts), and these tests load that bundle, with its
 * module-scope clients reading the environment the stack gives it (moto stands in for AWS, the sandbox
 * for HQ). The state machine's never-retry list matches errors by name, so each name on it must be a
 * name the bundle really throws; minifying without kept names once turned `CommCareAuthError` into a
 * one-letter name and sent repeated 401s to the catch-all retrier.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { CreateSecretCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runRunsCommand } from '../../functions/cli/aws';
import type { ExportJob, ExportSliceEvent } from '../../functions/config/job';
import { type RunningSandbox, type SandboxDetExport, startSandbox } from '../../functions/sandbox';
import { commcareSecretString, exportFunctionEnv, motoS3, motoSecretsManager } from '../support/aws';
import { REGISTRATION_COLUMNS, registrationExport } from '../support/hq-exports';
import {
  exportHandlerEntry,
  findState,
  fixtureConfig,
  loadBundledHandler,
  pointJobsAt,
  runLocally,
  type SliceHandler,
  type SynthesizedExport,
  synthesizeExport,
} from './harness';

const USER = 'exporter@example.org';
const KEY = `bundle-key-${randomUUID()}`;
const HQ_EXPORT_ID = 'exp-visits';
const hqExport = (columns: SandboxDetExport['columns']) =>
  registrationExport(columns, { id: HQ_EXPORT_ID, name: 'Visits' });
const VISIT_COLUMNS = [REGISTRATION_COLUMNS.id, REGISTRATION_COLUMNS.householdName];
const BROKEN_EXPORT: SandboxDetExport = { ...hqExport([]), id: 'exp-broken', name: 'Broken', broken: true };
const PROJECTS = [
  { name: 'north', forms: 1_500, cases: 10, detExports: [hqExport(VISIT_COLUMNS), BROKEN_EXPORT] },
];

let synthesized: SynthesizedExport;
let sandbox: RunningSandbox;
let s3: S3Client;
let secrets: SecretsManagerClient;
let bucket: string;
let endpoint: string;
let scratch: string;

function secretDocument(overrides: { key?: string } = {}): string {
  return commcareSecretString({
    baseUrl: sandbox.url,
    username: USER,
    key: KEY,
    createdAt: new Date().toISOString(),
    projects: PROJECTS.map((p) => p.name),
    ...overrides,
  });
}

async function newSecret(text: string): Promise<string> {
  const created = await secrets.send(
    new CreateSecretCommand({ Name: `bundle-${randomUUID().slice(0, 8)}`, SecretString: text }),
  );
  return created.ARN as string;
}

/** A fresh bundled function (as a cold start) reading the secret `secretArn`. */
function coldStart(secretArn: string): SliceHandler {
  return loadBundledHandler(
    synthesized.codeRoot,
    exportFunctionEnv({ credentialSecretArn: secretArn, bucket, codeRoot: synthesized.codeRoot, endpoint }),
  );
}

const context = () => ({ awsRequestId: randomUUID(), getRemainingTimeInMillis: () => 15 * 60_000 });

/** The deployed job for the one project, optionally changed. */
function job(changes: Partial<ExportJob> = {}): ExportJob {
  const load = findState(synthesized.definition, 'Load deployed jobs') as {
    Result: { slices: ExportSliceEvent[] };
  };
  const [first] = load.Result.slices;
  if (!first) throw new Error('the deployment has no jobs');
  return { ...first.job, project: 'north', output: ownPrefix(), ...changes };
}

/** The deployed job turned into one that names an HQ export instead of the bundled query file. */
function hqJob(ref: string, output = ownPrefix()): ExportJob {
  const { queryFile: _bundled, ...rest } = job({ output });
  return { ...rest, hqExport: ref };
}

/** An S3 output of its own, so no scenario meets another's checkpoint or lease. */
const ownPrefix = () => ({
  type: 's3' as const,
  format: 'csv' as const,
  prefix: `p-${randomUUID().slice(0, 8)}/`,
});

/** The name of what the bundled function throws for `event` with the secret `secretText`. */
async function thrownName(secretText: string, event: unknown): Promise<string> {
  const handler = coldStart(await newSecret(secretText));
  try {
    await handler(event, context());
  } catch (error) {
    return (error as Error).name;
  }
  return 'no error';
}

/** Every error name the slice task's retriers list, except the States.* wildcards. */
function retrierErrorNames(): { permanent: string[]; retried: string[] } {
  const slice = findState(synthesized.definition, 'Export slice') as {
    Retry: { ErrorEquals: string[]; MaxAttempts?: number }[];
  };
  const names = (retriers: typeof slice.Retry) =>
    retriers
      .flatMap((r) => r.ErrorEquals)
      // States.* are wildcards; Lambda.* are the invoke API's own errors, not the function's.
      .filter((e) => !e.startsWith('States.') && !e.startsWith('Lambda.'));
  return {
    permanent: names(slice.Retry.filter((r) => r.MaxAttempts === 0)),
    retried: names(slice.Retry.filter((r) => r.MaxAttempts !== 0)),
  };
}

beforeAll(async () => {
  endpoint = inject('motoEndpoint');
  s3 = motoS3(endpoint);
  secrets = motoSecretsManager(endpoint);
  scratch = mkdtempSync(join(tmpdir(), 'bundle-test-'));
  // The real export function, bundled by CDK as `cdk deploy` bundles it.
  synthesized = synthesizeExport(fixtureConfig, 'households', exportHandlerEntry);
  sandbox = await startSandbox({
    seed: 5,
    projects: PROJECTS,
    credentials: [{ username: USER, apiKey: KEY }],
  });
  pointJobsAt(synthesized, sandbox.url);
  bucket = `bundle-${randomUUID().slice(0, 8)}`;
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
}, 400_000);

afterAll(async () => {
  await sandbox?.close();
});

describe('the bundled export function', () => {
  it('is minified as deployed, and still throws errors under their own names', async () => {
    const code = readFileSync(join(synthesized.codeRoot, 'index.js'), 'utf8');
    // Minified: no indentation, few lines for megabytes of code.
    expect(code.length / code.split('\n').length).toBeGreaterThan(1_000);

    const garbage = join(scratch, 'broken.xlsx');
    writeFileSync(garbage, 'not a workbook');
    const thrown = {
      ExportEventError: await thrownName(secretDocument(), { continuation: null }),
      SecretShapeError: await thrownName('not json', { job: job(), continuation: null }),
      CommCareAuthError: await thrownName(secretDocument({ key: `wrong-${randomUUID()}` }), {
        job: job(),
        continuation: null,
      }),
      // The deployment's base URL (the job's) wins over the secret's: a wrong prefix there is a 404.
      CommCareRequestError: await thrownName(secretDocument(), {
        job: job({ credential: { ...job().credential, baseUrl: `${sandbox.url}/no-such-prefix` } }),
        continuation: null,
      }),
      QueryFileError: await thrownName(secretDocument(), {
        job: job({ queryFile: garbage }),
        continuation: null,
      }),
      SinkConfigError: await thrownName(secretDocument(), {
        // A PostgreSQL output on a function deployed without a database.
        job: job({ output: { type: 'postgres', schema: 'nowhere' } }),
        continuation: null,
      }),
      // HQ's "Sorry, something went wrong creating that file" instead of an export's DET config.
      CommCareDetConfigError: await thrownName(secretDocument(), {
        job: hqJob('Broken'),
        continuation: null,
      }),
    };

    expect(thrown).toEqual({
      ExportEventError: 'ExportEventError',
      SecretShapeError: 'SecretShapeError',
      CommCareAuthError: 'CommCareAuthError',
      CommCareRequestError: 'CommCareRequestError',
      QueryFileError: 'QueryFileError',
      SinkConfigError: 'SinkConfigError',
      CommCareDetConfigError: 'CommCareDetConfigError',
    });
    const { permanent } = retrierErrorNames();
    for (const name of Object.values(thrown)) expect(permanent).toContain(name);
  }, 300_000);

  it('carries, under its own literal name, every error the state machine refuses to retry', () => {
    const code = readFileSync(join(synthesized.codeRoot, 'index.js'), 'utf8');
    const { permanent, retried } = retrierErrorNames();
    expect(permanent.length).toBeGreaterThanOrEqual(6);
    // The names the test above cannot provoke from HQ (a stuck page, a bad base URL) are checked in
    // the code: the bundle must name an error class by that literal, not by a minified identifier.
    for (const name of [...permanent, ...retried]) {
      // A class field `name="X"`, or esbuild's kept name `__name(X,"X")` (the helper itself minified).
      const literal = new RegExp(`name="${name}"|[\\w$]+\\([\\w$]+,"${name}"\\)`);
      expect(literal.test(code), `${name} is named literally in the bundle`).toBe(true);
    }
  });
});

describe('the synthesized state machine with the bundled function', () => {
  it('runs a project to the end through the bundle', async () => {
    const handler = coldStart(await newSecret(secretDocument()));
    const input = {
      slices: [{ job: job(), continuation: null }],
    };

    const run = await runLocally({ synthesized, handler, context, maxExecutions: 1 }, 'bundled-run', input);

    expect(run.slices.map((s) => s.error?.name)).toEqual([undefined]);
    expect(run.slices[0]?.result).toMatchObject({ done: true });
    expect(run.slices[0]?.result?.rows).toBeGreaterThan(1_000);
    expect(run.recordedRuns).toHaveLength(1);
  }, 300_000);

  it('fails at the first 401 from HQ without retrying it (one call, not five)', async () => {
    const handler = coldStart(await newSecret(secretDocument({ key: `revoked-${randomUUID()}` })));
    const input = { slices: [{ job: job(), continuation: null }] };
    const before = sandbox.requestLog.filter((r) => r.status === 401).length;

    const failed = await runLocally(
      { synthesized, handler, context, maxExecutions: 1 },
      'bundled-401',
      input,
    ).then(
      () => null,
      (error: Error) => error.cause as Error,
    );

    expect(failed?.name).toBe('CommCareAuthError');
    // The handler re-reads the secret once after a 401; the key did not change, so it stops there.
    expect(sandbox.requestLog.filter((r) => r.status === 401).length - before).toBe(1);
  }, 300_000);

  it('fails on a malformed key secret after one attempt', async () => {
    const bundled = coldStart(await newSecret('not json'));
    let attempts = 0;
    const handler: SliceHandler = (event, ctx) => {
      attempts += 1;
      return bundled(event, ctx);
    };
    const input = { slices: [{ job: job(), continuation: null }] };

    const failed = await runLocally(
      { synthesized, handler, context, maxExecutions: 1 },
      'bundled-shape',
      input,
    ).then(
      () => null,
      (error: Error) => error.cause as Error,
    );

    expect(failed?.name).toBe('SecretShapeError');
    expect(attempts).toBe(1);
  }, 300_000);
});

describe('an HQ export through the state machine and the bundle', () => {
  it('keeps the config fingerprint and the columns that changed in the run record, which ccexport runs shows', async () => {
    const handler = coldStart(await newSecret(secretDocument()));
    const output = ownPrefix();
    const start = () => ({ slices: [{ job: hqJob('Visits', output), continuation: null }] });
    sandbox.setDetExports('north', [hqExport(VISIT_COLUMNS), BROKEN_EXPORT]);
    const first = await runLocally({ synthesized, handler, context, maxExecutions: 1 }, 'hq-run-1', start());
    sandbox.setDetExports('north', [
      hqExport([REGISTRATION_COLUMNS.id, REGISTRATION_COLUMNS.householdSize]),
      BROKEN_EXPORT,
    ]);
    const second = await runLocally({ synthesized, handler, context, maxExecutions: 1 }, 'hq-run-2', start());

    type Recorded = { slices: { job: { project: string }; hqConfig: Record<string, unknown> | null }[] };
    const [firstRecord] = (first.output as Recorded).slices;
    const [secondRecord] = (second.output as Recorded).slices;
    expect(firstRecord?.hqConfig).toMatchObject({
      id: HQ_EXPORT_ID,
      name: 'Visits',
      fingerprint: expect.stringMatching(/^[0-9a-f]{32}$/),
      previousFingerprint: null,
      columnChanges: [],
    });
    const before = firstRecord?.hqConfig?.fingerprint as string;
    const after = secondRecord?.hqConfig?.fingerprint as string;
    expect(after).not.toBe(before);
    expect(secondRecord?.hqConfig).toMatchObject({
      previousFingerprint: before,
      columnChanges: [
        { table: expect.any(String), appeared: ['household_size'], disappeared: ['household_name'] },
      ],
    });

    // ccexport runs, reading these outputs as Step Functions' DescribeExecution returns them.
    const executions = [
      { name: 'hq-run-2', output: second.output },
      { name: 'hq-run-1', output: first.output },
    ];
    const sfn = {
      send: async (command: { input: { executionArn?: string } }) =>
        'executionArn' in command.input && command.input.executionArn
          ? (() => {
              const e = executions.find((x) => command.input.executionArn === `arn:${x.name}`)!;
              return {
                name: e.name,
                status: 'SUCCEEDED',
                startDate: new Date(),
                stopDate: new Date(),
                output: JSON.stringify(e.output),
              };
            })()
          : { executions: executions.map((e) => ({ executionArn: `arn:${e.name}`, name: e.name })) },
    };
    let printed = '';
    const io = {
      stdout: { write: (t: string) => (printed += t) },
      stderr: { write: () => true },
      cwd: scratch,
    };
    const code = await runRunsCommand(['households', '--state-machine-arn', 'arn:machine'], io, {
      sfn: sfn as never,
    });

    expect(code).toBe(0);
    const lines = printed.split('\n');
    expect(lines[0]).toMatch(/\bCONFIG\b/);
    expect(lines[1]).toContain(`${after.slice(0, 8)} (was ${before.slice(0, 8)})`);
    expect(lines[1]).toMatch(/hq-run-2$/);
    expect(lines[2]).toMatch(new RegExp(`\\s${before.slice(0, 8)}\\s+hq-run-1$`));
    expect(printed).toMatch(
      /hq-run-2: north: table "[^"]+": columns appeared: household_size; disappeared: household_name/,
    );
  }, 300_000);

  it("fails at once, without a retry, when HQ cannot build the export's config", async () => {
    const bundled = coldStart(await newSecret(secretDocument()));
    let attempts = 0;
    const handler: SliceHandler = (event, ctx) => {
      attempts += 1;
      return bundled(event, ctx);
    };
    const downloads = () =>
      sandbox.requestLog.filter((r) => r.path.includes('/det/download/exp-broken/')).length;
    const before = downloads();

    const failed = await runLocally({ synthesized, handler, context, maxExecutions: 1 }, 'hq-broken', {
      slices: [{ job: hqJob('Broken'), continuation: null }],
    }).then(
      () => null,
      (error: Error) => error.cause as Error,
    );

    expect(failed?.name).toBe('CommCareDetConfigError');
    expect(failed?.message).toContain(
      'Sorry, something went wrong creating that file: No Tables found in Export Broken',
    );
    expect(attempts).toBe(1);
    expect(downloads() - before).toBe(1);
  }, 300_000);
});

/**
 * Retries as Step Functions makes them, in the synthesized state machine run locally: a failed slice is
 * invoked again with the same input. A slice that committed rows and checkpoint and then failed must
 * not lose those rows to its retry; an event that cannot run must fail once, naming its field, and not
 * be retried.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CommCareClient } from '../../functions/commcare';
import type { ExportJob, ExportSliceEvent } from '../../functions/config/job';
import { makeHandler, type SliceContext } from '../../functions/export/handler';
import { runExport } from '../../functions/export/run';
import { runExportSlice } from '../../functions/export/slice';
import { compileQueryFile } from '../../functions/query';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { createSink } from '../../functions/sinks';
import { commcareSecretString, motoS3, motoSecretsManager } from '../support/aws';
import { type S3FaultProxy, startS3FaultProxy } from '../support/s3-fault-proxy';
import {
  findState,
  fixtureConfig,
  type Reassembled,
  reassemble,
  recordingMetrics,
  runLocally,
  type SynthesizedExport,
  sortedLatest,
  synthesizeExport,
} from './harness';

const USER = 'exporter@example.org';
const KEY = `sfn-retry-key-${randomUUID()}`;
const PROJECT = { name: 'north', forms: 6_000, cases: 20 };
const PAGES_PER_SLICE = 2;

let synthesized: SynthesizedExport;
let sandbox: RunningSandbox;
let s3: S3Client;
let bucket: string;
let secretArn: string;
let truth: Reassembled;
let proxy: S3FaultProxy | undefined;

beforeAll(async () => {
  const endpoint = inject('motoEndpoint');
  s3 = motoS3(endpoint);
  synthesized = synthesizeExport(fixtureConfig, 'households');
  sandbox = await startSandbox({
    seed: 12,
    projects: [PROJECT],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  bucket = `sfn-retry-${randomUUID().slice(0, 8)}`;
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const created = await motoSecretsManager(endpoint).send(
    new CreateSecretCommand({
      Name: `sfn-retry-${randomUUID().slice(0, 8)}`,
      SecretString: commcareSecretString({
        baseUrl: sandbox.url,
        username: USER,
        key: KEY,
        createdAt: new Date().toISOString(),
      }),
    }),
  );
  secretArn = created.ARN as string;
  // The same export, uninterrupted, into its own prefix.
  const compiled = await compileQueryFile(join(synthesized.codeRoot, 'query/household-registration.xlsx'), {
    baseUrl: sandbox.url,
    forSql: false,
  });
  const sink = await createSink({ format: 'csv', output: `s3://${bucket}/truth`, s3Client: s3 });
  await runExport(
    {
      source: new CommCareClient({ baseUrl: sandbox.url, username: USER, apiKey: KEY }),
      sink,
      runId: 'truth',
    },
    {
      project: PROJECT.name,
      sources: compiled.sources,
      checkpointKey: compiled.queryFileMd5,
      startOver: false,
      pageSize: 1000,
      commitEveryPages: Number.POSITIVE_INFINITY,
    },
  );
  truth = await reassemble(s3, `s3://${bucket}/truth`);
}, 300_000);

afterAll(async () => {
  await proxy?.close();
  await sandbox?.close();
});

function handlerWith(s3Client: S3Client) {
  return makeHandler({
    runner: runExportSlice,
    settings: {
      credentialSecretArn: secretArn,
      bucket,
      safetyMarginMs: 90_000,
      codeRoot: synthesized.codeRoot,
      secretMaxAgeSeconds: 300,
    },
    logger: new Logger({ logLevel: 'SILENT' }),
    metrics: recordingMetrics().metrics,
    s3Client,
    readSecret: async () => {
      const { GetSecretValueCommand } = await import('@aws-sdk/client-secrets-manager');
      const out = await motoSecretsManager(inject('motoEndpoint')).send(
        new GetSecretValueCommand({ SecretId: secretArn, VersionStage: 'AWSCURRENT' }),
      );
      return out.SecretString;
    },
  });
}

/** A Lambda context that lets a slice read `pages` pages before its deadline. */
function pagesBudget(pages: number): () => SliceContext {
  return () => {
    let checks = 0;
    return {
      awsRequestId: randomUUID(),
      getRemainingTimeInMillis: () => (++checks < pages ? 15 * 60_000 : 0),
    };
  };
}

function deployedJob(prefix: string): ExportJob {
  const load = findState(synthesized.definition, 'Load deployed jobs') as {
    Result: { slices: ExportSliceEvent[] };
  };
  const template = load.Result.slices[0]?.job;
  if (template?.output.type !== 's3') throw new Error('the deployment has no S3 job');
  // The deployment's base URL wins over the secret's: point the job at the sandbox.
  return {
    ...template,
    project: PROJECT.name,
    credential: { ...template.credential, baseUrl: sandbox.url },
    output: { ...template.output, prefix },
  };
}

describe('a slice retried by the state machine', () => {
  it('keeps the rows an attempt committed before its final manifest write failed', async () => {
    // Every SDK attempt of the first "complete" manifest write gets a 500: the slice has completed
    // its objects, its manifest and its checkpoint, then fails; Step Functions invokes it again.
    let failed = 0;
    proxy = await startS3FaultProxy(inject('motoEndpoint'), (req) => {
      const finalManifest =
        req.method === 'PUT' && req.key.includes('/manifests/') && req.body.includes('"complete": true');
      if (finalManifest && failed < 3) {
        failed++;
        return 'fail';
      }
      return 'pass';
    });
    const job = deployedJob('retried/');

    const run = await runLocally(
      {
        synthesized,
        handler: handlerWith(proxy.client),
        context: pagesBudget(PAGES_PER_SLICE),
        maxExecutions: 1,
      },
      'run-retried',
      { slices: [{ job, continuation: null }] },
    );

    expect(failed).toBe(3);
    const errors = run.slices.filter((s) => s.error);
    expect(errors).toHaveLength(1);
    const retried = run.slices.indexOf(errors[0] as (typeof run.slices)[number]);
    // The retry is the same event, as Step Functions sends it.
    expect(run.slices[retried + 1]?.event).toEqual(run.slices[retried]?.event);
    expect(run.slices.at(-1)?.result?.done).toBe(true);
    const result = await reassemble(s3, `s3://${bucket}/retried`);
    expect(result.headings).toEqual(truth.headings);
    for (const table of Object.keys(truth.headings)) {
      const rows = result.sequence[PROJECT.name]?.[table] ?? [];
      expect(rows.length, `${table} rows`).toBe(truth.sequence[PROJECT.name]?.[table]?.length);
      expect(rows).toEqual(truth.sequence[PROJECT.name]?.[table]);
      expect(sortedLatest(result, PROJECT.name, table)).toEqual(sortedLatest(truth, PROJECT.name, table));
    }
    // The failed attempt's manifest stays, incomplete, listing the objects it committed.
    expect(result.incomplete).toBe(1);
  });
});

describe('an event the export function cannot run', () => {
  const continuation = (overrides: Record<string, unknown>) => ({
    slice: 1,
    runId: 'run-bad',
    exportName: 'households',
    project: PROJECT.name,
    ...overrides,
  });
  const cases: { name: string; slice: (job: ExportJob) => Record<string, unknown>; field: RegExp }[] = [
    {
      name: 'a job without output.prefix',
      slice: (job) => ({ job: { ...job, output: { type: 's3', format: 'csv' } }, continuation: null }),
      field: /job\.output\.prefix/,
    },
    {
      name: 'output.type "ftp"',
      slice: (job) => ({ job: { ...job, output: { type: 'ftp', format: 'csv' } }, continuation: null }),
      field: /job\.output\.type: "ftp" is not an output type/,
    },
    {
      name: 'continuation.slice -1',
      slice: (job) => ({ job, continuation: continuation({ slice: -1 }) }),
      field: /continuation\.slice is -1/,
    },
    {
      name: 'continuation.slice 0.5',
      slice: (job) => ({ job, continuation: continuation({ slice: 0.5 }) }),
      field: /continuation\.slice is 0\.5/,
    },
    {
      name: 'continuation.slice 1e308',
      slice: (job) => ({ job, continuation: continuation({ slice: 1e308 }) }),
      field: /continuation\.slice is 1e\+308/,
    },
    {
      name: 'a continuation of another project',
      slice: (job) => ({ job, continuation: continuation({ project: 'south' }) }),
      field: /continuation\.project is "south"; expected this job's project "north"/,
    },
    {
      name: 'a continuation of another export',
      slice: (job) => ({ job, continuation: continuation({ exportName: 'visits' }) }),
      field: /continuation\.exportName is "visits"/,
    },
  ];

  for (const probe of cases) {
    it(`fails once, without a retry, naming the field: ${probe.name}`, async () => {
      const job = deployedJob('never/');
      const invocations: ExportSliceEvent[] = [];
      const input = { slices: [probe.slice(job)], runId: 'run-bad', generation: 0 };

      const failure = runLocally(
        {
          synthesized,
          handler: handlerWith(s3),
          context: pagesBudget(PAGES_PER_SLICE),
          maxExecutions: 1,
          beforeSlice: (_n, event) => {
            invocations.push(event);
          },
        },
        `run-bad-${randomUUID().slice(0, 8)}`,
        input,
      );

      await expect(failure).rejects.toThrow();
      expect(invocations).toHaveLength(1);
      await expect(handlerWith(s3)(invocations[0], pagesBudget(1)())).rejects.toMatchObject({
        name: 'ExportEventError',
        message: expect.stringMatching(probe.field),
      });
    });
  }
});

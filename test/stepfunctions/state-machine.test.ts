/**
 * The deployed state machine, run locally: the definition CDK synthesizes from a test config, executed
 * by aws-local-stepfunctions, its Lambda task bound to the real export handler and slice core against
 * the HQ sandbox, moto (S3 and Secrets Manager). Each slice is made to yield after one page, so one export
 * takes many slices; the result must equal a single uninterrupted run, row for row.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import { SecretsProvider } from '@aws-lambda-powertools/parameters/secrets';
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import {
  CreateSecretCommand,
  PutSecretValueCommand,
  type SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CommCareClient } from '../../functions/commcare';
import type { ExportJob, ExportSliceEvent } from '../../functions/config/job';
import { makeHandler, type SecretReader, type SliceContext } from '../../functions/export/handler';
import { runExport } from '../../functions/export/run';
import { runExportSlice } from '../../functions/export/slice';
import { compileQueryFile } from '../../functions/query';
import { type RunningSandbox, type SandboxCredential, startSandbox } from '../../functions/sandbox';
import { createSink } from '../../functions/sinks';
import { commcareSecretString, motoS3, motoSecretsManager } from '../support/aws';
import {
  findState,
  fixtureConfig,
  pointJobsAt,
  type Reassembled,
  reassemble,
  recordingMetrics,
  runLocally,
  type SynthesizedExport,
  sortedLatest,
  synthesizeExport,
} from './harness';

const USER = 'exporter@example.org';
// Sandbox keys: generated per test file, never real.
const KEY_1 = `sfn-key-1-${randomUUID()}`;
const KEY_2 = `sfn-key-2-${randomUUID()}`;
/** The deployed export's two projects: about 4,300 and 3,000 registration forms (5 and 3 pages). */
const PROJECTS = [
  { name: 'north', forms: 10_000, cases: 20 },
  { name: 'south', forms: 7_000, cases: 20 },
];
/**
 * Deadline checks per slice: the slice core checks after each page, so each slice reads two pages.
 * (With one, a slice that resumes at the end of the data reads one empty page, yields, and reports
 * "not done" again: the loop never ends. See the report in the commit that added this test.)
 */
const PAGES_PER_SLICE = 2;
/** What the slice core asks HQ for per page (fixed in functions/export/slice.ts). */
const PAGE_SIZE = 1000;

let synthesized: SynthesizedExport;
let sandbox: RunningSandbox;
let credentials: SandboxCredential[];
let s3: S3Client;
let secrets: SecretsManagerClient;
let bucket: string;
let secretArn: string;
let truth: Reassembled;
const secretReads: boolean[] = [];

function secretDocument(key: string, createdAt: string): string {
  return commcareSecretString({
    baseUrl: sandbox.url,
    username: USER,
    key,
    createdAt,
    projects: PROJECTS.map((p) => p.name),
  });
}

/** The function's secret reads, through Powertools' cache as deployed, against moto. */
function powertoolsReader(): SecretReader {
  const provider = new SecretsProvider({ awsSdkV3Client: secrets });
  return async (id, { forceFetch, maxAge }) => {
    secretReads.push(forceFetch);
    return (await provider.get(id, { forceFetch, maxAge, sdkOptions: { VersionStage: 'AWSCURRENT' } })) as
      | string
      | undefined;
  };
}

/** A Lambda context with a budget of `pages` deadline checks: the slice yields after that many pages. */
function pagesBudget(pages: number): () => SliceContext {
  return () => {
    let checks = 0;
    return {
      awsRequestId: randomUUID(),
      // The slice core checks the deadline once after each page: report "15 minutes left" until the
      // budget is spent, then "nothing left" (below any safety margin).
      getRemainingTimeInMillis: () => (++checks < pages ? 15 * 60_000 : 0),
    };
  };
}

function buildHandler(readSecret: SecretReader) {
  const { metrics, values } = recordingMetrics();
  const handler = makeHandler({
    runner: runExportSlice,
    settings: {
      credentialSecretArn: secretArn,
      bucket,
      safetyMarginMs: 90_000,
      codeRoot: synthesized.codeRoot,
      secretMaxAgeSeconds: 300,
    },
    logger: new Logger({ logLevel: 'SILENT' }),
    metrics,
    s3Client: s3,
    readSecret,
  });
  return { handler, metricValues: values };
}

/** The same export, one uninterrupted runExport per project, into its own prefix. */
async function uninterruptedRun(prefix: string, projects: readonly { name: string }[]): Promise<Reassembled> {
  const compiled = await compileQueryFile(join(synthesized.codeRoot, 'query/household-registration.xlsx'), {
    baseUrl: sandbox.url,
    forSql: false,
  });
  for (const project of projects) {
    const sink = await createSink({ format: 'csv', output: `s3://${bucket}/${prefix}`, s3Client: s3 });
    const summary = await runExport(
      {
        source: new CommCareClient({ baseUrl: sandbox.url, username: USER, apiKey: KEY_1 }),
        sink,
        runId: `truth-${project.name}`,
      },
      {
        project: project.name,
        sources: compiled.sources,
        checkpointKey: compiled.queryFileMd5,
        startOver: false,
        pageSize: PAGE_SIZE,
        commitEveryPages: Number.POSITIVE_INFINITY,
      },
    );
    expect(summary.done).toBe(true);
  }
  return await reassemble(s3, `s3://${bucket}/${prefix}`);
}

/** Jobs as the deployment embeds them ("Load deployed jobs"). */
function deployedJobs(): ExportJob[] {
  const load = findState(synthesized.definition, 'Load deployed jobs') as {
    Result: { slices: ExportSliceEvent[] };
  };
  return load.Result.slices.map((s) => s.job);
}

async function allObjectText(prefix: string): Promise<string> {
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  let text = '';
  for (const object of listed.Contents ?? []) {
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: object.Key }));
    text += await got.Body?.transformToString();
  }
  return text;
}

/** Where two row lists first differ (-1 when equal): a readable failure without diffing 10,000 rows. */
function firstDifference(a: string[][] = [], b: string[][] = []): string | null {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (JSON.stringify(a[i]) !== JSON.stringify(b[i])) {
      return `row ${i} of ${a.length} vs ${b.length}: ${JSON.stringify(a[i])} vs ${JSON.stringify(b[i])}`;
    }
  }
  return null;
}

function expectSameAsTruth(result: Reassembled, truth: Reassembled, projects = PROJECTS): void {
  expect(result.headings).toEqual(truth.headings);
  for (const table of Object.keys(truth.headings)) {
    for (const project of projects) {
      // Row for row, in order: slicing neither loses, repeats nor reorders a row.
      const sequence = firstDifference(
        result.sequence[project.name]?.[table],
        truth.sequence[project.name]?.[table],
      );
      expect(sequence, `${project.name}/${table} in write order`).toBeNull();
      const latest = firstDifference(
        sortedLatest(result, project.name, table),
        sortedLatest(truth, project.name, table),
      );
      expect(latest, `${project.name}/${table} latest row per id`).toBeNull();
    }
  }
}

beforeAll(async () => {
  const endpoint = inject('motoEndpoint');
  s3 = motoS3(endpoint);
  secrets = motoSecretsManager(endpoint);
  credentials = [{ username: USER, apiKey: KEY_1 }];
  // Synthesis (bundling, cdk-nag) takes seconds; start the sandbox and AWS fixtures alongside.
  synthesized = synthesizeExport(fixtureConfig, 'households');
  sandbox = await startSandbox({ seed: 11, projects: PROJECTS, credentials });
  pointJobsAt(synthesized, sandbox.url);
  bucket = `sfn-${randomUUID().slice(0, 8)}`;
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const created = await secrets.send(
    new CreateSecretCommand({
      Name: `sfn-test-${randomUUID().slice(0, 8)}`,
      SecretString: secretDocument(KEY_1, new Date().toISOString()),
    }),
  );
  secretArn = created.ARN as string;
  const t0 = Date.now();
  truth = await uninterruptedRun('truth', PROJECTS);
  console.info(`uninterrupted run: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}, 400_000);

afterAll(async () => {
  await sandbox?.close();
});

/** The deployed jobs, writing under another prefix (and optionally for other projects). */
function jobsUnder(prefix: string, projects: readonly { name: string }[] = PROJECTS): ExportJob[] {
  const [template] = deployedJobs();
  if (!template) throw new Error('the deployment has no jobs');
  return projects.map((p) => ({ ...template, project: p.name, output: { ...template.output, prefix } }));
}

function slicesPerProject(slices: { event: ExportSliceEvent }[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const s of slices) counts[s.event.job.project] = (counts[s.event.job.project] ?? 0) + 1;
  return counts;
}

describe('the synthesized export state machine, run locally', () => {
  it('binds its Lambda task to the export function and ships the query file where the jobs say', () => {
    const slice = findState(synthesized.definition, 'Export slice') as {
      Resource: string;
      Parameters: { FunctionName: string };
    };
    expect(slice.Resource).toBe('arn:aws:states:::lambda:invoke');
    expect(slice.Parameters.FunctionName).toBe(synthesized.functionArn);
    expect(deployedJobs().map((j) => [j.project, j.queryFile])).toEqual([
      ['north', 'query/household-registration.xlsx'],
      ['south', 'query/household-registration.xlsx'],
    ]);
    // The ground truth is not trivially small: several pages per project.
    expect(truth.sequence.north?.households?.length).toBeGreaterThan(3 * PAGE_SIZE);
    expect(truth.sequence.south?.households?.length).toBeGreaterThan(2 * PAGE_SIZE);
  });

  it('runs the scheduled input in many slices per project with the result of one uninterrupted run, row for row', async () => {
    const { handler, metricValues } = buildHandler(powertoolsReader());
    const started = Date.now();

    const run = await runLocally(
      { synthesized, handler, context: pagesBudget(PAGES_PER_SLICE), maxExecutions: 1 },
      'run-scheduled',
      synthesized.scheduleInput,
    );

    const perProject = slicesPerProject(run.slices);
    console.info(
      `scheduled run: ${run.slices.length} slices ${JSON.stringify(perProject)} in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    expect(run.slices.filter((s) => s.error).map((s) => s.error?.message)).toEqual([]);
    // Two pages per slice: at least as many slices as half the pages of the uninterrupted run.
    for (const project of PROJECTS) {
      const rows = truth.sequence[project.name]?.households?.length ?? 0;
      expect(perProject[project.name]).toBeGreaterThanOrEqual(Math.ceil(rows / PAGE_SIZE / PAGES_PER_SLICE));
    }
    expect(run.slices.length).toBeGreaterThanOrEqual(5);
    expect(run.executions).toEqual(['run-scheduled']);
    expect(run.handovers).toEqual([]);
    // Each slice of a project resumes from the previous slice's continuation, within one run id.
    for (const project of PROJECTS) {
      const mine = run.slices.filter((s) => s.event.job.project === project.name);
      expect(mine[0]?.event.continuation).toBeNull();
      for (let i = 1; i < mine.length; i++) {
        expect(mine[i]?.event.continuation).toEqual(mine[i - 1]?.result?.continuation);
        expect(mine[i]?.event.runId).toBe('run-scheduled');
      }
      expect(mine.slice(0, -1).every((s) => s.result?.done === false)).toBe(true);
      expect(mine.at(-1)?.result?.done).toBe(true);
    }

    const result = await reassemble(s3, `s3://${bucket}/households`);
    expect(result.manifests).toBe(run.slices.length);
    expect(result.incomplete).toBe(0);
    expectSameAsTruth(result, truth);

    // The state machine adds up the slices' rows and records them once, per project.
    const rowsBySlices = run.slices.reduce((n, s) => n + (s.result?.rows ?? 0), 0);
    expect(run.recordedRuns).toHaveLength(1);
    const metricData = run.recordedRuns[0]?.MetricData as { MetricName: string; Value: number }[];
    expect(metricData.map((m) => m.MetricName)).toEqual(['RunRows', 'RunRows']);
    expect(metricData.reduce((n, m) => n + m.Value, 0)).toBe(rowsBySlices);
    expect(metricValues.get('Rows')?.reduce((a, b) => a + b, 0)).toBe(rowsBySlices);
    expect(run.output).toMatchObject({ runId: 'run-scheduled', pending: [] });
    // Many slices through the local interpreter: minutes on a busy machine.
  }, 300_000);

  it('hands a long run over to new executions of itself and still equals one uninterrupted run', async () => {
    // The deployed bound (iterations per execution) is hundreds of slices; the same definition with a
    // bound of 1 makes this run hand over after every slice of each project.
    const definition = structuredClone(synthesized.definition);
    const more = findState(definition, 'More slices?') as {
      Choices: { Variable: string; NumericGreaterThanEquals?: number }[];
    };
    const bound = more.Choices.find((c) => c.Variable === '$.iteration');
    expect(bound?.NumericGreaterThanEquals).toBe(synthesized.iterationsPerExecution);
    if (bound) bound.NumericGreaterThanEquals = 1;
    const { handler } = buildHandler(powertoolsReader());
    const input = { slices: jobsUnder('handover/').map((job) => ({ job, continuation: null })) };

    const run = await runLocally(
      { synthesized, definition, handler, context: pagesBudget(PAGES_PER_SLICE), maxExecutions: 12 },
      'run-long',
      input,
    );

    console.info(
      `handover run: ${run.slices.length} slices ${JSON.stringify(slicesPerProject(run.slices))} in ${run.executions.length} executions`,
    );
    expect(run.slices.filter((s) => s.error).map((s) => s.error?.message)).toEqual([]);
    expect(run.executions.length).toBeGreaterThanOrEqual(3);
    // Handover executions are named after a hash of the run id (a name holds at most 80 characters).
    // (The local interpreter's MD5 is its own; only the shape is checked.)
    const runHash = run.executions[1]?.slice(0, 32) ?? '';
    expect(runHash).toMatch(/^[0-9a-f]{32}$/);
    expect(run.executions).toEqual(run.executions.map((_, g) => (g === 0 ? 'run-long' : `${runHash}-g${g}`)));
    expect(run.handovers.map((h) => h.input.generation)).toEqual(run.handovers.map((_, g) => g + 1));
    expect(run.handovers.every((h) => h.input.runId === 'run-long')).toBe(true);
    // One run id across executions, so slices keep numbering their continuations.
    expect(new Set(run.slices.map((s) => s.event.runId))).toEqual(new Set(['run-long']));
    // A project finished in an early execution is carried along, not run again.
    const perProject = slicesPerProject(run.slices);
    expect(perProject.south).toBeLessThan(perProject.north ?? 0);

    const result = await reassemble(s3, `s3://${bucket}/handover`);
    expect(result.incomplete).toBe(0);
    expectSameAsTruth(result, truth);
    // Only the last execution records the run, with the rows of every execution.
    const rowsBySlices = run.slices.reduce((n, s) => n + (s.result?.rows ?? 0), 0);
    expect(run.recordedRuns).toHaveLength(1);
    const metricData = run.recordedRuns[0]?.MetricData as { Value: number }[];
    expect(metricData.reduce((n, m) => n + m.Value, 0)).toBe(rowsBySlices);
  });

  it('starts from an empty input with the deployed jobs, as ccexport trigger sends it', async () => {
    // After the scheduled run above, the deployed jobs resume from their checkpoints: nothing is new.
    const { handler } = buildHandler(powertoolsReader());

    const run = await runLocally(
      { synthesized, handler, context: pagesBudget(PAGES_PER_SLICE), maxExecutions: 1 },
      'manual-trigger',
      {},
    );

    expect(run.slices.map((s) => [s.event.job.project, s.result?.done, s.result?.rows])).toEqual([
      ['north', true, 0],
      ['south', true, 0],
    ]);
    expect(run.output).toMatchObject({ runId: 'manual-trigger', pending: [] });
  });

  it('re-reads a key rotated in Secrets Manager mid-run after HQ rejects the cached one, and finishes', async () => {
    const south = PROJECTS.filter((p) => p.name === 'south');
    const { handler, metricValues } = buildHandler(powertoolsReader());
    const [job] = jobsUnder('rotation/', south);
    if (!job) throw new Error('no job');
    const readsBefore = secretReads.length;
    const rotate = async () => {
      // The new key is stored (AWSCURRENT moves to it) and HQ stops accepting the old one; the
      // function's cache still holds the old key for minutes.
      await secrets.send(
        new PutSecretValueCommand({
          SecretId: secretArn,
          SecretString: secretDocument(KEY_2, new Date().toISOString()),
        }),
      );
      const old = credentials.find((c) => c.apiKey === KEY_1);
      if (old) old.active = false;
      credentials.push({ username: USER, apiKey: KEY_2 });
    };

    const run = await runLocally(
      {
        synthesized,
        handler,
        context: pagesBudget(PAGES_PER_SLICE),
        maxExecutions: 1,
        beforeSlice: async (n) => {
          if (n === 2) await rotate();
        },
      },
      'run-rotated',
      { slices: [{ job, continuation: null }] },
    );

    expect(run.slices.length).toBeGreaterThanOrEqual(2);
    expect(run.slices.filter((s) => s.error)).toEqual([]);
    const reads = secretReads.slice(readsBefore);
    expect(reads.filter((forced) => forced)).toHaveLength(1);
    expect(metricValues.get('CredentialRefreshes')).toEqual([1]);
    // HQ saw the old key rejected once, then only the new one.
    const result = await reassemble(s3, `s3://${bucket}/rotation`);
    expectSameAsTruth(result, truth, south);
    // Neither key is in any object the export wrote.
    const written = await allObjectText('rotation/');
    expect(written).not.toContain(KEY_1);
    expect(written).not.toContain(KEY_2);
  });
});

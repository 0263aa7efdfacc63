/**
 * `query: { hqExport }` in the AWS config: the export function's handler and slice core against the HQ
 * sandbox and moto's S3. The first slice of a run downloads the export's DET config and pins it in the
 * continuation; an edit in HQ reaches the next run, never the rest of the running one; a config that no
 * longer validates fails the run with its errors as a permanent error.
 */
import { randomUUID } from 'node:crypto';
import { Logger } from '@aws-lambda-powertools/logger';
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ExportJob, ExportSliceEvent, ExportSliceResult } from '../../functions/config/job';
import { makeHandler, type SliceContext } from '../../functions/export/handler';
import { runExportSlice } from '../../functions/export/slice';
import { QueryFileError } from '../../functions/query';
import { type RunningSandbox, type SandboxDetExport, startSandbox } from '../../functions/sandbox';
import { readManifests } from '../../functions/sinks';
import { S3ObjectStore } from '../../functions/sinks/store/s3';
import { parseCsv } from '../sinks/helpers';
import { recordingMetrics } from '../stepfunctions/harness';
import { commcareSecretString, motoS3 } from '../support/aws';
import { REGISTRATION_COLUMNS, registrationExport } from '../support/hq-exports';

const USER = 'exporter@example.org';
// A sandbox key, generated per test file, never real.
const KEY = `hq-export-runs-${randomUUID()}`;
const PROJECT = 'clinic';
const HQ_ID = 'exp-registrations';

const registrations = (columns: SandboxDetExport['columns']) => registrationExport(columns);
const BASE_COLUMNS = [REGISTRATION_COLUMNS.id, REGISTRATION_COLUMNS.householdName];
const WITH_SIZE = [...BASE_COLUMNS, REGISTRATION_COLUMNS.householdSize];

let sandbox: RunningSandbox;
let s3: S3Client;
let bucket: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    projects: [{ name: PROJECT, forms: 6000, cases: 20, detExports: [registrations(BASE_COLUMNS)] }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  s3 = motoS3(inject('motoEndpoint'));
  bucket = `hq-export-runs-${randomUUID().slice(0, 8)}`;
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
});
afterAll(async () => {
  await sandbox?.close();
});

function job(prefix: string, hqExport = 'Registrations'): ExportJob {
  return {
    exportName: 'registrations',
    project: PROJECT,
    credential: { name: 'hq', provider: 'commcare', baseUrl: sandbox.url, username: USER },
    hqExport,
    output: { type: 's3', format: 'csv', prefix },
    mode: 'snapshot',
  };
}

function buildHandler() {
  return makeHandler({
    runner: runExportSlice,
    settings: {
      credentialSecretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:hq',
      bucket,
      safetyMarginMs: 90_000,
      codeRoot: '/var/task',
      secretMaxAgeSeconds: 300,
    },
    logger: new Logger({ logLevel: 'SILENT' }),
    metrics: recordingMetrics().metrics,
    s3Client: s3,
    readSecret: async () =>
      commcareSecretString({
        baseUrl: sandbox.url,
        username: USER,
        key: KEY,
        createdAt: '2026-11-01T00:00:00.000Z',
      }),
  });
}

/** A context whose deadline passes after two pages: every slice yields after two pages. */
function twoPages(): SliceContext {
  let checks = 0;
  return { getRemainingTimeInMillis: () => (++checks < 2 ? 15 * 60_000 : 0) };
}

/**
 * One run as the state machine makes it: slices until done, each given the previous continuation.
 * `between` runs after each unfinished slice (an edit in HQ while the run is under way).
 */
async function run(
  exportJob: ExportJob,
  between: (slice: number) => void = () => {},
): Promise<ExportSliceResult[]> {
  const runId = randomUUID();
  const handler = buildHandler();
  const results: ExportSliceResult[] = [];
  let continuation: unknown = null;
  for (let slice = 1; slice <= 20; slice++) {
    const event: ExportSliceEvent = { job: exportJob, continuation, runId };
    // Through JSON, as Step Functions carries the state.
    const result = await handler(JSON.parse(JSON.stringify(event)), twoPages());
    results.push(result);
    if (result.done) return results;
    continuation = result.continuation;
    between(slice);
  }
  throw new Error('the run did not finish in 20 slices');
}

/** The csv heading of every object the run wrote, by table, from the manifests under `prefix`. */
async function headings(prefix: string): Promise<{ runs: number; byRun: Map<string, Set<string>> }> {
  const store = new S3ObjectStore(s3, `s3://${bucket}/${prefix}`);
  const manifests = await readManifests(store);
  const byRun = new Map<string, Set<string>>();
  for (const manifest of manifests) {
    const run = manifest.runId.slice(0, 36);
    for (const object of manifest.objects) {
      const found = await store.get(object.key);
      const [header = []] = parseCsv(found!.body);
      const seen = byRun.get(run) ?? new Set<string>();
      seen.add(header.join(','));
      byRun.set(run, seen);
    }
  }
  return { runs: byRun.size, byRun };
}

describe('query: { hqExport } in the export function', () => {
  it('picks up a column added in HQ at the next run, without a deploy', async () => {
    sandbox.setDetExports(PROJECT, [registrations(BASE_COLUMNS)]);
    const first = await run(job('between/'));
    // HQ builds the workbook afresh at each download; untouched, the export keeps its fingerprint.
    const untouched = await run(job('untouched/'));
    sandbox.setDetExports(PROJECT, [registrations(WITH_SIZE)]);
    const second = await run(job('between/', HQ_ID));

    expect(first.length).toBeGreaterThan(1);
    const firstFingerprint = first[0]!.hqConfig!.fingerprint;
    const secondFingerprint = second[0]!.hqConfig!.fingerprint;
    expect(first.every((r) => r.hqConfig?.id === HQ_ID && r.hqConfig.fingerprint === firstFingerprint)).toBe(
      true,
    );
    expect(untouched[0]!.hqConfig!.fingerprint).toBe(firstFingerprint);
    expect(secondFingerprint).not.toBe(firstFingerprint);
    // Every slice of the second run records what changed since the first, as its first slice saw it.
    expect(first.every((r) => r.hqConfig?.previousFingerprint === null)).toBe(true);
    for (const r of second) {
      expect(r.hqConfig).toMatchObject({
        previousFingerprint: firstFingerprint,
        columnChanges: [{ table: expect.any(String), appeared: ['household_size'], disappeared: [] }],
      });
    }
    const { byRun } = await headings('between/');
    const perRun = [...byRun.values()].map((set) => [...set]);
    expect(perRun).toHaveLength(2);
    expect(perRun).toContainEqual(['id,household_name']);
    expect(perRun).toContainEqual(['id,household_name,household_size']);
  });

  it('keeps the config it started with when the export is edited in HQ in the middle of a run', async () => {
    sandbox.setDetExports(PROJECT, [registrations(BASE_COLUMNS)]);
    const downloads = () =>
      sandbox.requestLog.filter((e) => e.path.includes('/data/export/custom/schema/det/download/')).length;
    const before = downloads();
    const results = await run(job('middle/'), (slice) => {
      if (slice === 1) sandbox.setDetExports(PROJECT, [registrations(WITH_SIZE)]);
    });

    expect(results.length).toBeGreaterThan(1);
    // One download for the whole run: later slices use the pinned copy.
    expect(downloads() - before).toBe(1);
    expect(new Set(results.map((r) => r.hqConfig?.fingerprint)).size).toBe(1);
    const { byRun } = await headings('middle/');
    expect([...byRun.values()].map((set) => [...set])).toEqual([['id,household_name']]);
  });

  it('fails the run with the validation errors, permanently, when the config stops validating', async () => {
    // Every column removed in HQ: the workbook has no Field rows, which DET cannot run.
    sandbox.setDetExports(PROJECT, [registrations([])]);
    const failure = run(job('invalid/'));

    await expect(failure).rejects.toThrow(QueryFileError);
    await expect(failure).rejects.toThrow(
      /HQ export "Registrations" \(exp-registrations\), config [0-9a-f]{32}/,
    );
    await expect(failure).rejects.toThrow(/no sheet describes a table|no "Field" rows|row 2/);
  });
});

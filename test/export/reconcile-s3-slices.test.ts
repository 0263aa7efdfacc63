/**
 * The sliced reconcile of an S3 output (the scheduled reconcile of an S3 export), its core against the
 * sandbox and moto: each slice stages the ids it lists as sorted, gzip-compressed runs under
 * `_reconcile/` in the export's prefix, and the last one compares them with the files and writes
 * deletion records as `ccexport reconcile` does. A slice that fails after staging is retried from the
 * same cursor and replaces what it staged, so no id is staged twice.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CommCareClient } from '../../functions/commcare';
import type { JsonObject } from '../../functions/common/json';
import {
  type ReconcileCursor,
  ReconcileGuardError,
  type ReconcilePlan,
  runReconcileSlice,
} from '../../functions/export/reconcile';
import type { PageSource } from '../../functions/export/run';
import { compileQueryFile } from '../../functions/query';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { type RunManifest, readManifests } from '../../functions/sinks';
import { StagedFileReconcileTarget } from '../../functions/sinks/file-reconcile-staging';
import { S3ObjectStore } from '../../functions/sinks/store/s3';
import { parseCsv } from '../sinks/helpers';
import { motoS3 } from '../support/aws';
import { householdCases, writeHouseholdsMembersCasesQuery } from '../support/reconcile-query';
import { isRegistration } from '../support/registrations';
import { ccexportInProcess, sandboxExportArgs } from '../support/sandbox-export';

const KEY = 'reconcile-s3-slices-key-4d1a';
const USER = 'exporter@example.org';

let sandbox: RunningSandbox;
let s3: S3Client;
let bucket: string;
let work: string;
/** Registration forms (households), their members (child rows) and household cases. */
let query: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 97,
    projects: [
      { name: 'r1', forms: 2_000, cases: 400, mobileUsers: 8 },
      { name: 'r2', forms: 1_200, cases: 200, mobileUsers: 8 },
    ],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  s3 = motoS3(inject('motoEndpoint'));
  bucket = `s3-slices-${randomUUID().slice(0, 8)}`;
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  work = mkdtempSync(join(tmpdir(), 'ccexport-reconcile-s3-slices-'));
  query = join(work, 'households-members-cases.xlsx');
  await writeHouseholdsMembersCasesQuery(query);
});

afterAll(async () => {
  await sandbox?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

const awsEnv = () => ({
  CCEXPORT_API_KEY: KEY,
  AWS_ENDPOINT_URL_S3: inject('motoEndpoint'),
  AWS_ACCESS_KEY_ID: 'testing',
  AWS_SECRET_ACCESS_KEY: 'testing',
  AWS_REGION: 'us-east-1',
});

async function exportRun(project: string, output: string): Promise<void> {
  await ccexportInProcess(
    sandboxExportArgs({ url: sandbox.url, project, username: USER, query }, 'csv', output),
    awsEnv(),
  );
}

async function plan(project: string, maxShare?: number): Promise<ReconcilePlan> {
  const compiled = await compileQueryFile(query, { baseUrl: sandbox.url, forSql: false });
  return {
    project,
    sources: compiled.sources,
    checkpointKey: compiled.queryFileMd5,
    pageSize: 200,
    mode: 'remove',
    ...(maxShare !== undefined ? { maxShare } : {}),
  };
}

/** Keys and lines of every staged run under the prefix. */
async function staged(prefix: string): Promise<{ keys: string[]; lines: string[] }> {
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/_reconcile/` }));
  const keys = (listed.Contents ?? []).map((o) => o.Key!).sort();
  const lines: string[] = [];
  for (const key of keys) {
    const body = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    const text = gunzipSync(await body.Body!.transformToByteArray()).toString('utf8');
    const runLines = text.split('\n').filter(Boolean);
    expect(runLines, `${key} is a sorted run`).toEqual([...runLines].sort());
    lines.push(...runLines);
  }
  return { keys, lines };
}

/** A page source that fails after `pages` pages (all sources together), as HQ failing mid-slice does. */
function failingAfter(source: PageSource, pages: number): PageSource {
  let n = 0;
  return {
    async *pages(request) {
      for await (const page of source.pages(request)) {
        if (n++ === pages) throw new Error('HQ answered 502 (injected)');
        yield page;
      }
    },
  };
}

/** Ids of the deletion records a reconcile manifest lists for `table`. */
async function recorded(store: S3ObjectStore, manifest: RunManifest, table: string): Promise<string[]> {
  const out: string[] = [];
  for (const object of manifest.deletions ?? []) {
    if (object.table !== table) continue;
    const [head = [], ...rows] = parseCsv((await store.get(object.key))!.body);
    out.push(...rows.map((row) => row[head.indexOf('id')]!));
  }
  return out.sort();
}

describe('the sliced reconcile of an S3 output', () => {
  it('stages sorted runs per slice, replaces what a failed attempt staged, and records the deleted forms, child rows and cases', async () => {
    const prefix = 'r1-csv';
    const url = `s3://${bucket}/${prefix}`;
    await exportRun('r1', url);
    const forms = [...sandbox.dataset.finalState('r1', 'form')].map(([, f]) => f).filter(isRegistration);
    const withMembers = forms.filter((f) => Array.isArray((f.form as JsonObject).members));
    const [deleted, archived] = withMembers;
    const household = householdCases(sandbox.dataset, 'r1')[0]!;
    sandbox.apply(
      'r1',
      { kind: 'archive-form', id: String(deleted!.id), reindex: false },
      { kind: 'delete-form', id: String(deleted!.id) },
      { kind: 'archive-form', id: String(archived!.id), reindex: false },
      { kind: 'delete-case', id: String(household.id) },
    );
    const store = new S3ObjectStore(s3, url);
    const client = new CommCareClient({ baseUrl: sandbox.url, username: USER, apiKey: KEY });
    const reconcilePlan = await plan('r1');
    const target = (resumesFrom: ReconcileCursor | null) =>
      new StagedFileReconcileTarget(store, {
        resumesFrom,
        // One run per page, so attempts that list different numbers of pages stage different runs.
        stageBudgetBytes: 1,
        objectRunId: `reconcile-${randomUUID().slice(0, 8)}`,
      });

    let cursor: ReconcileCursor | null = null;
    const perSlice: number[] = [];
    let retried = false;
    let summary: { gone: number; ids: number } | undefined;
    for (let slice = 1; slice < 100 && !summary; slice++) {
      if (slice === 2) {
        // The first attempt of slice 2 stages two pages, then HQ fails: the state machine retries it
        // with the same cursor, and the retry stops after one page.
        await expect(
          runReconcileSlice(
            { source: failingAfter(client, 2), target: target(cursor), runId: 'run-1' },
            reconcilePlan,
            cursor,
          ),
        ).rejects.toThrow(/injected/);
        expect((await staged(prefix)).keys.length).toBe(1 + 2);
        retried = true;
      }
      const before = cursor?.ids ?? 0;
      const result = await runReconcileSlice(
        { source: client, target: target(cursor), runId: 'run-1', shouldStop: () => true },
        reconcilePlan,
        cursor,
      );
      if (result.done) {
        summary = result.summary;
        break;
      }
      cursor = result.cursor;
      perSlice.push(cursor.ids - before);
      const { lines } = await staged(prefix);
      // Every id listed so far is staged exactly once.
      expect(new Set(lines).size).toBe(lines.length);
      expect(lines.length).toBe(cursor.ids);
    }

    expect(retried).toBe(true);
    expect(perSlice.length).toBeGreaterThanOrEqual(4);
    console.log(`S3 reconcile of r1: ids listed per slice ${perSlice.join(', ')}`);
    expect(summary?.gone).toBeGreaterThan(2);
    const manifest = (await readManifests(store)).find((m) => m.task === 'reconcile')!;
    expect(manifest.complete).toBe(true);
    const households = await recorded(store, manifest, 'households');
    expect(households).toEqual([String(archived!.id), String(deleted!.id)].sort());
    const members = await recorded(store, manifest, 'household_members');
    expect(members.length).toBeGreaterThan(0);
    expect(members.every((id) => id.startsWith(`${deleted!.id}.`) || id.startsWith(`${archived!.id}.`))).toBe(
      true,
    );
    expect(await recorded(store, manifest, 'cases')).toEqual([String(household.id)]);
    // The staging goes with the committed reconcile.
    expect((await staged(prefix)).keys).toEqual([]);
  }, 300_000);

  it('fails at the guard in the last slice and writes nothing but its staging', async () => {
    const prefix = 'r2-csv';
    const url = `s3://${bucket}/${prefix}`;
    await exportRun('r2', url);
    const forms = [...sandbox.dataset.finalState('r2', 'form')].map(([, f]) => f).filter(isRegistration);
    for (const form of forms.slice(0, Math.ceil(forms.length * 0.3)))
      sandbox.apply(
        'r2',
        { kind: 'archive-form', id: String(form.id), reindex: false },
        { kind: 'delete-form', id: String(form.id) },
      );
    const store = new S3ObjectStore(s3, url);
    const objectsBefore = (await store.list('')).filter((k) => !k.startsWith('_reconcile/'));
    const client = new CommCareClient({ baseUrl: sandbox.url, username: USER, apiKey: KEY });
    const reconcilePlan = await plan('r2');

    let cursor: ReconcileCursor | null = null;
    let failure: unknown;
    for (let slice = 1; slice < 100; slice++) {
      try {
        const result = await runReconcileSlice(
          {
            source: client,
            target: new StagedFileReconcileTarget(store, { resumesFrom: cursor }),
            runId: 'run-guard',
            shouldStop: () => true,
          },
          reconcilePlan,
          cursor,
        );
        if (result.done) break;
        cursor = result.cursor;
      } catch (error) {
        failure = error;
        break;
      }
    }

    expect(failure).toBeInstanceOf(ReconcileGuardError);
    expect((failure as ReconcileGuardError).table).toBe('households');
    const objectsAfter = (await store.list('')).filter((k) => !k.startsWith('_reconcile/'));
    // No deletion record, no manifest: the lease object comes and goes.
    expect(objectsAfter.filter((k) => !k.endsWith('.lease.json'))).toEqual(
      objectsBefore.filter((k) => !k.endsWith('.lease.json')),
    );
    // The staging stays for the bucket's lifecycle rule to expire.
    expect((await staged(prefix)).keys.length).toBeGreaterThan(0);
  }, 300_000);
});

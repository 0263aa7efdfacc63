/**
 * The scheduled reconcile of an S3 export, as it ships: the synthesized state machine (local
 * interpreter) started with the input of the export's reconcile schedule invokes the bundled export
 * function; each invocation lists ids until its Lambda context says time is up and stages them as
 * sorted runs under `<prefix>/_reconcile/` in the bucket (moto), and the last one writes the deletion
 * records and the reconcile manifest. The exports themselves are written by the same machine first.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import { CreateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import type { ExportJob, ExportSliceEvent } from '../../functions/config/job';
import type { ReconcileCursor } from '../../functions/export/reconcile';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { type RunManifest, readManifests } from '../../functions/sinks';
import { S3ObjectStore } from '../../functions/sinks/store/s3';
import { parseCsv } from '../sinks/helpers';
import { exportFunctionEnv, motoS3, motoSecretsManager } from '../support/aws';
import { householdCases, writeHouseholdsMembersCasesQuery } from '../support/reconcile-query';
import { isRegistration } from '../support/registrations';
import {
  exportHandlerEntry,
  type LocalRun,
  loadBundledHandler,
  pointJobsAt,
  runLocally,
  type SliceHandler,
  type SynthesizedExport,
  synthesizeExport,
} from './harness';

const USER = 'exporter@example.org';
const KEY = `reconcile-s3-${randomUUID()}`;
/** HQ's largest page of forms, which the reconcile asks for. */
const FORM_PAGE = 1_000;

let work: string;
let synthesized: SynthesizedExport;
let sandbox: RunningSandbox;
let s3: S3Client;
let bucket: string;
let bundled: SliceHandler;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'reconcile-s3-sfn-'));
  const query = join(work, 'households-members-cases.xlsx');
  await writeHouseholdsMembersCasesQuery(query);
  const config = join(work, 'exports.config.yaml');
  writeFileSync(
    config,
    `stackName: SfnReconcileS3
alarmEmail: data-team@example.org
network:
  elasticIps:
    create: 1
database:
  type: none
credentials:
  - name: hq-test
    provider: commcare
    baseUrl: https://hq.example.org
    username: ${USER}
    projects: [north]
exports:
  - name: households
    projects: [north]
    credential: hq-test
    queryFile: ${query}
    output: { type: s3, format: csv, prefix: households/ }
    schedule: { cron: "0 2 * * ? *", timezone: UTC }
`,
  );
  synthesized = synthesizeExport(config, 'households', exportHandlerEntry);
  sandbox = await startSandbox({
    seed: 29,
    projects: [
      { name: 'north', forms: 6_000, cases: 400, mobileUsers: 8 },
      { name: 'south', forms: 2_000, cases: 200, mobileUsers: 8 },
      { name: 'west', forms: 1_500, cases: 100, mobileUsers: 8 },
    ],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  pointJobsAt(synthesized, sandbox.url);
  const endpoint = inject('motoEndpoint');
  s3 = motoS3(endpoint);
  bucket = `reconcile-s3-${randomUUID().slice(0, 8)}`;
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const secret = await motoSecretsManager(endpoint).send(
    new CreateSecretCommand({
      Name: `reconcile-s3-${randomUUID().slice(0, 8)}`,
      SecretString: JSON.stringify({
        provider: 'commcare',
        baseUrl: sandbox.url,
        username: USER,
        key: KEY,
        keyName: 'det-2026-12',
        createdAt: new Date().toISOString(),
        projects: ['north', 'south', 'west'],
      }),
    }),
  );
  bundled = loadBundledHandler(
    synthesized.codeRoot,
    exportFunctionEnv({ credentialSecretArn: secret.ARN!, bucket, codeRoot: synthesized.codeRoot, endpoint }),
  );
}, 400_000);

afterAll(async () => {
  await sandbox?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

/**
 * Each invocation's Lambda context reports time left for as many checks as its entry in `allowances`
 * says (then none: the slice stops as near its 15 minutes), `otherwise` once they are used up.
 */
function contexts(allowances: number[], otherwise: number) {
  return () => {
    const allowed = allowances.shift() ?? otherwise;
    let checks = 0;
    return {
      awsRequestId: randomUUID(),
      getRemainingTimeInMillis: () => (++checks <= allowed ? 15 * 60_000 : 0),
    };
  };
}

const input = (jobs: readonly ExportJob[]) => ({
  slices: jobs.map((job): ExportSliceEvent => ({ job, continuation: null })),
});

/** The jobs the reconcile schedule starts, as deployed. */
function reconcileJobs(): ExportJob[] {
  return (synthesized.reconcileScheduleInput as { slices: ExportSliceEvent[] }).slices.map((s) => s.job);
}

/** The deployed job for another project and output. */
function jobFor(project: string, output: ExportJob['output'], task?: 'reconcile'): ExportJob {
  const [deployed] = reconcileJobs();
  const { task: _task, ...job } = deployed!;
  return { ...job, project, output, ...(task ? { task } : {}) };
}

/** Runs the machine; `lose`: invocations whose response is lost after the function did its work. */
async function run(
  name: string,
  runInput: unknown,
  options: {
    allowances?: number[];
    otherwise: number;
    lose?: number[];
    beforeSlice?: (n: number, e: ExportSliceEvent) => Promise<void>;
  },
): Promise<LocalRun> {
  let invocations = 0;
  const handler: SliceHandler = async (event, context) => {
    invocations += 1;
    const result = await bundled(event, context);
    if (options.lose?.includes(invocations))
      throw new Error('the invocation ended before its response reached Step Functions');
    return result;
  };
  return await runLocally(
    {
      synthesized,
      handler,
      context: contexts([...(options.allowances ?? [])], options.otherwise),
      maxExecutions: 3,
      ...(options.beforeSlice ? { beforeSlice: options.beforeSlice } : {}),
    },
    name,
    runInput,
  );
}

/** Every line of every staged run under `prefix`; each run must be sorted. */
async function stagedLines(prefix: string): Promise<string[]> {
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}_reconcile/` }));
  const lines: string[] = [];
  for (const object of listed.Contents ?? []) {
    const body = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: object.Key! }));
    const run = gunzipSync(await body.Body!.transformToByteArray())
      .toString('utf8')
      .split('\n')
      .filter(Boolean);
    expect(run, `${object.Key} is a sorted run`).toEqual([...run].sort());
    lines.push(...run);
  }
  return lines;
}

/** Keys under `prefix`, lease objects left out (they come and go with each run). */
async function objectKeys(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    keys.push(...(page.Contents ?? []).map((o) => o.Key!));
    token = page.NextContinuationToken;
  } while (token);
  return keys.filter((k) => !k.endsWith('.lease.json')).sort();
}

async function reconcileManifests(
  prefix: string,
): Promise<{ store: S3ObjectStore; manifests: RunManifest[] }> {
  const store = new S3ObjectStore(s3, `s3://${bucket}/${prefix.replace(/\/$/, '')}`);
  return { store, manifests: (await readManifests(store)).filter((m) => m.task === 'reconcile') };
}

/** Ids the reconcile manifests under `prefix` record as deleted in `table`. */
async function recorded(prefix: string, table: string): Promise<string[]> {
  const { store, manifests } = await reconcileManifests(prefix);
  const out: string[] = [];
  for (const manifest of manifests)
    for (const object of manifest.deletions ?? []) {
      if (object.table !== table) continue;
      const [head = [], ...rows] = parseCsv((await store.get(object.key))!.body);
      out.push(...rows.map((row) => row[head.indexOf('id')]!));
    }
  return out.sort();
}

function registrations(project: string): JsonObject[] {
  return [...sandbox.dataset.finalState(project, 'form')].map(([, f]) => f).filter(isRegistration);
}

/** Deletes a registration form with members, archives another in place, deletes a household case. */
function deleteSome(project: string): { deleted: string; archived: string; gone: string[]; caseId: string } {
  const [deleted, archived] = registrations(project).filter((f) =>
    Array.isArray((f.form as JsonObject).members),
  );
  const caseId = String(householdCases(sandbox.dataset, project)[0]!.id);
  sandbox.apply(
    project,
    { kind: 'archive-form', id: String(deleted!.id), reindex: false },
    { kind: 'delete-form', id: String(deleted!.id) },
    { kind: 'archive-form', id: String(archived!.id), reindex: false },
    { kind: 'delete-case', id: caseId },
  );
  return {
    deleted: String(deleted!.id),
    archived: String(archived!.id),
    gone: [String(deleted!.id), String(archived!.id)].sort(),
    caseId,
  };
}

describe('the scheduled reconcile of an S3 export, bundled function in the state machine', () => {
  it('reconciles a csv export over several slices; a retried slice stages nothing twice', async () => {
    const exported = await run('export-north', synthesized.scheduleInput, { otherwise: 1_000_000 });
    expect(exported.slices.at(-1)?.result).toMatchObject({ done: true });
    const formPages = Math.ceil(registrations('north').length / FORM_PAGE);
    expect(formPages).toBeGreaterThanOrEqual(3);
    const { deleted, archived, gone, caseId } = deleteSome('north');
    const cursors: ReconcileCursor[] = [];
    const staging: { listed: number; staged: number; distinct: number }[] = [];

    // Slice 1 lists one page of forms. The first attempt of slice 2 lists the other form pages and
    // the first page of cases, stages them, and its response is lost: Step Functions retries it with
    // the same event, and the retry lists one page.
    const reconciled = await run('reconcile-north', synthesized.reconcileScheduleInput, {
      allowances: [0, formPages - 1],
      otherwise: 0,
      lose: [2],
      // Recorded here and checked after the run: an assertion failing inside a slice task would only
      // be retried by the state machine.
      beforeSlice: async (_n, event) => {
        const cursor = (event.continuation as { reconcile?: ReconcileCursor } | null)?.reconcile;
        // A retry starts from the cursor of the attempt it repeats, which may have staged more.
        if (!cursor || JSON.stringify(cursor) === JSON.stringify(cursors.at(-1))) return;
        cursors.push(cursor);
        const lines = await stagedLines('households/');
        staging.push({ listed: cursor.ids, staged: lines.length, distinct: new Set(lines).size });
      },
    });

    expect(reconciled.slices.map((s) => s.error?.message ?? 'ok')).toEqual([
      'ok',
      expect.stringMatching(/response/),
      ...reconciled.slices.slice(2).map(() => 'ok'),
    ]);
    expect(reconciled.slices[2]?.event).toEqual(reconciled.slices[1]?.event);
    // At the start of every slice, what the listing has passed is staged, each id once.
    expect(staging.length).toBeGreaterThanOrEqual(4);
    expect(staging).toEqual(staging.map((s) => ({ listed: s.listed, staged: s.listed, distinct: s.listed })));
    expect(reconciled.slices.length).toBeGreaterThanOrEqual(5);
    console.log(
      `S3 reconcile of north: ${reconciled.slices.length} invocations, ids listed so far at each slice: ${cursors.map((c) => c.ids).join(', ')}`,
    );
    expect(await recorded('households/', 'households')).toEqual(gone);
    const members = await recorded('households/', 'household_members');
    expect(members.length).toBeGreaterThan(0);
    expect(members.every((id) => id.startsWith(`${deleted}.`) || id.startsWith(`${archived}.`))).toBe(true);
    expect(await recorded('households/', 'cases')).toEqual([caseId]);
    // The rows recorded are the run's rows (and the function's RecordsRemoved).
    expect(reconciled.slices.at(-1)?.result).toMatchObject({
      done: true,
      rows: gone.length + members.length + 1,
    });
    expect(await stagedLines('households/')).toEqual([]);
  }, 600_000);

  it('reconciles a Parquet export (deletions marked) over several slices', async () => {
    const output = { type: 's3' as const, format: 'parquet' as const, prefix: 'parquet/' };
    await run('export-south', input([jobFor('south', output)]), { otherwise: 1_000_000 });
    const { deleted, archived, gone, caseId } = deleteSome('south');

    const reconciled = await run('reconcile-south', input([jobFor('south', output, 'reconcile')]), {
      otherwise: 0,
    });

    expect(reconciled.slices.every((s) => s.error === undefined)).toBe(true);
    expect(reconciled.slices.length).toBeGreaterThanOrEqual(3);
    expect((await reconcileManifests('parquet/')).manifests).toHaveLength(1);
    expect(await recorded('parquet/', 'households')).toEqual(gone);
    const members = await recorded('parquet/', 'household_members');
    expect(members.length).toBeGreaterThan(0);
    expect(members.every((id) => id.startsWith(`${deleted}.`) || id.startsWith(`${archived}.`))).toBe(true);
    expect(await recorded('parquet/', 'cases')).toEqual([caseId]);
    expect(await stagedLines('parquet/')).toEqual([]);
  }, 600_000);

  it('ends at once, with nothing recorded, for a project the export has not written yet', async () => {
    const output = { type: 's3' as const, format: 'csv' as const, prefix: 'households/' };

    const reconciled = await run('reconcile-unexported', input([jobFor('west', output, 'reconcile')]), {
      otherwise: 0,
    });

    expect(reconciled.slices.map((s) => s.result)).toEqual([
      expect.objectContaining({ done: true, rows: 0, pages: 0 }),
    ]);
  }, 600_000);

  it('fails at the 20% guard in its last slice and records nothing', async () => {
    const output = { type: 's3' as const, format: 'csv' as const, prefix: 'guarded/' };
    await run('export-west', input([jobFor('west', output)]), { otherwise: 1_000_000 });
    const objectsBefore = await objectKeys('guarded/');
    const forms = registrations('west');
    for (const form of forms.slice(0, Math.ceil(forms.length * 0.3)))
      sandbox.apply(
        'west',
        { kind: 'archive-form', id: String(form.id), reindex: false },
        { kind: 'delete-form', id: String(form.id) },
      );

    const failed = await run('reconcile-west', input([jobFor('west', output, 'reconcile')]), {
      otherwise: 0,
    }).then(
      () => null,
      (error: Error) => (error.cause ?? error) as Error,
    );

    expect(failed?.name).toBe('ReconcileGuardError');
    expect(failed?.message).toMatch(/nothing changed: table "households"/);
    expect((await reconcileManifests('guarded/')).manifests).toEqual([]);
    // No deletion record, no manifest, nothing else but the staging (the export's lease comes and goes).
    expect((await objectKeys('guarded/')).filter((k) => !k.startsWith('guarded/_reconcile/'))).toEqual(
      objectsBefore,
    );
  }, 600_000);
});

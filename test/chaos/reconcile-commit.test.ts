/**
 * `ccexport reconcile` on a folder and on S3 (moto), SIGKILLed right after each of the writes that
 * finalise it: after every kill the output reads (through the reader `ccexport latest` uses) either as
 * before the reconcile or as after a whole one, never with some tables reconciled and others not; and
 * the next reconcile completes it exactly (the same deletion records as one unkilled reconcile, none
 * twice) and leaves no deletions object unlisted. The query has a form table, its child table from a
 * repeat group and a case table, so a reconcile writes three deletions objects.
 *
 * Kill points are counted writes (each deletions object, the manifest, the lease's release), so they
 * are the same on every machine: on S3 a proxy in front of moto counts PUT/POST/DELETE requests and
 * kills the process once moto has applied the Nth (the process never gets the answer); on a folder a
 * preloaded module (`test/support/kill-after-writes.mjs`) counts renames, links and removals in the
 * output folder and SIGKILLs the process after the Nth. */
import { type ChildProcess, spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  CopyObjectCommand,
  CreateBucketCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { objectStoreFor, readManifests, writeLatestTables } from '../../functions/sinks';
import { LocalObjectStore } from '../../functions/sinks/store/local';
import { motoS3 } from '../support/aws';
import { shellEnv } from '../support/cli-process';
import { HQ_LAYOUT_HEADINGS, workbook } from '../support/query-workbook';
import { registrationsWithMembers } from '../support/registrations';
import { type S3FaultProxy, startS3FaultProxy } from '../support/s3-fault-proxy';
import { sandboxExportArgs } from '../support/sandbox-export';
import { CLI, REPO_ROOT } from './support';

const KEY = 'reconcile-commit-key-7b20';
const USER = 'exporter@example.org';
const PROJECT = 'rk';
const BUCKET = 'reconcile-commit';
const TABLES = ['households', 'household_members', 'cases'];
const PRELOAD = pathToFileURL(join(REPO_ROOT, 'test', 'support', 'kill-after-writes.mjs')).href;
const REGISTRATION = 'http://openrosa.org/formdesigner/5C1B5E2A-7F3D-4E11-9C2B-REGISTRATION';

let sandbox: RunningSandbox;
let work: string;
let query: string;
let s3: S3Client;
let proxy: S3FaultProxy;

/** The S3 write the proxy kills the running reconcile after, and the writes counted so far. */
const s3Kill: { after: number; count: number; child: ChildProcess | null; log: string[] } = {
  after: 0,
  count: 0,
  child: null,
  log: [],
};

/** A query in HQ's layout: households (forms), their members (a repeat group), household cases. */
async function writeQuery(path: string): Promise<void> {
  const headings = HQ_LAYOUT_HEADINGS;
  const sheet = (source: string, filter: [string, string], table: string, columns: [string, string][]) => [
    headings,
    ...columns.map(([from, field], i) =>
      i === 0
        ? [from, field, null, source, filter[0], filter[1], table]
        : [from, field, null, null, null, null, null],
    ),
  ];
  const households = sheet('form', ['xmlns.exact', REGISTRATION], 'households', [
    ['id', 'id'],
    ['form.household_name', 'household_name'],
  ]);
  const members = sheet('form.form.members[*]', ['xmlns.exact', REGISTRATION], 'household_members', [
    ['id', 'id'],
    ['member_name', 'member_name'],
  ]);
  const cases = sheet('case', ['type', 'household'], 'cases', [
    ['id', 'id'],
    ['properties.case_name', 'case_name'],
  ]);
  writeFileSync(
    path,
    await workbook([
      { name: 'Households', rows: households },
      { name: 'Members', rows: members },
      { name: 'Cases', rows: cases },
    ]),
  );
}

const awsEnv = () => ({
  AWS_ENDPOINT_URL_S3: proxy.endpoint,
  AWS_ACCESS_KEY_ID: 'testing',
  AWS_SECRET_ACCESS_KEY: 'testing',
  AWS_REGION: 'us-east-1',
});

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly err: string;
}

/** `ccexport <command> ...` as typed at a shell, in a process of its own. */
function ccexport(command: 'run' | 'reconcile', output: string, env: Record<string, string> = {}) {
  const child = spawn(
    process.execPath,
    [
      CLI,
      command,
      ...sandboxExportArgs({ url: sandbox.url, project: PROJECT, username: USER, query }, 'csv', output),
    ],
    {
      cwd: REPO_ROOT,
      env: {
        ...shellEnv(),
        CCEXPORT_API_KEY: KEY,
        ...(output.startsWith('s3://') ? awsEnv() : {}),
        ...env,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let err = '';
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString('utf8');
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const exit = new Promise<Exit>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, err });
    }),
  );
  return { child, exit };
}

/**
 * A reconcile of a folder output, SIGKILLed after its `killAfter`th write there (0: not killed), with
 * `scratch` (when given) as its temporary folder.
 */
async function reconcileFolder(
  output: string,
  killAfter: number,
  log: string,
  scratch?: string,
): Promise<Exit> {
  return ccexport('reconcile', output, {
    NODE_OPTIONS: `--import=${PRELOAD}`,
    KILL_WRITES_UNDER: output,
    KILL_AFTER_WRITES: String(killAfter),
    KILL_WRITES_LOG: log,
    ...(scratch ? { TMPDIR: scratch } : {}),
  }).exit;
}

/** What ccexport left in a temporary folder. */
function leftIn(scratch: string): string[] {
  return readdirSync(scratch).filter((name) => name.startsWith('ccexport-'));
}

/** A reconcile of an S3 output, SIGKILLed once moto applied its `killAfter`th write (0: not killed). */
async function reconcileS3(output: string, killAfter: number): Promise<{ exit: Exit; writes: string[] }> {
  const run = ccexport('reconcile', output);
  Object.assign(s3Kill, { after: killAfter, count: 0, child: run.child, log: [] });
  const exit = await run.exit;
  const writes = s3Kill.log;
  Object.assign(s3Kill, { after: 0, count: 0, child: null, log: [] });
  return { exit, writes };
}

async function store(output: string) {
  return objectStoreFor(output, output.startsWith('s3://') ? { s3Client: s3 } : {});
}

/** Each table as the reader sees it (`ccexport latest`'s rule): its live rows, sorted. */
async function readState(output: string): Promise<Record<string, string[]>> {
  const to = mkdtempSync(join(work, 'latest-'));
  await writeLatestTables({ source: await store(output), target: new LocalObjectStore(to) });
  const state: Record<string, string[]> = {};
  for (const table of TABLES)
    state[table] = readFileSync(join(to, 'latest', `${table}.csv`), 'utf8')
      .split('\r\n')
      .filter(Boolean)
      .sort();
  rmSync(to, { recursive: true, force: true });
  return state;
}

/** Rows of deletion records the reconcile manifests list, per table, and deletions objects no manifest lists. */
async function recorded(output: string): Promise<{ rows: Record<string, number>; unlisted: string[] }> {
  const s = await store(output);
  const manifests = await readManifests(s);
  const listed = new Set(manifests.flatMap((m) => (m.deletions ?? []).map((d) => d.key)));
  const rows: Record<string, number> = {};
  const unlisted: string[] = [];
  for (const table of TABLES) {
    rows[table] = manifests
      .filter((m) => m.task === 'reconcile')
      .flatMap((m) => m.deletions ?? [])
      .filter((d) => d.table === table)
      .reduce((n, d) => n + d.rows, 0);
    unlisted.push(...(await s.list(`${table}/deletions/`)).filter((k) => !listed.has(k)));
  }
  return { rows, unlisted };
}

/** What a killed reconcile left, compared with the state before it and after an unkilled one. */
function outcomeOf(
  state: Record<string, string[]>,
  before: Record<string, string[]>,
  complete: Record<string, string[]>,
): 'unchanged' | 'complete' | 'partial' {
  const same = JSON.stringify(state);
  if (same === JSON.stringify(before)) return 'unchanged';
  return same === JSON.stringify(complete) ? 'complete' : 'partial';
}

/**
 * The outcomes (`<write> -> <outcome>`, in write order) flip from unchanged to complete at the first
 * write of the manifest (`manifestWrite` in its name) and never go back.
 */
function expectCommitAt(outcomes: readonly string[], manifestWrite: string): void {
  const commit = outcomes.findIndex((o) => o.includes(manifestWrite) && o.endsWith('complete'));
  expect(
    outcomes.slice(0, commit).every((o) => o.endsWith('unchanged')),
    outcomes.join('\n'),
  ).toBe(true);
  expect(
    outcomes.slice(commit).every((o) => o.endsWith('complete')),
    outcomes.join('\n'),
  ).toBe(true);
}

async function copyPrefix(from: string, to: string): Promise<void> {
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `${from}/` }));
  for (const object of listed.Contents ?? [])
    await s3.send(
      new CopyObjectCommand({
        Bucket: BUCKET,
        CopySource: `${BUCKET}/${object.Key!}`,
        Key: `${to}/${object.Key!.slice(from.length + 1)}`,
      }),
    );
}

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 71,
    projects: [{ name: PROJECT, forms: 160, cases: 40, mobileUsers: 6 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  work = mkdtempSync(join(tmpdir(), 'ccexport-reconcile-commit-'));
  query = join(work, 'query.xlsx');
  await writeQuery(query);
  s3 = motoS3(inject('motoEndpoint'));
  await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
  proxy = await startS3FaultProxy(inject('motoEndpoint'), () => 'pass', {
    answered: async (req) => {
      if (!['PUT', 'POST', 'DELETE'].includes(req.method) || !s3Kill.child) return 'answer';
      s3Kill.count += 1;
      s3Kill.log.push(`${s3Kill.count} ${req.method} ${req.key}`);
      if (s3Kill.count !== s3Kill.after) return 'answer';
      const child = s3Kill.child;
      const gone = new Promise((resolve) => child.once('close', resolve));
      child.kill('SIGKILL');
      await gone;
      return 'drop';
    },
  });
  // The exports before HQ loses records: a folder and an S3 prefix.
  const folder = await ccexport('run', join(work, 'base')).exit;
  expect(folder.code, folder.err).toBe(0);
  const prefix = await ccexport('run', `s3://${BUCKET}/base`).exit;
  expect(prefix.code, prefix.err).toBe(0);
  // Then HQ loses a registration form with members (and so its child rows) and a household case.
  const [form] = registrationsWithMembers(sandbox.dataset, PROJECT);
  const id = String((form as JsonObject).id);
  sandbox.apply(PROJECT, { kind: 'archive-form', id, reindex: false }, { kind: 'delete-form', id });
  const household = [...sandbox.dataset.finalState(PROJECT, 'case')].find(
    ([, c]) =>
      (c.properties as JsonObject | undefined)?.case_type === 'household' || c.case_type === 'household',
  );
  sandbox.apply(PROJECT, { kind: 'delete-case', id: household![0] });
}, 180_000);

afterAll(async () => {
  await proxy?.close();
  await sandbox?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('a reconcile SIGKILLed while it finalises leaves the output unchanged or complete', () => {
  it('folder output: at every write', async () => {
    const base = join(work, 'base');
    const before = await readState(base);
    // One reconcile not killed: what complete is, and how many writes it makes.
    const reference = join(work, 'reference');
    cpSync(base, reference, { recursive: true });
    const referenceLog = join(work, 'reference.log');
    const whole = await reconcileFolder(reference, 0, referenceLog);
    expect(whole.code, whole.err).toBe(0);
    const complete = await readState(reference);
    const expected = await recorded(reference);
    for (const table of TABLES) expect(complete[table]!.length, table).toBeLessThan(before[table]!.length);
    const writes = readFileSync(referenceLog, 'utf8').trim().split('\n');
    // The lease, the three deletions objects, the manifest, the lease's release.
    expect(writes.length).toBeGreaterThanOrEqual(6);

    // Finalising starts with the first deletions object: kill after it and after every later write.
    const first = writes.findIndex((w) => w.includes('/deletions/')) + 1;
    expect(first).toBeGreaterThan(1);
    const outcomes: string[] = [];
    let leftBehind = 0;
    for (let n = first; n <= writes.length; n++) {
      const output = join(work, `folder-kill-${n}`);
      cpSync(base, output, { recursive: true });
      const scratch = join(work, `folder-tmp-${n}`);
      mkdirSync(scratch);
      const killed = await reconcileFolder(output, n, join(work, `folder-kill-${n}.log`), scratch);
      expect(killed.signal, `kill after write ${n}: ${writes[n - 1]}`).toBe('SIGKILL');
      // Killed before its lease's release, its sort runs are still there, in a folder named after its run.
      const left = leftIn(scratch);
      for (const name of left) expect(name).toMatch(/^ccexport-reconcile-\d{8}T\d{6}Z-[0-9a-f]+$/);
      if (left.length > 0) leftBehind += 1;
      const state = await readState(output);
      const outcome = outcomeOf(state, before, complete);
      outcomes.push(`${writes[n - 1]} -> ${outcome}`);
      expect(outcome, `after write ${n} (${writes[n - 1]}) the output reads ${outcome}`).not.toBe('partial');

      const next = await reconcileFolder(output, 0, join(work, `folder-next-${n}.log`), scratch);
      expect(next.code, next.err).toBe(0);
      // The reconcile that took over the killed one's lease removed what it left, and its own.
      expect(leftIn(scratch)).toEqual([]);
      expect(await readState(output)).toEqual(complete);
      expect(await recorded(output)).toEqual(expected);
    }
    // Every kill but the one after the lease's release (the last write) left its sort runs behind.
    expect(leftBehind).toBe(writes.length - first);
    // Both sides of the commit point were reached: the manifest write is the one that flips the output.
    expect(outcomes.some((o) => o.endsWith('unchanged'))).toBe(true);
    expect(outcomes.some((o) => o.endsWith('complete'))).toBe(true);
    expectCommitAt(outcomes, 'manifests/');
  });

  it('S3 output (moto): at every write', async () => {
    const base = `s3://${BUCKET}/base`;
    const before = await readState(base);
    await copyPrefix('base', 'reference');
    const whole = await reconcileS3(`s3://${BUCKET}/reference`, 0);
    expect(whole.exit.code, whole.exit.err).toBe(0);
    const complete = await readState(`s3://${BUCKET}/reference`);
    const expected = await recorded(`s3://${BUCKET}/reference`);
    for (const table of TABLES) expect(complete[table]!.length, table).toBeLessThan(before[table]!.length);
    const writes = whole.writes;
    expect(writes.length).toBeGreaterThanOrEqual(6);

    // Finalising starts with the first deletions object: kill after it and after every later write.
    const first = writes.findIndex((w) => w.includes('/deletions/')) + 1;
    expect(first).toBeGreaterThan(1);
    const outcomes: string[] = [];
    for (let n = first; n <= writes.length; n++) {
      await copyPrefix('base', `kill-${n}`);
      const output = `s3://${BUCKET}/kill-${n}`;
      const killed = await reconcileS3(output, n);
      expect(killed.exit.signal, `kill after write ${n}: ${writes[n - 1]}`).toBe('SIGKILL');
      const state = await readState(output);
      const outcome = outcomeOf(state, before, complete);
      outcomes.push(`${writes[n - 1]} -> ${outcome}`);
      expect(outcome, `after write ${n} (${writes[n - 1]}) the output reads ${outcome}`).not.toBe('partial');

      const next = await reconcileS3(output, 0);
      expect(next.exit.code, next.exit.err).toBe(0);
      expect(await readState(output)).toEqual(complete);
      expect(await recorded(output)).toEqual(expected);
    }
    expect(outcomes.some((o) => o.endsWith('unchanged'))).toBe(true);
    expect(outcomes.some((o) => o.endsWith('complete'))).toBe(true);
    expectCommitAt(outcomes, '/manifests/');
  });
});

/**
 * `ccexport reconcile` for folder and S3 outputs, typed as a user types it: the records HQ no longer
 * lists are written as deletion records (`<table>/deletions/<run-id>.csv`, listed in a reconcile
 * manifest), which `ccexport latest` and the `<table>_latest` SQL (Athena's view, run here on DuckDB
 * over the same Parquet files) apply.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import type { RunManifest } from '../../functions/sinks';
import { committedDeletionKeys, latestStateSql } from '../../functions/sinks/formats/parquet/latest-sql';
import { runCli } from '../chaos/support';
import { motoS3 } from '../support/aws';
import {
  duckdb,
  duckdbAvailable,
  duckdbDeletionRecords,
  duckdbManifests,
  sqlString,
} from '../support/duckdb';
import { liveRegistrationIds, registrationsWithMembers } from '../support/registrations';
import { sandboxExportArgs } from '../support/sandbox-export';

const KEY = 'reconcile-files-key-c3e8';
const USER = 'exporter@example.org';
const hasDuckdb = duckdbAvailable();

let sandbox: RunningSandbox;
let work: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 53,
    projects: [
      { name: 'f1', forms: 500, cases: 40, mobileUsers: 8 },
      { name: 'f2', forms: 300, cases: 40, mobileUsers: 8 },
      { name: 'f3', forms: 300, cases: 40, mobileUsers: 8 },
    ],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  work = mkdtempSync(join(tmpdir(), 'ccexport-reconcile-files-'));
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

const AWS_ENV = () => ({
  AWS_ENDPOINT_URL_S3: inject('motoEndpoint'),
  AWS_ACCESS_KEY_ID: 'testing',
  AWS_SECRET_ACCESS_KEY: 'testing',
  AWS_REGION: 'us-east-1',
});

const source = (project: string) => ({ url: sandbox.url, project, username: USER });

/** `ccexport <command> ...` in a process of its own, as typed at a shell. */
async function ccexport(
  command: string,
  project: string,
  format: string,
  output: string,
  ...extra: string[]
) {
  const result = await runCli({
    // --progress json is what a run whose stderr is not a terminal reports anyway.
    args: [command, ...sandboxExportArgs({ ...source(project), progress: 'json' }, format, output, ...extra)],
    env: { CCEXPORT_API_KEY: KEY, ...(output.startsWith('s3://') ? AWS_ENV() : {}) },
    timeoutMs: 180_000,
  });
  return { code: result.code, out: result.stdout, err: result.stderr };
}

const liveRegistrations = (project: string): string[] => liveRegistrationIds(sandbox.dataset, project);

function registrations(project: string, n: number): JsonObject[] {
  return registrationsWithMembers(sandbox.dataset, project).slice(0, n);
}

function csvIds(path: string): string[] {
  const [head, ...lines] = readFileSync(path, 'utf8').split(/\r?\n/).filter(Boolean);
  const at = head!.split(',').indexOf('id');
  return lines.map((l) => l.split(',')[at]!.replace(/^"|"$/g, ''));
}

function manifests(folder: string): RunManifest[] {
  return readdirSync(join(folder, 'manifests')).map(
    (f) => JSON.parse(readFileSync(join(folder, 'manifests', f), 'utf8')) as RunManifest,
  );
}

/** Copies every object under the prefix into a folder (DuckDB reads the copy). */
async function download(s3: S3Client, bucket: string, prefix: string, to: string): Promise<void> {
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/` }));
  for (const object of listed.Contents ?? []) {
    const body = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: object.Key! }));
    const path = join(to, object.Key!.slice(prefix.length + 1));
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, await body.Body!.transformToByteArray());
  }
}

describe('ccexport reconcile, folder output', () => {
  it('records deleted, archived-in-place and a deleted worker’s forms; latest leaves them out; an unarchived form comes back', async () => {
    const output = join(work, 'csv');
    expect((await ccexport('run', 'f1', 'csv', output)).code).toBe(0);
    const [deleted, archived] = registrations('f1', 2);
    sandbox.apply(
      'f1',
      { kind: 'archive-form', id: String(deleted!.id), reindex: false },
      { kind: 'delete-form', id: String(deleted!.id) },
      { kind: 'archive-form', id: String(archived!.id), reindex: false },
    );
    const worker = String((registrations('f1', 5)[4]!.metadata as JsonObject).userID);
    sandbox.apply('f1', { kind: 'delete-worker', userId: worker });
    expect((await ccexport('run', 'f1', 'csv', output)).code).toBe(0);

    const result = await ccexport('reconcile', 'f1', 'csv', output, '--keep-latest');

    expect(result.code, result.err).toBe(0);
    expect(result.out).toMatch(/Reconcile finished: .* rows recorded as deleted/);
    // --keep-latest: latest/ is rewritten with the deletions applied.
    expect(csvIds(join(output, 'latest', 'households.csv')).sort()).toEqual(liveRegistrations('f1'));
    const reconcile = manifests(output).find((m) => m.task === 'reconcile')!;
    expect(reconcile.complete).toBe(true);
    expect(reconcile.deletions!.map((d) => d.table).sort()).toEqual(['household_members', 'households']);
    const recorded = csvIds(join(output, reconcile.deletions!.find((d) => d.table === 'households')!.key));
    expect(recorded).toContain(String(deleted!.id));
    expect(recorded).toContain(String(archived!.id));
    const members = csvIds(
      join(output, reconcile.deletions!.find((d) => d.table === 'household_members')!.key),
    );
    expect(members.some((id) => id.startsWith(`${deleted!.id}.`))).toBe(true);
    expect((await runCli({ args: ['latest', '--output', output], env: {} })).code).toBe(0);
    expect(csvIds(join(output, 'latest', 'households.csv')).sort()).toEqual(liveRegistrations('f1'));
    expect(
      csvIds(join(output, 'latest', 'household_members.csv')).every((id) =>
        liveRegistrations('f1').includes(id.split('.')[0]!),
      ),
    ).toBe(true);

    // Nothing new is gone: a second reconcile records nothing (rows already hidden are not recorded again).
    const again = await ccexport('reconcile', 'f1', 'csv', output);
    expect(again.code, again.err).toBe(0);
    expect(again.out).toMatch(/ 0 rows recorded as deleted/);

    // Unarchived (and re-indexed, as HQ does): the next run writes it again and latest shows it.
    sandbox.apply('f1', { kind: 'unarchive-form', id: String(archived!.id) });
    expect((await ccexport('run', 'f1', 'csv', output)).code).toBe(0);
    expect((await runCli({ args: ['latest', '--output', output], env: {} })).code).toBe(0);
    expect(csvIds(join(output, 'latest', 'households.csv'))).toContain(String(archived!.id));
  }, 600_000);

  it('fails and writes nothing when a table would lose more than 20% (a wrong key or filter)', async () => {
    const output = join(work, 'json');
    expect((await ccexport('run', 'f2', 'json', output)).code).toBe(0);
    for (const form of registrations('f2', 1000).slice(0, 40))
      sandbox.apply(
        'f2',
        { kind: 'archive-form', id: String(form.id), reindex: false },
        { kind: 'delete-form', id: String(form.id) },
      );
    const before = readdirSync(output, { recursive: true }).sort();

    const result = await ccexport('reconcile', 'f2', 'json', output);

    expect(result.code).not.toBe(0);
    expect(result.err).toMatch(/Reconcile stopped, nothing changed: table "households" would lose/);
    expect(readdirSync(output, { recursive: true }).sort()).toEqual(before);
  }, 600_000);
});

describe.skipIf(!hasDuckdb)('ccexport reconcile, S3 Parquet output', () => {
  it('writes deletion records the <table>_latest SQL applies over the same files', async () => {
    const s3 = motoS3(inject('motoEndpoint'));
    await s3.send(new CreateBucketCommand({ Bucket: 'reconcile-files' }));
    const output = 's3://reconcile-files/warehouse';
    expect((await ccexport('run', 'f3', 'parquet', output)).code).toBe(0);
    const [deleted] = registrations('f3', 1);
    sandbox.apply(
      'f3',
      { kind: 'archive-form', id: String(deleted!.id), reindex: false },
      { kind: 'delete-form', id: String(deleted!.id) },
    );

    const result = await ccexport('reconcile', 'f3', 'parquet', output);

    expect(result.code, result.err).toBe(0);
    const copy = join(work, 's3-copy');
    await download(s3, 'reconcile-files', 'warehouse', copy);
    const spec = manifests(copy).find((m) => m.tables.length > 0)!;
    for (const table of ['households', 'household_members']) {
      const found = spec.tables.find((t) => t.name === table)!;
      const columns = {
        headings: found.headings,
        dataTypes: found.dataTypes ?? found.headings.map(() => null),
      };
      const sql = latestStateSql(columns, {
        source: `read_parquet(${sqlString(join(copy, table, '*', '*.parquet'))}, union_by_name = true)`,
        deletions: {
          records: duckdbDeletionRecords(join(copy, table)),
          committed: committedDeletionKeys(duckdbManifests(copy)),
        },
      });
      const ids = duckdb(`SELECT id FROM (${sql}) ORDER BY id`).rows.map((r) => String(r[0]));
      if (table === 'households') expect(ids).toEqual(liveRegistrations('f3'));
      else {
        expect(ids.some((id) => id.startsWith(`${deleted!.id}.`))).toBe(false);
        expect(ids.length).toBeGreaterThan(0);
      }
    }
  }, 600_000);
});

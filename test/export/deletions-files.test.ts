/**
 * Folder and S3 outputs: a run that sees an archived form writes `<table>/deletions/<run-id>.csv`
 * (id, deleted_at, reason) for every table, lists it in its manifest, and the reassembly drops the rows.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { objectStoreFor, readManifests } from '../../functions/sinks';
import { parseCsv } from '../chaos/support';
import { motoS3 } from '../support/aws';
import { ccexportInProcess, sandboxExportArgs } from '../support/sandbox-export';

const KEY = 'deletions-files-key-4d1e';
const USER = 'exporter@example.org';
const PROJECT = 'files';

let sandbox: RunningSandbox;
let work: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 31,
    projects: [{ name: PROJECT, forms: 300, cases: 30, mobileUsers: 4 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  work = mkdtempSync(join(tmpdir(), 'ccexport-deletions-files-'));
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

async function run(output: string, env: Record<string, string> = {}, ...extra: string[]): Promise<void> {
  const source = { url: sandbox.url, project: PROJECT, username: USER };
  await ccexportInProcess(sandboxExportArgs(source, 'csv', output, ...extra), {
    CCEXPORT_API_KEY: KEY,
    ...env,
  });
}

const used = new Set<string>();
function registrationWithMembers(): JsonObject {
  for (const [id, form] of sandbox.dataset.finalState(PROJECT, 'form')) {
    const members = (form.form as JsonObject).members;
    if (
      String((form.form as JsonObject)['@xmlns']).endsWith('REGISTRATION') &&
      form.archived !== true &&
      Array.isArray(members) &&
      !used.has(id)
    ) {
      used.add(id);
      return form;
    }
  }
  throw new Error('no registration form with members left');
}

async function checkDeletions(output: string, env: Record<string, string> = {}): Promise<void> {
  await run(output, env);
  const form = registrationWithMembers();
  const id = String(form.id);
  sandbox.apply(PROJECT, { kind: 'archive-form', id });

  await run(output, env);

  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    const store = await objectStoreFor(
      output,
      output.startsWith('s3://') ? { s3Client: motoS3(env.AWS_ENDPOINT_URL_S3!) } : {},
    );
    const manifests = await readManifests(store);
    const last = manifests[manifests.length - 1]!;
    expect(last.deletionMode).toBe('remove');
    const deletions = last.deletions ?? [];
    expect(deletions.map((d) => d.table).sort()).toEqual(['household_members', 'households']);
    for (const d of deletions) {
      expect(d.key).toBe(`${d.table}/deletions/${last.runId}.csv`);
      const [header, ...lines] = parseCsv((await store.get(d.key))!.body);
      expect(header).toEqual(['id', 'deleted_at', 'reason']);
      expect(lines.map((l) => l[0])).toContain(id);
      expect(lines.every((l) => l[2] === 'archived' && /^\d{4}-\d\d-\d\dT.*Z$/.test(l[1]!))).toBe(true);
      if (d.table === 'household_members')
        expect(lines.filter((l) => l[0]!.startsWith(`${id}.`)).length).toBe(
          ((form.form as JsonObject).members as unknown[]).length,
        );
      expect(d.rows).toBe(lines.length);
    }
    // The archived form's rows were not written again by the second run.
    const households = last.objects.find((o) => o.table === 'households')!;
    const rows = parseCsv((await store.get(households.key))!.body).slice(1);
    expect(rows.map((r) => r[0])).not.toContain(id);
  } finally {
    process.env = saved;
  }
}

describe('deletions in file outputs', () => {
  it('writes <table>/deletions/<run-id>.csv in a folder and lists it in the manifest', async () => {
    await checkDeletions(join(work, 'folder'));
  });

  it('writes the deletions objects to S3 as well', async () => {
    const endpoint = inject('motoEndpoint');
    await motoS3(endpoint).send(new CreateBucketCommand({ Bucket: 'deletions-files' }));
    await checkDeletions('s3://deletions-files/export', {
      AWS_ENDPOINT_URL_S3: endpoint,
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_REGION: 'us-east-1',
    });
  });
});

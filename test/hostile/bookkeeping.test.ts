/**
 * Table names that match the product's own bookkeeping: the manifests and checkpoints of file outputs,
 * the lease objects, and the PostgreSQL checkpoint table. A table named like one of them must neither
 * lose rows to it nor overwrite it.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { checkpointObjectKey, leaseObjectKey } from '../../functions/checkpoints/object-store';
import { main } from '../../functions/cli/main';
import { readManifests } from '../../functions/sinks';
import { LocalObjectStore } from '../../functions/sinks/store/local';
import { S3ObjectStore } from '../../functions/sinks/store/s3';
import type { ObjectStore } from '../../functions/sinks/store/types';
import { CHAOS_KEY, CHAOS_USER } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { motoS3 } from '../support/aws';
import { formSheet, workbook } from '../support/query-workbook';
import { runInProcess, sandboxAndFolder, sandboxExportArgs } from '../support/sandbox-export';

const PROJECT = 'books';
const hq = sandboxAndFolder(
  {
    seed: 5,
    projects: [{ name: PROJECT, forms: 120, cases: 10 }],
    credentials: [{ username: CHAOS_USER, apiKey: CHAOS_KEY }],
  },
  'ccexport-books-',
);
let forms: number;

beforeAll(async () => {
  forms = hq.sandbox.dataset.count(PROJECT, 'form');
});

/** A workbook whose sheets are named like the bookkeeping folders, each one row per form. */
async function bookkeepingWorkbook(): Promise<string> {
  const sheet = formSheet([
    ['id', 'id'],
    ['received', 'received_on'],
  ]);
  const file = join(hq.work, 'bookkeeping.xlsx');
  writeFileSync(
    file,
    await workbook([
      { name: 'control', rows: sheet },
      { name: 'manifests', rows: sheet },
      { name: 'Checkpoints', rows: sheet },
    ]),
  );
  return file;
}

async function runCli(query: string, output: string, env: Record<string, string> = {}) {
  const source = { url: hq.sandbox.url, project: PROJECT, username: CHAOS_USER, query };
  return await runInProcess(sandboxExportArgs(source, 'json', output), {
    CCEXPORT_API_KEY: CHAOS_KEY,
    ...env,
  });
}

/** Every row of every table, read through the manifests as the sinks README says. */
async function rowsByTable(store: ObjectStore): Promise<Record<string, string[]>> {
  const ids: Record<string, string[]> = {};
  for (const manifest of await readManifests(store)) {
    for (const object of manifest.objects) {
      const found = await store.get(object.key);
      if (!found) throw new Error(`manifest ${manifest.runId} lists ${object.key}, which is missing`);
      const doc = JSON.parse(found.body) as { name: string; rows: unknown[][] };
      expect(doc.name).toBe(object.table);
      ids[object.table] = [...(ids[object.table] ?? []), ...doc.rows.map((r) => String(r[0]))];
    }
  }
  return ids;
}

describe('tables named like the bookkeeping of file outputs', () => {
  it('keeps every row of tables named "manifests" and "Checkpoints" in a folder, and the checkpoint', async () => {
    const query = await bookkeepingWorkbook();
    const output = join(hq.work, 'folder');

    const first = await runCli(query, output);

    expect(first.err).not.toMatch(/error/i);
    expect(first.code).toBe(0);
    const store = new LocalObjectStore(output);
    const rows = await rowsByTable(store);
    expect(new Set(rows.control).size).toBeGreaterThan(forms * 0.9);
    expect(rows.manifests).toEqual(rows.control);
    expect(rows.Checkpoints).toEqual(rows.control);
    const manifests = await readManifests(store);
    expect(manifests).toHaveLength(1);
    expect(manifests[0]?.complete).toBe(true);
    expect((await store.list('')).filter((k) => k.startsWith('checkpoints/'))).toHaveLength(1);
    // The next run resumes from the checkpoint: nothing new, nothing lost.
    expect((await runCli(query, output)).code).toBe(0);
    const again = await rowsByTable(store);
    expect(again.manifests).toEqual(again.control);
    expect(new Set(again.manifests).size).toBe(new Set(rows.control).size);
  });

  it('keeps every row of a table named "manifests" on S3', async () => {
    const query = await bookkeepingWorkbook();
    const endpoint = inject('motoEndpoint');
    const bucket = `books-${process.pid}`;
    const s3 = motoS3(endpoint);
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));

    const run = await runCli(query, `s3://${bucket}/exports`, {
      AWS_ENDPOINT_URL_S3: endpoint,
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_REGION: 'us-east-1',
    });

    expect(run.code).toBe(0);
    const rows = await rowsByTable(new S3ObjectStore(s3, `s3://${bucket}/exports`));
    expect(new Set(rows.control).size).toBeGreaterThan(forms * 0.9);
    expect(rows.manifests).toEqual(rows.control);
    expect(rows.Checkpoints).toEqual(rows.control);
  });

  it('never names a checkpoint object like a lease object', () => {
    // A checkpoint key ending in ".lease" once named the lease of export "k" for project "p".
    expect(checkpointObjectKey('k.p.lease')).not.toBe(leaseObjectKey('k', 'p'));
    expect(checkpointObjectKey('k.p.LEASE')).not.toMatch(/\.lease\.json$/i);
    expect(checkpointObjectKey('plain')).toBe('checkpoints/plain.json');
  });
});

describe('validate-query --output-format sql', () => {
  it('reports every name the PostgreSQL output would refuse: reserved tables and repeated columns', async () => {
    const file = join(hq.work, 'names.xlsx');
    writeFileSync(
      file,
      await workbook([
        { name: 'commcare_export_runs', rows: formSheet([['id', 'id']]) },
        {
          name: 'visits',
          rows: formSheet([
            ['id', 'id'],
            ['when', 'received_on'],
            ['when', 'server_modified_on'],
          ]),
        },
      ]),
    );
    const io = captureIO();

    const code = await main(['validate-query', file, '--output-format', 'sql'], io);

    expect(code).toBe(1);
    expect(io.err()).toMatch(/commcare_export_runs.*DET's checkpoints/);
    expect(io.err()).toMatch(/"visits" has two columns named "when"/);
  });
});

describe('a table named like the PostgreSQL checkpoint table', () => {
  it('is refused by validate-query --output-format sql and by the run, before any request', async () => {
    const file = join(hq.work, 'checkpoint-table.xlsx');
    writeFileSync(
      file,
      await workbook([{ name: 'commcare_export_checkpoints', rows: formSheet([['id', 'id']]) }]),
    );
    const io = captureIO();

    const code = await main(['validate-query', file, '--output-format', 'sql'], io);

    expect(code).toBe(1);
    expect(io.err()).toMatch(/commcare_export_checkpoints/);
    expect(io.err()).toMatch(/checkpoint/i);
    const before = hq.sandbox.requestLog.length;
    const runIo = captureIO({ CCEXPORT_API_KEY: CHAOS_KEY });
    const source = { url: hq.sandbox.url, project: PROJECT, username: CHAOS_USER, query: file };
    const runCode = await main(sandboxExportArgs(source, 'sql', inject('pgUrl')), runIo);
    expect(runCode).not.toBe(0);
    expect(runIo.err()).toMatch(/commcare_export_checkpoints/);
    expect(hq.sandbox.requestLog.length).toBe(before);
  });
});

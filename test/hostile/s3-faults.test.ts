/**
 * S3 faults on the exporter's own bookkeeping (lease, manifest, checkpoint), injected by a proxy in
 * front of moto: a lost response (the write went through, the answer was a 500) must not stop a run
 * that is alone, and an error that does stop a run must say which bucket, object and step.
 */
import { randomUUID } from 'node:crypto';
import { CreateBucketCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { leaseObjectKey } from '../../functions/checkpoints/object-store';
import type { TableSpec } from '../../functions/query/types';
import { createSink, readManifests } from '../../functions/sinks';
import { S3ObjectStore } from '../../functions/sinks/store/s3';
import { motoS3 } from '../support/aws';
import {
  type FaultAction,
  nthMatching,
  type S3FaultProxy,
  startS3FaultProxy,
} from '../support/s3-fault-proxy';

const table: TableSpec = { name: 'visits', headings: ['id', 'n'], dataTypes: [null, null] };
const checkpoint = {
  checkpointKey: 'k',
  project: 'p',
  dataSource: 'form',
  tables: ['visits'],
  position: { indexedOn: '2024-01-01T00:00:00.000000', boundaryIds: ['f-2999'] },
  writtenAt: '2024-01-01T00:00:00.000Z',
};
const rows = Array.from({ length: 3000 }, (_, i) => [`f-${i}`, i]);

let endpoint: string;
let proxy: S3FaultProxy | undefined;
const direct = () => motoS3(endpoint);

beforeAll(() => {
  endpoint = inject('motoEndpoint');
});

afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
});

async function bucketWithProxy(decide: Parameters<typeof startS3FaultProxy>[1]) {
  const bucket = `faults-${randomUUID().slice(0, 8)}`;
  await direct().send(new CreateBucketCommand({ Bucket: bucket }));
  proxy = await startS3FaultProxy(endpoint, decide);
  return { bucket, url: `s3://${bucket}/out`, client: proxy.client };
}

/** One run of 3,000 rows with one commit, as a CLI file run makes it. */
async function runOnce(url: string, client: S3FaultProxy['client'], runId: string) {
  const sink = await createSink({ format: 'csv', output: url, s3Client: client });
  await sink.begin([table], { runId, checkpointKey: 'k', project: 'p', snapshot: false });
  try {
    await sink.writeRows('visits', rows);
    await sink.commit([checkpoint]);
    await sink.finish();
  } catch (error) {
    await sink.abort(error);
    throw error;
  }
}

const isLeaseWrite = (action: FaultAction, nth: number) =>
  nthMatching((r) => r.method === 'PUT' && r.key.endsWith('.lease.json'), nth, action);

describe('a lost S3 response on a lease write', () => {
  it('on the renewal inside commit: the run finishes with a complete manifest and its checkpoint', async () => {
    const { bucket, url, client } = await bucketWithProxy(isLeaseWrite('lose-response', 2));

    await runOnce(url, client, 'run-1');

    expect(proxy?.injected).toHaveLength(1);
    const store = new S3ObjectStore(direct(), url);
    const [manifest] = await readManifests(store);
    expect(manifest?.complete).toBe(true);
    expect(manifest?.objects.map((o) => o.rows)).toEqual([3000]);
    expect(JSON.parse((await store.get('checkpoints/k.json'))?.body ?? '{}').runId).toBe('run-1');
    // The lease is released: the next run starts at once.
    expect(await store.get(leaseObjectKey('k', 'p'))).toBeNull();
    await runOnce(url, direct(), 'run-2');
    const keys = await direct().send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'out/visits/' }));
    expect((keys.Contents ?? []).map((o) => o.Key)).toEqual(['out/visits/run-1.csv', 'out/visits/run-2.csv']);
  });

  it('on the first lease write: the run takes its own lease instead of refusing itself', async () => {
    const { url, client } = await bucketWithProxy(isLeaseWrite('lose-response', 1));

    await runOnce(url, client, 'run-1');

    expect(proxy?.injected).toHaveLength(1);
    const store = new S3ObjectStore(direct(), url);
    const [manifest] = await readManifests(store);
    expect(manifest?.complete).toBe(true);
    expect(await store.get(leaseObjectKey('k', 'p'))).toBeNull();
  });

  it('still refuses a lease that another run holds', async () => {
    const { url, client } = await bucketWithProxy(() => 'pass');
    const other = await createSink({ format: 'csv', output: url, s3Client: direct() });
    await other.begin([table], { runId: 'other', checkpointKey: 'k', project: 'p', snapshot: false });
    try {
      await expect(runOnce(url, client, 'run-1')).rejects.toThrow(/Another run \(other\)/);
    } finally {
      await other.abort(new Error('done'));
    }
  });
});

describe('S3 errors on the bookkeeping', () => {
  it('name the step, the bucket and the object when the checkpoint write keeps failing', async () => {
    const { bucket, url, client } = await bucketWithProxy((r) =>
      r.method === 'PUT' && r.key.endsWith('checkpoints/k.json') ? 'fail' : 'pass',
    );

    const failure = runOnce(url, client, 'run-1');

    await expect(failure).rejects.toThrow(
      `Writing the checkpoint: S3 PutObject of s3://${bucket}/out/checkpoints/k.json failed: InternalError (HTTP 500)`,
    );
  });

  it('name the step, the bucket and the object when the run manifest write keeps failing', async () => {
    const { bucket, url, client } = await bucketWithProxy((r) =>
      r.method === 'PUT' && r.key.includes('/manifests/') ? 'fail' : 'pass',
    );

    await expect(runOnce(url, client, 'run-1')).rejects.toThrow(
      `Writing the run manifest: S3 PutObject of s3://${bucket}/out/manifests/run-1.json failed: InternalError (HTTP 500)`,
    );
  });

  it('say that the bucket does not exist, at the start', async () => {
    const bucket = `missing-${randomUUID().slice(0, 8)}`;

    await expect(runOnce(`s3://${bucket}/out`, direct(), 'run-1')).rejects.toThrow(
      new RegExp(
        `^Taking the export's lease: S3 PutObject of s3://${bucket}/out/checkpoints/k\\.p\\.lease\\.json failed: NoSuchBucket .*the bucket "${bucket}" does not exist`,
      ),
    );
  });

  it('say that the credentials may not write the bucket when S3 answers 403 at the start', async () => {
    const { bucket, url, client } = await bucketWithProxy(() => 'deny');

    await expect(runOnce(url, client, 'run-1')).rejects.toThrow(
      new RegExp(
        `^Taking the export's lease: S3 PutObject of s3://${bucket}/out/checkpoints/k\\.p\\.lease\\.json failed: AccessDenied \\(HTTP 403\\).*not allowed`,
      ),
    );
  });
});

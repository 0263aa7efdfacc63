import { randomBytes, randomUUID } from 'node:crypto';
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import ExcelJS from 'exceljs';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { ExportLease } from '../../functions/checkpoints/object-store';
import { createSink, readManifests } from '../../functions/sinks';
import { S3ObjectStore } from '../../functions/sinks/store/s3';
import { motoS3 } from '../support/aws';
import { checkpoint, deadPid, formRow, formsTable, parseCsv, run } from './helpers';

let s3: S3Client;
let bucket: string;

beforeAll(async () => {
  s3 = motoS3(inject('motoEndpoint'));
  bucket = `sinks-${randomUUID().slice(0, 8)}`;
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
});

async function keys(prefix: string): Promise<string[]> {
  const out = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  return (out.Contents ?? []).map((c) => c.Key!).sort();
}

/** Records the order in which objects become visible (PutObject and CompleteMultipartUpload). */
function recordCompletions(client: S3Client): string[] {
  const order: string[] = [];
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const result = await next(args);
      const input = args.input as { Key?: string };
      if (['PutObjectCommand', 'CompleteMultipartUploadCommand'].includes(context.commandName ?? '')) {
        order.push(input.Key ?? '');
      }
      return result;
    },
    { step: 'initialize', name: `record-${randomUUID()}` },
  );
  return order;
}

const bigText = 'x'.repeat(2000);

describe('S3 output', () => {
  it('streams a large csv as a multipart upload of several parts that reads back intact', async () => {
    const prefix = `big-${randomUUID().slice(0, 6)}`;
    const sink = await createSink({
      format: 'csv',
      output: `s3://${bucket}/${prefix}`,
      s3Client: s3,
      partSizeBytes: 5 * 1024 * 1024,
    });
    await sink.begin([formsTable], run('run-1'));
    for (let batch = 0; batch < 60; batch++) {
      await sink.writeRows(
        'forms',
        Array.from({ length: 100 }, (_, i) => {
          const row = formRow(batch * 100 + i);
          row[1] = bigText;
          return row;
        }),
      );
    }
    await sink.finish();
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: `${prefix}/forms/run-1.csv` }));
    expect(head.ContentLength).toBeGreaterThan(12_000_000);
    expect(head.ETag).toMatch(/-3"$/);
    const body = await (
      await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}/forms/run-1.csv` }))
    ).Body!.transformToString();
    const rows = parseCsv(body);
    expect(rows).toHaveLength(6001);
    expect(rows[6000]?.[0]).toBe('form-05999');
    const [manifest] = await readManifests(new S3ObjectStore(s3, `s3://${bucket}/${prefix}`));
    expect(manifest?.objects).toEqual([
      expect.objectContaining({ key: 'forms/run-1.csv', rows: 6000, bytes: head.ContentLength }),
    ]);
  });

  it('streams an xlsx workbook to S3 that exceljs reads back', async () => {
    const prefix = `xlsx-${randomUUID().slice(0, 6)}`;
    const sink = await createSink({ format: 'xlsx', output: `s3://${bucket}/${prefix}`, s3Client: s3 });
    await sink.begin([formsTable], run('run-1'));
    await sink.writeRows(
      'forms',
      Array.from({ length: 500 }, (_, i) => formRow(i)),
    );
    await sink.finish();
    const body = await (
      await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}/forms/run-1.xlsx` }))
    ).Body!.transformToByteArray();
    const workbook = new ExcelJS.Workbook();
    await workbook.xlsx.load(body.buffer as ArrayBuffer);
    expect(workbook.worksheets[0]?.rowCount).toBe(501);
    expect(workbook.worksheets[0]?.getRow(501).getCell(3).value).toBe(499);
  });

  it('leaves no object and no multipart upload behind when a run aborts mid-upload', async () => {
    const prefix = `abort-${randomUUID().slice(0, 6)}`;
    const sink = await createSink({
      format: 'csv',
      output: `s3://${bucket}/${prefix}`,
      s3Client: s3,
      partSizeBytes: 5 * 1024 * 1024,
    });
    await sink.begin([formsTable], run('run-1'));
    for (let batch = 0; batch < 40; batch++) {
      await sink.writeRows(
        'forms',
        Array.from({ length: 100 }, (_, i) => [...formRow(batch * 100 + i).slice(0, 1), bigText]),
      );
    }
    await sink.abort(new Error('killed'));
    expect(await keys(`${prefix}/forms/`)).toEqual([]);
    const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
    expect(uploads.Uploads ?? []).toEqual([]);
  });

  it('writes the checkpoint only after the objects and the manifest it covers are complete', async () => {
    const prefix = `order-${randomUUID().slice(0, 6)}`;
    const client = motoS3(inject('motoEndpoint'));
    const order = recordCompletions(client);
    const sink = await createSink({ format: 'json', output: `s3://${bucket}/${prefix}`, s3Client: client });
    await sink.begin([formsTable], run('run-1'));
    await sink.writeRows('forms', [formRow(1)]);
    await sink.commit([checkpoint('2024-01-01T00:00:00')]);
    await sink.writeRows('forms', [formRow(2)]);
    await sink.commit([checkpoint('2024-01-02T00:00:00')]);
    await sink.finish();
    const relevant = order.filter((k) => !k.endsWith('.lease.json')).map((k) => k.slice(prefix.length + 1));
    expect(relevant).toEqual([
      'forms/run-1.json',
      'manifests/run-1.json',
      'checkpoints/key-1.json',
      'forms/run-1-0002.json',
      'manifests/run-1.json',
      'checkpoints/key-1.json',
      'manifests/run-1.json',
    ]);
    const doc = JSON.parse(
      await (
        await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}/checkpoints/key-1.json` }))
      ).Body!.transformToString(),
    );
    expect(doc).toMatchObject({ version: 2, runId: 'run-1', manifest: 'manifests/run-1.json' });
    expect(await keys(`${prefix}/checkpoints/`)).toEqual([`${prefix}/checkpoints/key-1.json`]);
  });

  it('refuses a concurrent run of the same export with a clear message', async () => {
    const output = `s3://${bucket}/lease-${randomUUID().slice(0, 6)}`;
    const first = await createSink({ format: 'csv', output, s3Client: s3 });
    await first.begin([formsTable], run('run-1'));
    const second = await createSink({ format: 'csv', output, s3Client: s3 });
    await expect(second.begin([formsTable], run('run-2'))).rejects.toThrow(
      /Another run \(run-1\) of this export is in progress/,
    );
    const otherProject = await createSink({ format: 'csv', output, s3Client: s3 });
    await otherProject.begin([formsTable], run('run-3', { project: 'other' }));
    await otherProject.finish();
    await first.finish();
  });

  it('takes over the lease of a run that stopped renewing it once it has expired', async () => {
    const output = `s3://${bucket}/expired-${randomUUID().slice(0, 6)}`;
    // A run cut off from S3 (or frozen) cannot renew: its lease renewals fail while `cutOff` is set.
    const client = motoS3(inject('motoEndpoint'));
    let cutOff = false;
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const key = (args.input as { Key?: string }).Key ?? '';
        if (cutOff && context.commandName === 'PutObjectCommand' && key.endsWith('.lease.json')) {
          throw new Error('network unreachable');
        }
        return next(args);
      },
      { step: 'initialize', name: 'cut-off' },
    );
    const stalled = await createSink({ format: 'csv', output, s3Client: client, leaseSeconds: 0.6 });
    await stalled.begin([formsTable], run('run-stalled'));
    cutOff = true;
    await new Promise((r) => setTimeout(r, 900));
    const next = await createSink({ format: 'csv', output, s3Client: s3 });
    await next.begin([formsTable], run('run-next'));
    cutOff = false;
    await expect(stalled.commit([checkpoint('2030-01-01T00:00:00')])).rejects.toThrow(/lost its lease/);
    await stalled.abort(new Error('lost'));
    await next.finish();
    expect(await next.readCheckpoint('key-1', 'demo', 'form')).toBeNull();
  });

  it('takes over at once the lease of a run killed on this machine', async () => {
    const output = `s3://${bucket}/killed-${randomUUID().slice(0, 6)}`;
    const store = new S3ObjectStore(s3, output);
    await new ExportLease(store, 'key-1', 'demo', 'run-killed', 120, {
      holder: { pid: await deadPid() },
    }).acquire();
    const next = await createSink({ format: 'csv', output, s3Client: s3 });
    await next.begin([formsTable], run('run-next'));
    await next.writeRows('forms', [formRow(1)]);
    await next.commit([checkpoint('2024-01-01T00:00:00')]);
    await next.finish();
    expect(await keys(`${output.slice(`s3://${bucket}/`.length)}/checkpoints/`)).toEqual([
      `${output.slice(`s3://${bucket}/`.length)}/checkpoints/key-1.json`,
    ]);
  });

  it('refuses a run held on another host until its lease expires, naming the lease object and the time', async () => {
    const output = `s3://${bucket}/remote-${randomUUID().slice(0, 6)}`;
    const remote = new ExportLease(new S3ObjectStore(s3, output), 'key-1', 'demo', 'run-remote', 120, {
      holder: { host: 'build-box-2', pid: await deadPid(), machine: 'elsewhere' },
    });
    await remote.acquire();
    const lease = `${output}/checkpoints/key-1.demo.lease.json`;
    const { expiresAt } = JSON.parse(
      await (
        await s3.send(new GetObjectCommand({ Bucket: bucket, Key: lease.slice(`s3://${bucket}/`.length) }))
      ).Body!.transformToString(),
    ) as { expiresAt: string };
    const sink = await createSink({ format: 'csv', output, s3Client: s3 });
    const refused = await sink.begin([formsTable], run('run-2')).catch((e: unknown) => e as Error);
    expect(refused?.message).toContain('Another run (run-remote) of this export is in progress');
    expect(refused?.message).toContain('on host "build-box-2"');
    expect(refused?.message).toContain(`Wait until ${expiresAt}`);
    expect(refused?.message).toContain(`delete ${lease}`);
    await remote.release();
  });

  for (const format of ['csv', 'xlsx'] as const) {
    it(`names the object and S3's error when a part upload of a ${format} file fails during a write`, async () => {
      const prefix = `partfail-${format}-${randomUUID().slice(0, 6)}`;
      const client = motoS3(inject('motoEndpoint'));
      client.middlewareStack.add(
        (next, context) => async (args) => {
          if (context.commandName === 'UploadPartCommand') {
            throw Object.assign(new Error('We encountered an internal error. Please try again.'), {
              name: 'InternalError',
              $metadata: { httpStatusCode: 500 },
            });
          }
          return next(args);
        },
        { step: 'initialize', name: 'fail-parts' },
      );
      const sink = await createSink({
        format,
        output: `s3://${bucket}/${prefix}`,
        s3Client: client,
        partSizeBytes: 5 * 1024 * 1024,
      });
      await sink.begin([formsTable], run('run-1'));
      let error: unknown;
      try {
        // About 8 MB of text that does not compress away, well past the first 5 MiB part.
        for (let batch = 0; batch < 80; batch++) {
          await sink.writeRows(
            'forms',
            Array.from({ length: 100 }, (_, i) => [`f${batch}-${i}`, randomBytes(750).toString('base64')]),
          );
        }
        await sink.commit([checkpoint('2024-01-01T00:00:00')]);
      } catch (e) {
        error = e;
      }
      await sink.abort(error);
      expect(String(error)).toContain(
        `Upload of s3://${bucket}/${prefix}/forms/run-1.${format} failed: InternalError (HTTP 500): We encountered an internal error`,
      );
      const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
      expect(uploads.Uploads ?? []).toEqual([]);
    });
  }
});

/** Hostile values and leftovers in file outputs. */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  ListMultipartUploadsCommand,
} from '@aws-sdk/client-s3';
import { describe, expect, inject, it } from 'vitest';
import type { TableSpec } from '../../functions/query/types';
import { createSink } from '../../functions/sinks';
import { deadPid } from '../sinks/helpers';
import { motoS3 } from '../support/aws';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'ccexport-outputs-'));
}

describe('csv output', () => {
  it('never contains a raw NUL byte, in a heading or a cell', async () => {
    const dir = tempDir();
    const table: TableSpec = { name: 'nul', headings: ['id', 'na\0me'], dataTypes: [null, null] };
    const sink = await createSink({ format: 'csv', output: dir });
    await sink.begin([table], { runId: 'run-1', checkpointKey: 'k', project: 'p', snapshot: true });

    await sink.writeRows('nul', [
      ['a\0', 'x\0y'],
      ['b', '\0'],
      ['c', 'q"\0,'],
    ]);
    await sink.finish();

    const bytes = readFileSync(join(dir, 'nul', 'run-1.csv'));
    expect(bytes.includes(0)).toBe(false);
    expect(bytes.toString('utf8')).toBe('id,name\r\na,xy\r\nb,\r\nc,"q"","\r\n');
  });
});

describe('leftovers of a killed run', () => {
  it('are removed from the folder by the next run: temporaries of a gone process, and old ones without a process', async () => {
    const dir = tempDir();
    const table: TableSpec = { name: 'visits', headings: ['id'], dataTypes: [null] };
    mkdirSync(join(dir, 'visits'), { recursive: true });
    mkdirSync(join(dir, 'checkpoints'), { recursive: true });
    const host = hostname().replace(/[^A-Za-z0-9.-]/g, '_');
    const gone = await deadPid();
    const killed = join(dir, 'visits', `run-0.csv.${gone}@${host}.0a1b2c3d.tmp`);
    const killedCheckpoint = join(dir, 'checkpoints', `k.json.${gone}@${host}.0a1b2c3d.tmp`);
    const oldStyle = join(dir, 'visits', 'run-old.csv.tmp');
    const live = join(dir, 'visits', `run-live.csv.${process.pid}@${host}.0a1b2c3d.tmp`);
    const otherHost = join(dir, 'visits', `run-far.csv.${gone}@elsewhere.0a1b2c3d.tmp`);
    for (const file of [killed, killedCheckpoint, oldStyle, live, otherHost]) writeFileSync(file, 'partial');
    const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000);
    utimesSync(oldStyle, twoDaysAgo, twoDaysAgo);
    const sink = await createSink({ format: 'csv', output: dir });

    await sink.begin([table], { runId: 'run-1', checkpointKey: 'k', project: 'p', snapshot: true });
    await sink.writeRows('visits', [['a']]);
    await sink.finish();

    expect(existsSync(killed)).toBe(false);
    expect(existsSync(killedCheckpoint)).toBe(false);
    expect(existsSync(oldStyle)).toBe(false);
    // A live writer's file, and one of another host whose processes cannot be seen, stay.
    expect(existsSync(live)).toBe(true);
    expect(existsSync(otherHost)).toBe(true);
  });

  it("are removed from S3 by the next run: multipart uploads of the run's folders", async () => {
    const s3 = motoS3(inject('motoEndpoint'));
    const bucket = `leftovers-${process.pid}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    // What a run killed mid-upload leaves: an upload created, no part, never completed or aborted.
    await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'out/visits/run-0.csv' }));
    await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'elsewhere/visits/run-0.csv' }));
    const table: TableSpec = { name: 'visits', headings: ['id'], dataTypes: [null] };
    const sink = await createSink({
      format: 'csv',
      output: `s3://${bucket}/out`,
      s3Client: s3,
      // moto dates an upload when it is created: every upload made before this run counts as old.
      abandonedAfterMs: 0,
    });

    await sink.begin([table], { runId: 'run-1', checkpointKey: 'k', project: 'p', snapshot: true });
    await sink.writeRows('visits', [['a']]);
    await sink.finish();

    const pending = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    expect((pending.Uploads ?? []).map((u) => u.Key)).toEqual(['elsewhere/visits/run-0.csv']);
  });
});

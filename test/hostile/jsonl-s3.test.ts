/**
 * `ccexport --resource form --output-format jsonl --output s3://bucket/prefix`, as a user types it:
 * the records go to S3, not to a local folder named `s3:`.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, GetObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { CHAOS_KEY, CHAOS_USER } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { motoS3 } from '../support/aws';
import { filesUnder } from './support';

const PROJECT = 'raw-s3';
let sandbox: RunningSandbox;
let work: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 3,
    projects: [{ name: PROJECT, forms: 2500, cases: 10 }],
    credentials: [{ username: CHAOS_USER, apiKey: CHAOS_KEY }],
  });
  work = mkdtempSync(join(tmpdir(), 'ccexport-raw-s3-'));
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

/** Runs the CLI from `work` as its current folder, with moto as the S3 endpoint. */
async function runCli(output: string) {
  const env = {
    CCEXPORT_API_KEY: CHAOS_KEY,
    AWS_ENDPOINT_URL_S3: inject('motoEndpoint'),
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
    AWS_REGION: 'us-east-1',
  };
  const io = captureIO(env, work);
  const saved = { ...process.env };
  const cwd = process.cwd();
  // The SDK reads its endpoint and credentials from the process environment; a relative output
  // folder is resolved against the process's folder.
  Object.assign(process.env, env);
  process.chdir(work);
  try {
    const code = await main(
      [
        ...['--project', PROJECT, '--commcare-hq', sandbox.url, '--username', CHAOS_USER],
        ...['--resource', 'form', '--output-format', 'jsonl', '--output', output, '--progress', 'none'],
        ...['--batch-size', '500'],
      ],
      io,
    );
    return { code, out: io.out(), err: io.err() };
  } finally {
    process.chdir(cwd);
    process.env = saved;
  }
}

describe('raw JSON lines to S3', () => {
  it('uploads <prefix>/form.jsonl with every record and writes nothing locally', async () => {
    const s3 = motoS3(inject('motoEndpoint'));
    const bucket = `raw-${process.pid}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));

    const run = await runCli(`s3://${bucket}/raw/daily`);

    expect(run.err).not.toMatch(/error/i);
    expect(run.code).toBe(0);
    expect(run.out).toContain(`wrote s3://${bucket}/raw/daily/form.jsonl`);
    expect(filesUnder(work)).toEqual([]);
    const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'raw/daily/form.jsonl' }));
    const uploaded = (await object.Body?.transformToString()) ?? '';
    expect(uploaded.split('\n').length).toBeGreaterThan(2000);
    // The same records, byte for byte, as the same command writes into a folder.
    expect((await runCli('local')).code).toBe(0);
    expect(uploaded).toBe(readFileSync(join(work, 'local', 'form.jsonl'), 'utf8'));
    const pending = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    expect(pending.Uploads ?? []).toEqual([]);
  });

  it('refuses any other URL as a jsonl output (exit 2) instead of making a folder named after it', async () => {
    const run = await runCli('https://example.org/raw');

    expect(run.code).toBe(2);
    expect(run.err).toMatch(/jsonl writes to a folder or to s3:\/\/bucket\/prefix, not to a https:\/\/ URL/);
    expect(existsSync(join(work, 'https:'))).toBe(false);
  });
});

import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { CommCareAuthError } from '../../functions/commcare/errors';
import type { ExportJob } from '../../functions/config/job';
import {
  ExportEventError,
  type ExportSliceRunner,
  makeHandler,
  type SecretReader,
} from '../../functions/export/handler';
import { commcareSecretString } from '../support/aws';

const job: ExportJob = {
  exportName: 'forms-daily',
  project: 'demo-project',
  credential: { name: 'hq', provider: 'commcare', baseUrl: 'https://hq.example', username: 'u@example.org' },
  queryFile: 'query/forms.xlsx',
  output: { type: 's3', format: 'csv', prefix: 'forms/' },
  mode: 'incremental',
};

function secret(key: string): string {
  return commcareSecretString({
    baseUrl: 'https://hq.example',
    username: 'u@example.org',
    key,
    createdAt: '2026-11-01T00:00:00.000Z',
  });
}

function build(
  runner: ExportSliceRunner,
  readSecret: SecretReader,
  recordExport?: (keyName: string, at: Date) => Promise<void>,
) {
  return makeHandler({
    ...(recordExport ? { recordExport } : {}),
    runner,
    settings: {
      credentialSecretArn: 'arn:secret',
      bucket: 'exports',
      safetyMarginMs: 60_000,
      codeRoot: '/var/task',
      secretMaxAgeSeconds: 300,
    },
    logger: new Logger({ logLevel: 'SILENT' }),
    metrics: new Metrics({ namespace: 'Test', serviceName: 'test', logger: { warn: () => {} } as never }),
    s3Client: new S3Client({ region: 'us-east-1' }),
    readSecret,
    now: () => new Date('2026-11-23T00:00:00Z'),
  });
}

const context = { getRemainingTimeInMillis: () => 600_000 };
const authError = () =>
  new CommCareAuthError({
    status: 401,
    project: 'demo-project',
    username: 'u@example.org',
    path: '/a/x',
    hqMessage: null,
  });

describe('export handler', () => {
  it('runs the slice with the query file made absolute and the key from the secret', async () => {
    const seen: { queryFile?: string; apiKey?: string; remaining?: number } = {};
    const handler = build(
      async (deps, input, clock) => {
        seen.queryFile = input.job.queryFile;
        seen.apiKey = (await deps.credentials()).apiKey;
        seen.remaining = clock.remainingMs() - clock.safetyMarginMs;
        return { done: false, continuation: { slice: 1 }, rows: 10, pages: 1 };
      },
      async () => secret('key-1'),
    );

    const result = await handler({ job, continuation: null, runId: 'r1' }, context);

    // A query file has no HQ config: the state machine's result selector still reads the field.
    expect(result).toEqual({ done: false, continuation: { slice: 1 }, rows: 10, pages: 1, hqConfig: null });
    expect(seen).toEqual({ queryFile: '/var/task/query/forms.xlsx', apiKey: 'key-1', remaining: 540_000 });
  });

  it('re-reads a just-rotated key once and retries the slice after HQ rejects the cached one', async () => {
    let current = 'old-key';
    const reads: boolean[] = [];
    const keysTried: string[] = [];
    const handler = build(
      async (deps) => {
        const { apiKey } = await deps.credentials();
        keysTried.push(apiKey);
        if (apiKey === 'old-key') {
          current = 'new-key'; // the rotation finished while the key sat in the cache
          throw authError();
        }
        return { done: true, continuation: null, rows: 1, pages: 1 };
      },
      async (_id, { forceFetch }) => {
        reads.push(forceFetch);
        // The cache keeps answering the old key until a forced fetch.
        return secret(forceFetch ? current : reads.includes(true) ? current : 'old-key');
      },
    );

    const result = await handler({ job, continuation: null }, context);

    expect(result.done).toBe(true);
    expect(keysTried).toEqual(['old-key', 'new-key']);
    expect(reads.filter((f) => f)).toHaveLength(1);
  });

  it('fails without a second try when the refreshed key is the same one', async () => {
    let runs = 0;
    const handler = build(
      async (deps) => {
        runs++;
        await deps.credentials();
        throw authError();
      },
      async () => secret('same-key'),
    );

    await expect(handler({ job, continuation: null }, context)).rejects.toThrow(CommCareAuthError);
    expect(runs).toBe(1);
  });

  it('fails naming the missing fields of a malformed event', async () => {
    const handler = build(
      async () => ({ done: true, continuation: null, rows: 0, pages: 0 }),
      async () => secret('k'),
    );

    const failure = handler({ job: { project: 'p' } }, context);

    await expect(failure).rejects.toThrow(ExportEventError);
    await expect(failure).rejects.toThrow(
      /job\.exportName: .*job\.credential: .*job\.output: .*continuation: missing/,
    );
  });

  it('records the key that worked once a run is done, so the previous key can be retired', async () => {
    const recorded: Array<[string, string]> = [];
    const handler = build(
      async () => ({ done: true, continuation: null, rows: 3, pages: 1 }),
      async () => secret('key-1'),
      async (keyName, at) => {
        recorded.push([keyName, at.toISOString()]);
      },
    );

    await handler({ job, continuation: null, runId: 'r1' }, context);

    expect(recorded).toEqual([['det-2026-11', '2026-11-23T00:00:00.000Z']]);
  });

  it('records nothing for a slice that is not the last one', async () => {
    const recorded: string[] = [];
    const handler = build(
      async () => ({ done: false, continuation: { slice: 1 }, rows: 3, pages: 1 }),
      async () => secret('key-1'),
      async (keyName) => {
        recorded.push(keyName);
      },
    );

    await handler({ job, continuation: null, runId: 'r1' }, context);

    expect(recorded).toEqual([]);
  });
});

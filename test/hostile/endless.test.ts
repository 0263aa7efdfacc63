/**
 * An HQ whose answers never end: a form list with a new, valid, advancing page behind every page (fresh
 * ids, later `indexed_on`, a `next` link each time), and an answer whose body never ends. Paging checks
 * cannot catch either (nothing repeats); the run's budget of records and bytes must stop the run with an
 * error naming the budget and how to raise it, from the command line and across Lambda slices, so each
 * probe ends by itself.
 */
import { join } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { main } from '../../functions/cli/main';
import type { ExportJob } from '../../functions/config/job';
import { parseExportsConfig } from '../../functions/config/parse';
import type { ExportSliceDeps } from '../../functions/export/handler';
import { JsonLinesSink } from '../../functions/export/raw-records';
import { runExportSlice } from '../../functions/export/slice';
import { PERMANENT_ERRORS } from '../../lib/export-pipeline';
import { CHAOS_KEY, CHAOS_USER } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { recordingMetrics } from '../stepfunctions/harness';
import { motoS3 } from '../support/aws';
import { writeFormsQuery } from '../support/query-workbook';
import { runInProcess, sandboxAndFolder, sandboxExportArgs } from '../support/sandbox-export';
import { filesUnder } from './support';

const PROJECT = 'endless';
const hq = sandboxAndFolder(
  {
    seed: 9,
    projects: [{ name: PROJECT, forms: 10, cases: 2 }],
    credentials: [{ username: CHAOS_USER, apiKey: CHAOS_KEY }],
  },
  'ccexport-endless-',
);
let query: string;

beforeAll(async () => {
  query = await writeFormsQuery(join(hq.work, 'forms.xlsx'), [
    ['id', 'id'],
    ['received', 'received_on'],
  ]);
});

function dataRequests(since: number): number {
  return hq.sandbox.requestLog.slice(since).filter((r) => r.path.includes(`/a/${PROJECT}/api/`)).length;
}

async function runCli(output: string, ...extra: string[]) {
  const source = { url: hq.sandbox.url, project: PROJECT, username: CHAOS_USER, query };
  return await runInProcess(sandboxExportArgs(source, 'csv', output, ...extra), {
    CCEXPORT_API_KEY: CHAOS_KEY,
  });
}

describe('an HQ whose pages never end', () => {
  it('stops at the record budget (--max-records), naming it and how to raise it; no partial output', async () => {
    hq.sandbox.setFaults({ endlessForms: true });
    const before = hq.sandbox.requestLog.length;
    const output = join(hq.work, 'records');

    const run = await runCli(output, '--max-records', '2000', '--batch-size', '100');

    expect(run.code).toBe(1);
    expect(run.err).toContain("more than the run's record budget of 2,000");
    expect(run.err).toContain('--max-records 4000');
    expect(run.err).toContain('maxRecords');
    // About 2000 / 99 pages (each page repeats the record at its start), not an endless stream.
    expect(dataRequests(before)).toBeLessThan(40);
    // A file run commits at its end: nothing was completed, no checkpoint moved.
    expect(filesUnder(output).filter((f) => !f.endsWith('.lease.json'))).toEqual([]);
  });

  it('stops a raw JSON-lines export at the record budget too, leaving no file (the write in flight is dropped)', async () => {
    hq.sandbox.setFaults({ endlessForms: true });
    const output = join(hq.work, 'raw');
    const io = captureIO({ CCEXPORT_API_KEY: CHAOS_KEY });

    const code = await main(
      [
        '--project',
        PROJECT,
        '--commcare-hq',
        hq.sandbox.url,
        '--username',
        CHAOS_USER,
        '--resource',
        'form',
        '--output-format',
        'jsonl',
        '--output',
        output,
        '--progress',
        'none',
        '--max-records',
        '50000',
      ],
      io,
    );

    expect(code).toBe(1);
    expect(io.err()).toContain("more than the run's record budget of 50,000");
    expect(filesUnder(output).filter((f) => !f.endsWith('.lease.json'))).toEqual([]);
  });

  it('leaves no partial file when a raw JSON-lines run stops with a write in flight', async () => {
    const output = join(hq.work, 'aborted');
    const sink = new JsonLinesSink(output);
    await sink.begin([{ name: 'form', headings: ['record'], dataTypes: [null] }], {
      runId: 'aborted-run',
      checkpointKey: 'raw:form',
      project: PROJECT,
      snapshot: true,
    });
    const big = 'x'.repeat(700 * 1024);
    // The second row does not fit the 1 MiB chunk: the first is handed to the file, still in flight.
    await sink.writeRows('form', [[{ id: 'a', big }], [{ id: 'b', big }]]);

    await sink.abort();

    expect(
      filesUnder(output)
        .filter((f) => !f.endsWith('.lease.json'))
        .map((f) => f.slice(output.length)),
    ).toEqual([]);
  });

  it('stops at the byte budget (--max-bytes), naming it and how to raise it', async () => {
    hq.sandbox.setFaults({ endlessForms: true });
    const before = hq.sandbox.requestLog.length;

    const run = await runCli(join(hq.work, 'bytes'), '--max-bytes', '300KB', '--batch-size', '100');

    expect(run.code).toBe(1);
    expect(run.err).toContain("more than the run's byte budget");
    expect(run.err).toContain('--max-bytes 600000');
    expect(run.err).toContain('maxBytes');
    expect(dataRequests(before)).toBeLessThan(20);
  });

  it('stops an answer whose body never ends at the byte budget, after one request', async () => {
    hq.sandbox.setFaults({ endlessBody: true });
    const before = hq.sandbox.requestLog.length;

    const run = await runCli(join(hq.work, 'body'), '--max-bytes', '2MiB', '--max-concurrency', '1');

    expect(run.code).toBe(1);
    expect(run.err).toContain('more than 2 MiB');
    expect(run.err).toContain('byte budget');
    expect(dataRequests(before)).toBe(1);
  });

  it('refuses a --max-bytes that is not a size, before any request', async () => {
    const run = await runCli(join(hq.work, 'usage'), '--max-bytes', 'lots');

    expect(run.code).toBe(2);
    expect(run.err).toContain('--max-bytes expects a size');
  });

  it('takes maxRecords and maxBytes from the exports config into the jobs', () => {
    const config = parseExportsConfig(
      JSON.stringify({
        alarmEmail: 'ops@example.org',
        credentials: [
          {
            name: 'hq',
            provider: 'commcare',
            baseUrl: 'https://www.commcarehq.org',
            username: 'a@example.org',
            projects: ['p'],
          },
        ],
        exports: [
          {
            name: 'forms',
            projects: ['p'],
            credential: 'hq',
            queryFile: 'forms.xlsx',
            output: { type: 's3', format: 'csv', prefix: 'forms/' },
            schedule: { cron: '0 2 * * ? *' },
            maxRecords: 5_000_000,
            maxBytes: '20GB',
          },
        ],
      }),
      'exports.config.yaml',
    );
    expect(config.exports[0]).toMatchObject({ maxRecords: 5_000_000, maxBytes: 20_000_000_000 });
  });
});

describe('an endless page stream on Lambda', () => {
  it('stops at the record budget of the run, counted across slices, with a permanent error', async () => {
    hq.sandbox.setFaults({ endlessForms: true });
    const endpoint = inject('motoEndpoint');
    const bucket = `endless-${process.pid}`;
    const s3 = motoS3(endpoint);
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const { metrics } = recordingMetrics();
    const credentials = async () => ({ username: CHAOS_USER, apiKey: CHAOS_KEY, baseUrl: hq.sandbox.url });
    const deps: ExportSliceDeps = {
      credentials,
      refreshCredentials: credentials,
      logger: new Logger({ logLevel: 'SILENT' }),
      metrics,
      s3Client: s3,
      bucket,
    };
    const job: ExportJob = {
      exportName: 'endless',
      project: PROJECT,
      credential: { name: 'hq', provider: 'commcare', baseUrl: hq.sandbox.url, username: CHAOS_USER },
      queryFile: query,
      output: { type: 's3', format: 'csv', prefix: 'endless/' },
      mode: 'incremental',
      maxRecords: 2500,
    };
    // Every slice yields after its first page of records (1,000), as a slice near its deadline does.
    const nearDeadline = { remainingMs: () => 0, safetyMarginMs: 60_000 };

    let continuation: unknown = null;
    const results: unknown[] = [];
    let failure: Error | undefined;
    for (let slice = 0; slice < 10 && failure === undefined; slice++) {
      try {
        const result = await runExportSlice(deps, { job, continuation, runId: 'endless-run' }, nearDeadline);
        results.push(result);
        continuation = result.continuation;
      } catch (error) {
        failure = error as Error;
      }
    }

    // 1,000 then 1,999 records (a page repeats the record at its start): the third slice passes 2,500.
    expect(results).toHaveLength(2);
    expect(continuation).toMatchObject({ slice: 2, pulled: { records: 1999 } });
    expect(failure?.name).toBe('CommCareBudgetError');
    expect(failure?.message).toContain('record budget of 2,500');
    expect(PERMANENT_ERRORS).toContain(failure?.name);
  });
});

/**
 * A Parquet export defined in HQ keeps its Glue tables in step with HQ: the export function (its handler
 * and slice core, against the HQ sandbox and moto's S3 and Glue) creates the data table, the deletions
 * table and the `<table>_latest` view at the first run, adds a column added in HQ at the next run, and
 * keeps a column removed in HQ. The entries are the ones the CDK app makes for a query file.
 */
import { randomUUID } from 'node:crypto';
import { Logger } from '@aws-lambda-powertools/logger';
import {
  CreateDatabaseCommand,
  GetTableCommand,
  GetTablesCommand,
  GetTableVersionsCommand,
  type GlueClient,
} from '@aws-sdk/client-glue';
import { CreateBucketCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ExportJob, ExportSliceEvent, ExportSliceResult } from '../../functions/config/job';
import { makeHandler } from '../../functions/export/handler';
import { runExportSlice } from '../../functions/export/slice';
import { type RunningSandbox, type SandboxDetExport, startSandbox } from '../../functions/sandbox';
import { glueTableSets, MANIFESTS_TABLE } from '../../functions/sinks/formats/parquet/glue-tables';
import { recordingMetrics } from '../stepfunctions/harness';
import { commcareSecretString, motoGlue, motoS3 } from '../support/aws';
import { REGISTRATION_COLUMNS, registrationExport } from '../support/hq-exports';

const USER = 'exporter@example.org';
// A sandbox key, generated per test file, never real.
const KEY = `hq-export-glue-${randomUUID()}`;
const PROJECT = 'clinic';

const registrations = (columns: SandboxDetExport['columns']) => registrationExport(columns);
const { id, householdName, householdSize } = REGISTRATION_COLUMNS;

let sandbox: RunningSandbox;
let s3: S3Client;
let glue: GlueClient;
let bucket: string;
let database: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    projects: [{ name: PROJECT, forms: 40, cases: 5, detExports: [registrations([id, householdName])] }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  s3 = motoS3(inject('motoEndpoint'));
  glue = motoGlue(inject('motoEndpoint'));
  bucket = `hq-export-glue-${randomUUID().slice(0, 8)}`;
  database = `hq_export_glue_${randomUUID().slice(0, 8)}`;
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  // The CDK app creates the database (ExportAnalytics); the function, its tables.
  await glue.send(new CreateDatabaseCommand({ DatabaseInput: { Name: database } }));
});
afterAll(async () => {
  await sandbox?.close();
});

function job(): ExportJob {
  return {
    exportName: 'registrations',
    project: PROJECT,
    credential: { name: 'hq', provider: 'commcare', baseUrl: sandbox.url, username: USER },
    hqExport: 'Registrations',
    output: { type: 's3', format: 'parquet', prefix: 'registrations-parquet/' },
    mode: 'incremental',
  };
}

/** One run as the state machine makes it, through the handler the Lambda runtime calls. */
async function run(exportJob: ExportJob): Promise<void> {
  const handler = makeHandler({
    runner: runExportSlice,
    settings: {
      credentialSecretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:hq',
      bucket,
      glueDatabase: database,
      safetyMarginMs: 90_000,
      codeRoot: '/var/task',
      secretMaxAgeSeconds: 300,
    },
    logger: new Logger({ logLevel: 'SILENT' }),
    metrics: recordingMetrics().metrics,
    s3Client: s3,
    glueClient: glue,
    readSecret: async () =>
      commcareSecretString({
        baseUrl: sandbox.url,
        username: USER,
        key: KEY,
        createdAt: '2026-11-01T00:00:00.000Z',
      }),
  });
  let continuation: unknown = null;
  const runId = randomUUID();
  for (let slice = 1; slice <= 20; slice++) {
    const event: ExportSliceEvent = { job: exportJob, continuation, runId };
    const result: ExportSliceResult = await handler(JSON.parse(JSON.stringify(event)), {
      getRemainingTimeInMillis: () => 15 * 60_000,
    });
    if (result.done) return;
    continuation = result.continuation;
  }
  throw new Error('the run did not finish in 20 slices');
}

async function table(name: string) {
  const found = await glue.send(new GetTableCommand({ DatabaseName: database, Name: name }));
  return found.Table!;
}

const columnsOf = async (name: string) =>
  (await table(name)).StorageDescriptor!.Columns!.map((c) => [c.Name, c.Type]);

async function versions(name: string): Promise<number> {
  const found = await glue.send(new GetTableVersionsCommand({ DatabaseName: database, TableName: name }));
  return found.TableVersions?.length ?? 0;
}

describe('the Glue tables of a Parquet export defined in HQ', () => {
  it('are created by the first run, follow a column added in HQ, and keep a removed one', async () => {
    sandbox.setDetExports(PROJECT, [registrations([id, householdName])]);
    await run(job());
    // One query table (the export's sheet, "Registrations"): its data table, deletions table and view,
    // and the export's manifests table the view reads.
    const names = ((await glue.send(new GetTablesCommand({ DatabaseName: database }))).TableList ?? [])
      .map((t) => t.Name as string)
      .sort();
    expect(names).toHaveLength(4);
    const tableName = names.find((n) => n !== MANIFESTS_TABLE)!;
    expect(names).toEqual([MANIFESTS_TABLE, tableName, `${tableName}_deletions`, `${tableName}_latest`]);
    // The data table, the deletions table and the view, as the CDK app builds them for the same table.
    const expected = glueTableSets(
      [{ name: 'Registrations', headings: ['id', 'household_name'], dataTypes: [null, null] }],
      { database, bucketName: bucket, prefix: 'registrations-parquet/', exportName: 'registrations' },
    )[0]!;
    expect(await columnsOf(expected.data.name)).toEqual([
      ['id', 'string'],
      ['household_name', 'string'],
      ['_run_id', 'string'],
      ['_exported_at', 'timestamp'],
      ['_seq', 'bigint'],
    ]);
    const data = await table(expected.data.name);
    expect(data.StorageDescriptor!.Location).toBe(expected.data.storageDescriptor.location);
    expect(data.Parameters).toEqual(expected.data.parameters);
    // The run's Parquet files lie in the table's partitions.
    const location = new URL(data.StorageDescriptor!.Location!);
    const files = await s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: `${location.pathname.slice(1)}run_date=` }),
    );
    expect(files.Contents?.some((o) => o.Key?.endsWith('.parquet'))).toBe(true);
    expect(data.PartitionKeys!.map((c) => c.Name)).toEqual(['run_date']);
    expect((await table(`${expected.data.name}_deletions`)).StorageDescriptor!.Location).toBe(
      `${expected.data.storageDescriptor.location}deletions/`,
    );
    const view = await table(`${expected.data.name}_latest`);
    expect(view.TableType).toBe('VIRTUAL_VIEW');
    expect(view.ViewOriginalText).toBe(expected.latest!.viewOriginalText);

    // Unchanged in HQ: the next run leaves the tables alone (no new table version per run).
    const before = await versions(expected.data.name);
    await run(job());
    expect(await versions(expected.data.name)).toBe(before);

    // A column added in HQ: the next run appends it.
    sandbox.setDetExports(PROJECT, [registrations([id, householdName, householdSize])]);
    await run(job());
    expect(await columnsOf(expected.data.name)).toEqual([
      ['id', 'string'],
      ['household_name', 'string'],
      ['_run_id', 'string'],
      ['_exported_at', 'timestamp'],
      ['_seq', 'bigint'],
      ['household_size', 'string'],
    ]);
    expect(await versions(expected.data.name)).toBeGreaterThan(before);
    expect(
      (await table(`${expected.data.name}_latest`)).StorageDescriptor!.Columns!.map((c) => c.Name),
    ).toContain('household_size');

    // A column removed in HQ stays in the table (new files read it as null).
    sandbox.setDetExports(PROJECT, [registrations([id, householdSize])]);
    await run(job());
    expect((await columnsOf(expected.data.name)).map(([n]) => n)).toEqual([
      'id',
      'household_name',
      '_run_id',
      '_exported_at',
      '_seq',
      'household_size',
    ]);
  });
});

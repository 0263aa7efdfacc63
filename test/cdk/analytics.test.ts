import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { beforeAll, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import { withDeletionColumns } from '../../functions/export/run';
import { compileQueryFile } from '../../functions/query';
import type { Cell } from '../../functions/query/types';
import { createSink } from '../../functions/sinks';
import {
  ExportAnalytics,
  loadQueryFileTables,
  queryFileTables,
  queryFileTablesCommand,
} from '../../lib/analytics';
import { run } from '../sinks/helpers';
import { duckdb, duckdbAvailable, sqlString } from '../support/duckdb';
import { buildStack, repoRoot } from './app';
import { actionsOf, roleStatements } from './template';

const hasDuckdb = duckdbAvailable();
const QUERY = 'test/fixtures/queries/all-headers.xlsx';
/** Where the example config's Parquet export begins (its comment). */
const EXAMPLE_PARQUET_EXPORT = '\n  # Queryable in Athena';

/** The example config with forms-daily exporting the fixture query (Data Types, three tables) as Parquet. */
function parquetConfig(): string {
  const example = readFileSync(`${repoRoot}/exports.config.example.yaml`, 'utf8');
  // Without the example's own Parquet export, so that forms-daily is the only one.
  const text = example.slice(0, example.indexOf(EXAMPLE_PARQUET_EXPORT));
  const changed = text.replace(
    /queryFile: examples\/queries\/forms\.xlsx\n(\s+)output: \{ type: s3, format: csv, prefix: forms\/ \}/,
    `queryFile: ${QUERY}\n$1output: { type: s3, format: parquet, prefix: forms/ }`,
  );
  if (changed === text) throw new Error('the example config changed: update parquetConfig()');
  return changed;
}

let template: Template;
let synthError: unknown;

beforeAll(async () => {
  // As bin/app.ts does: the query file is compiled before the synchronous synth.
  await loadQueryFileTables([join(repoRoot, QUERY)]);
  const { stack } = buildStack(parquetConfig());
  try {
    template = Template.fromStack(stack);
  } catch (error) {
    synthError = error;
  }
});

type Resource = { Properties: Record<string, unknown> };
function glueTable(name: string): Record<string, unknown> {
  const tables = Object.values(template.findResources('AWS::Glue::Table')) as Resource[];
  const found = tables.find((t) => (t.Properties.TableInput as { Name: string }).Name === name);
  if (!found) throw new Error(`no Glue table ${name}`);
  return found.Properties.TableInput as Record<string, unknown>;
}

function viewSql(name: string): {
  originalSql: string;
  schema: string;
  columns: { name: string; type: string }[];
} {
  const text = glueTable(name).ViewOriginalText as string;
  const match = /^\/\* Presto View: (.+) \*\/$/.exec(text);
  if (!match) throw new Error(`not an Athena view: ${text.slice(0, 40)}`);
  return JSON.parse(Buffer.from(match[1]!, 'base64').toString('utf8'));
}

describe('analytics for a Parquet export, from the query file at synth', () => {
  it('reports no unacknowledged cdk-nag AwsSolutions finding', () => {
    expect(synthError).toBeUndefined();
  });

  it('creates one Glue database for the export', () => {
    template.resourceCountIs('AWS::Glue::Database', 1);
    template.hasResourceProperties('AWS::Glue::Database', {
      DatabaseInput: { Name: 'commcareexports_forms_daily' },
    });
  });

  it("declares each query table's columns with the workbook's Data Types, then the run columns", () => {
    const table = glueTable('all_forms');
    const sd = table.StorageDescriptor as { Columns: { Name: string; Type: string }[]; SerdeInfo: unknown };
    expect(sd.Columns.map((c) => [c.Name, c.Type])).toEqual([
      ['form_id', 'string'],
      ['name', 'string'],
      ['age', 'bigint'],
      ['referred', 'bigint'],
      ['gender', 'string'],
      ['visit_type', 'string'],
      ['hash_text', 'string'],
      ['colon', 'string'],
      ['_run_id', 'string'],
      ['_exported_at', 'timestamp'],
      ['_seq', 'bigint'],
    ]);
    expect(sd.SerdeInfo).toEqual({
      SerializationLibrary: 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe',
    });
    expect(glueTable('children').TableType).toBe('EXTERNAL_TABLE');
    expect(glueTable('cases').TableType).toBe('EXTERNAL_TABLE');
  });

  it('projects the run_date partitions, so no crawler or partition repair is needed', () => {
    const table = glueTable('children');
    expect(table.PartitionKeys).toEqual([
      { Name: 'run_date', Type: 'string', Comment: 'UTC date the run started' },
    ]);
    expect(table.Parameters).toMatchObject({
      'projection.enabled': 'true',
      'projection.run_date.type': 'date',
      'projection.run_date.format': 'yyyy-MM-dd',
      'projection.run_date.range': '2020-01-01,NOW',
    });
    const template_ = JSON.stringify(
      (table.Parameters as Record<string, unknown>)['storage.location.template'],
    );
    expect(template_).toContain(`/forms/Children/run_date=\${run_date}/`);
    template.resourceCountIs('AWS::Glue::Crawler', 0);
  });

  it('adds a <table>_latest view and named query for each table with an id, and none for a table without', () => {
    expect(glueTable('children_latest').TableType).toBe('VIRTUAL_VIEW');
    expect(glueTable('cases_latest').TableType).toBe('VIRTUAL_VIEW');
    const names = (Object.values(template.findResources('AWS::Glue::Table')) as Resource[]).map(
      (t) => (t.Properties.TableInput as { Name: string }).Name,
    );
    expect(names).not.toContain('all_forms_latest');
    // The views read which deletions objects count from the manifests (pretty JSON: the Ion SerDe).
    const manifests = glueTable('ccexport_manifests').StorageDescriptor as {
      SerdeInfo: { SerializationLibrary: string };
      Location: unknown;
    };
    expect(manifests.SerdeInfo.SerializationLibrary).toBe('com.amazon.ionhiveserde.IonHiveSerDe');
    expect(JSON.stringify(manifests.Location)).toContain('/forms/manifests/');
    const view = viewSql('children_latest');
    expect(view.schema).toBe('commcareexports_forms_daily');
    expect(view.columns).toEqual([
      { name: 'id', type: 'varchar' },
      { name: 'form_id', type: 'varchar' },
      { name: 'child_name', type: 'varchar' },
      { name: '_run_id', type: 'varchar' },
      { name: '_exported_at', type: 'timestamp(3)' },
    ]);
    template.hasResourceProperties('AWS::Athena::NamedQuery', {
      Name: 'children_latest',
      Database: 'commcareexports_forms_daily',
      WorkGroup: 'CommCareExports-forms-daily',
      QueryString: view.originalSql,
    });
  });

  it('creates a workgroup that enforces encrypted results under its own prefix', () => {
    template.hasResourceProperties('AWS::Athena::WorkGroup', {
      Name: 'CommCareExports-forms-daily',
      WorkGroupConfiguration: {
        EnforceWorkGroupConfiguration: true,
        ResultConfiguration: {
          // The bucket's own key (bucket.encryption kms, the default; test/cdk/hardening.test.ts).
          EncryptionConfiguration: {
            EncryptionOption: 'SSE_KMS',
            KmsKey: { 'Fn::GetAtt': [Match.stringLikeRegexp('^ExportsKey'), 'Arn'] },
          },
          OutputLocation: {
            'Fn::Join': ['', Match.arrayWith([Match.stringLikeRegexp('/athena-results/forms-daily/$')])],
          },
        },
      },
    });
  });

  it('lets the export function write only its prefix, and the analyst role only read it', () => {
    const writer = roleStatements(template, 'formsdailyFunctionServiceRole').filter((s) =>
      actionsOf(s).some((a) => a.startsWith('s3:')),
    );
    expect(JSON.stringify(writer.map((s) => s.Resource))).toContain('/forms/*');
    expect(JSON.stringify(writer.map((s) => s.Resource))).not.toContain('athena-results');

    const analyst = roleStatements(template, 'formsdailyAnalyticsAnalystRole');
    const onData = analyst.filter((s) => JSON.stringify(s.Resource).includes('/forms/*'));
    expect(onData.flatMap(actionsOf)).toEqual(['s3:GetObject']);
    const onResults = analyst.filter((s) =>
      JSON.stringify(s.Resource).includes('/athena-results/forms-daily/*'),
    );
    expect(onResults.flatMap(actionsOf)).toContain('s3:PutObject');
    const glueActions = analyst.flatMap(actionsOf).filter((a) => a.startsWith('glue:'));
    expect(glueActions.every((a) => a.startsWith('glue:Get'))).toBe(true);
    expect(analyst.flatMap(actionsOf)).not.toContain('s3:DeleteObject');
    expect(JSON.stringify(analyst.map((s) => s.Resource))).not.toContain('/cases/');
  });
});

describe('schema evolution', () => {
  it('adds a column added to the query file to the Glue table at the next synth', () => {
    const synth = (headings: string[]) => {
      const stack = new Stack(new App(), 'S');
      new ExportAnalytics(stack, 'A', {
        exportName: 'visits',
        namePrefix: 'S',
        bucket: new s3.Bucket(stack, 'B'),
        prefix: 'visits/',
        tables: [{ name: 'visits', headings, dataTypes: headings.map(() => null) }],
      });
      const tables = Template.fromStack(stack).findResources('AWS::Glue::Table');
      const data = (Object.values(tables) as Resource[]).find(
        (t) => (t.Properties.TableInput as { Name: string }).Name === 'visits',
      );
      return (
        data!.Properties.TableInput as { StorageDescriptor: { Columns: { Name: string }[] } }
      ).StorageDescriptor.Columns.map((c) => c.Name);
    };
    expect(synth(['id', 'name'])).toEqual(['id', 'name', '_run_id', '_exported_at', '_seq']);
    expect(synth(['id', 'name', 'age'])).toEqual(['id', 'name', 'age', '_run_id', '_exported_at', '_seq']);
  });

  it('adds _deleted and _deleted_at after the query columns when the export marks deletions', () => {
    const stack = new Stack(new App(), 'S');
    new ExportAnalytics(stack, 'A', {
      exportName: 'visits',
      namePrefix: 'S',
      bucket: new s3.Bucket(stack, 'B'),
      prefix: 'visits/',
      tables: [{ name: 'visits', headings: ['id'], dataTypes: [null] }],
      deletionColumns: true,
    });
    const tables = Object.values(Template.fromStack(stack).findResources('AWS::Glue::Table')) as Resource[];
    const input = (name: string) =>
      tables.map((t) => t.Properties.TableInput as Record<string, unknown>).find((t) => t.Name === name)!;
    const columns = (input('visits').StorageDescriptor as { Columns: { Name: string; Type: string }[] })
      .Columns;
    expect(columns.map((c) => [c.Name, c.Type]).slice(0, 3)).toEqual([
      ['id', 'string'],
      ['_deleted', 'boolean'],
      ['_deleted_at', 'timestamp'],
    ]);
    const view = Buffer.from(
      /Presto View: (\S+)/.exec(input('visits_latest').ViewOriginalText as string)![1]!,
      'base64',
    ).toString('utf8');
    expect(JSON.parse(view).originalSql).toContain('NOT coalesce(v."_deleted", false)');
  });

  it('reads the tables of a query file not loaded before synth in a child process, as the export function compiles them', async () => {
    const { command, args } = queryFileTablesCommand(join(repoRoot, QUERY));
    const { stdout } = await promisify(execFile)(command, args);
    const tables = JSON.parse(stdout) as { name: string; dataTypes: unknown[] }[];
    expect(tables.map((t) => t.name)).toEqual(['all_forms', 'Children', 'Cases']);
    expect(tables[0]!.dataTypes.slice(0, 3)).toEqual(['text', 'text', 'integer']);
  });
});

describe.skipIf(!hasDuckdb)('the synthesized view SQL', () => {
  it('runs on DuckDB over files the Parquet output wrote, with deletions applied', async () => {
    // prepare: two runs of the Children table, and a deletion record between them
    const dir = mkdtempSync(join(tmpdir(), 'ccexport-view-'));
    const [, children] = queryFileTables(join(repoRoot, QUERY));
    const write = async (runId: string, rows: Cell[][]) => {
      const sink = await createSink({ format: 'parquet', output: dir });
      await sink.begin([children!], run(runId));
      await sink.writeRows('Children', rows);
      await sink.finish();
      await new Promise((resolve) => setTimeout(resolve, 5));
    };
    await write('run-1', [
      ['k1', 'f1', 'Amina'],
      ['k2', 'f1', 'Baraka'],
    ]);
    const deletedAt = new Date().toISOString();
    await new Promise((resolve) => setTimeout(resolve, 5));
    await write('run-2', [['k1', 'f1', 'Amina W.']]);
    const view = viewSql('children_latest');
    const db = `"${view.schema}"`;

    // act: the view's own SQL, over DuckDB views named like the Glue tables
    const result = duckdb(
      `CREATE SCHEMA ${db}`,
      `CREATE VIEW ${db}."children" AS SELECT * FROM read_parquet(${sqlString(join(dir, 'Children', '*', '*.parquet'))}, union_by_name = true)`,
      // k2's record is in an object a manifest lists, k1's in one no manifest lists (never committed).
      `CREATE VIEW ${db}."children_deletions" AS SELECT * FROM (VALUES ('k2', '${deletedAt}', 'deleted', 's3://bucket/exports/Children/deletions/reconcile-1.csv'), ('k1', '${new Date(Date.now() + 60_000).toISOString()}', 'deleted', 's3://bucket/exports/Children/deletions/killed.csv')) d(id, deleted_at, reason, "$path")`,
      `CREATE VIEW ${db}."ccexport_manifests" AS SELECT * FROM (VALUES (['Children/deletions/reconcile-1.csv'])) m(deletions)`,
      `SELECT * FROM (${view.originalSql}) ORDER BY id`,
    );

    // assert
    expect(result.columns).toEqual(view.columns.map((c) => c.name));
    expect(result.rows.map((r) => r.slice(0, 4))).toEqual([['k1', 'f1', 'Amina W.', 'run-2']]);
  });
});

/** The example config, its Parquet export reading `queryFile` instead of the household workbook. */
function exampleWithParquetQuery(queryFile: string): string {
  const text = readFileSync(`${repoRoot}/exports.config.example.yaml`, 'utf8');
  const changed = text.replace('queryFile: examples/household-registration.xlsx', `queryFile: ${queryFile}`);
  if (changed === text) throw new Error('the example config changed: update exampleWithParquetQuery()');
  return changed;
}

function glueColumns(t: Template, name: string): [string, string][] {
  const tables = Object.values(t.findResources('AWS::Glue::Table')) as Resource[];
  const input = tables
    .map(
      (r) =>
        r.Properties.TableInput as {
          Name: string;
          StorageDescriptor: { Columns: { Name: string; Type: string }[] };
        },
    )
    .find((i) => i.Name === name);
  if (!input) throw new Error(`no Glue table ${name}`);
  return input.StorageDescriptor.Columns.map((c) => [c.Name, c.Type]);
}

describe("the example config's Parquet export", () => {
  it('types the Glue columns by the Data Types, else by what the Map Via returns, with the mark columns', async () => {
    // prepare: the example as shipped (bin/app.ts compiles its query files before synth)
    await loadQueryFileTables([join(repoRoot, 'examples/household-registration.xlsx')]);

    // act
    const { stack } = buildStack(readFileSync(`${repoRoot}/exports.config.example.yaml`, 'utf8'));
    const example = Template.fromStack(stack);

    // assert: household_size is str2num, service_count count-selected, received_on str2date
    const columns = glueColumns(example, 'households');
    expect(columns).toEqual(
      expect.arrayContaining([
        ['household_size', 'double'],
        ['service_count', 'bigint'],
        ['received_on', 'timestamp'],
        ['village', 'string'],
        ['_deleted', 'boolean'],
        ['_deleted_at', 'timestamp'],
      ]),
    );
    expect(glueColumns(example, 'household_members')).toContainEqual(['age', 'double']);
    example.hasResourceProperties('AWS::Glue::Database', {
      DatabaseInput: { Name: 'commcareexports_households_athena' },
    });
    example.hasResourceProperties('AWS::Athena::WorkGroup', { Name: 'CommCareExports-households-athena' });
  });
});

/** Glue's name for a DuckDB column type. */
const GLUE_OF_DUCKDB: Readonly<Record<string, string>> = {
  VARCHAR: 'string',
  BIGINT: 'bigint',
  DOUBLE: 'double',
  BOOLEAN: 'boolean',
  DATE: 'date',
  TIMESTAMP: 'timestamp',
};

describe.skipIf(!hasDuckdb)('the Glue table and the files', () => {
  it('declares the schema the Parquet output writes, column for column, for columns typed by their Map Via', async () => {
    // prepare: the example's Parquet export (deletions: mark) running the HQ-layout fixture, whose
    // visit sheet has str2date, str2num and str2bool columns and no Data Types
    const fixture = 'test/fixtures/queries/hq-visit-layout.xlsx';
    await loadQueryFileTables([join(repoRoot, fixture)]);
    const { stack } = buildStack(exampleWithParquetQuery(fixture));
    const synthesized = Template.fromStack(stack);
    const compiled = await compileQueryFile(join(repoRoot, fixture), {
      baseUrl: 'https://www.commcarehq.org',
    });
    const source = withDeletionColumns(compiled.sources[0]!);
    const visit = source.tables.find((t) => t.name === 'visit')!;
    const documents = JSON.parse(
      readFileSync(join(repoRoot, 'test/fixtures/queries/documents/forms.json'), 'utf8'),
    ) as JsonObject[];
    const dir = mkdtempSync(join(tmpdir(), 'ccexport-glue-files-'));

    // act: the Parquet output writes what the plan makes of HQ's documents
    const sink = await createSink({ format: 'parquet', output: dir });
    await sink.begin([visit], run('run-1', { deletions: 'mark' }));
    await sink.writeRows(
      'visit',
      documents.flatMap((d) => visit.rowsFor(d)),
    );
    await sink.finish();
    const files = duckdb(
      `DESCRIBE SELECT * EXCLUDE (run_date) FROM read_parquet(${sqlString(join(dir, 'visit', '*', '*.parquet'))})`,
    );
    const typed = duckdb(
      `SELECT received_on, form_patient_age, form_referred FROM read_parquet(${sqlString(join(dir, 'visit', '*', '*.parquet'))}) WHERE id LIKE 'form-%' ORDER BY id`,
    );

    // assert
    const glue = glueColumns(synthesized, 'visit');
    expect(files.rows.map((r) => [r[0], GLUE_OF_DUCKDB[r[1] as string] ?? r[1]])).toEqual(glue);
    expect(glue).toEqual(
      expect.arrayContaining([
        ['received_on', 'timestamp'],
        ['form_patient_age', 'double'],
        ['form_referred', 'boolean'],
        ['form_meta_timestart', 'timestamp'],
        ['form_patient_name', 'string'],
      ]),
    );
    expect(typed.rows).toEqual([
      ['2024-03-01 10:00:00.000', 34, true],
      ['2024-03-02 08:00:00.000', 7.5, false],
    ]);
  });
});

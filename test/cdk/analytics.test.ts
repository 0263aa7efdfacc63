import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { beforeAll, describe, expect, it } from 'vitest';
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

/** The example config with forms-daily exporting the fixture query (Data Types, three tables) as Parquet. */
function parquetConfig(): string {
  const text = readFileSync(`${repoRoot}/exports.config.example.yaml`, 'utf8');
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
          EncryptionConfiguration: { EncryptionOption: 'SSE_S3' },
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
      `CREATE VIEW ${db}."children_deletions" AS SELECT * FROM (VALUES ('k2', '${deletedAt}', 'deleted')) d(id, deleted_at, reason)`,
      `SELECT * FROM (${view.originalSql}) ORDER BY id`,
    );

    // assert
    expect(result.columns).toEqual(view.columns.map((c) => c.name));
    expect(result.rows.map((r) => r.slice(0, 4))).toEqual([['k1', 'f1', 'Amina W.', 'run-2']]);
  });
});

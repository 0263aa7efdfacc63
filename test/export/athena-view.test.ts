/**
 * The `<table>_latest` Athena views, as the CDK app writes them into the template, run on DuckDB over
 * what real runs wrote: Parquet files and the deletion records of archived forms, three runs against
 * the sandbox (a form archived, another archived and then unarchived). We have no AWS account, so
 * Athena itself never runs them; DuckDB speaks the same SQL for what the views use (row_number over a
 * window, starts_with, coalesce, CAST of ISO text to timestamp), and the rows must equal those of
 * `ccexport latest`, the second implementation of the rule.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { describe, expect, it } from 'vitest';
import { DEMO_QUERY } from '../../functions/cli/demo-command';
import type { JsonObject } from '../../functions/common/json';
import { objectStoreFor, readManifests } from '../../functions/sinks';
import { tableFolder } from '../../functions/sinks/file-sink';
import { MANIFESTS_TABLE } from '../../functions/sinks/formats/parquet/glue-tables';
import { ExportAnalytics, queryFileTables } from '../../lib/analytics';
import { parseCsv } from '../sinks/helpers';
import {
  duckdb,
  duckdbAvailable,
  duckdbDeletionRecords,
  duckdbManifests,
  sqlString,
} from '../support/duckdb';
import { ccexportInProcess, sandboxAndFolder, sandboxExportArgs } from '../support/sandbox-export';

const hasDuckdb = duckdbAvailable();
const KEY = 'athena-view-key-7c2a';
const USER = 'exporter@example.org';
const PROJECT = 'views';
const TABLES = ['households', 'household_members'] as const;

const hq = sandboxAndFolder(
  {
    seed: 47,
    projects: [{ name: PROJECT, forms: 200, cases: 20, mobileUsers: 3 }],
    credentials: [{ username: USER, apiKey: KEY }],
  },
  'ccexport-athena-view-',
);

async function ccexport(...argv: string[]): Promise<void> {
  await ccexportInProcess(argv, { CCEXPORT_API_KEY: KEY });
}

async function exportRun(output: string, deletions: 'remove' | 'mark'): Promise<void> {
  const source = { url: hq.sandbox.url, project: PROJECT, username: USER };
  await ccexport(...sandboxExportArgs(source, 'parquet', output, '--deletions', deletions));
}

const used = new Set<string>();
/** A live registration form with members (rows in both tables) not used by another test yet. */
function registrationWithMembers(): string {
  for (const [id, form] of hq.sandbox.dataset.finalState(PROJECT, 'form')) {
    const members = (form.form as JsonObject).members;
    if (
      String((form.form as JsonObject)['@xmlns']).endsWith('REGISTRATION') &&
      form.archived !== true &&
      Array.isArray(members) &&
      members.length > 0 &&
      !used.has(id)
    ) {
      used.add(id);
      return id;
    }
  }
  throw new Error('no registration form with members left');
}

/** The view's SQL and column names, as the CDK app stores them in the template (Athena's Presto view form). */
function synthesizedViews(deletionColumns: boolean): Map<string, { schema: string; sql: string }> {
  const stack = new Stack(new App(), 'Views');
  new ExportAnalytics(stack, 'Analytics', {
    exportName: 'households',
    namePrefix: 'Views',
    bucket: new s3.Bucket(stack, 'Bucket'),
    prefix: 'households/',
    tables: queryFileTables(DEMO_QUERY),
    deletionColumns,
  });
  const views = new Map<string, { schema: string; sql: string }>();
  for (const resource of Object.values(Template.fromStack(stack).findResources('AWS::Glue::Table'))) {
    const input = (resource as { Properties: { TableInput: Record<string, string> } }).Properties.TableInput;
    const encoded = /^\/\* Presto View: (.+) \*\/$/.exec(input.ViewOriginalText ?? '')?.[1];
    if (!encoded) continue;
    const view = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8'));
    views.set(input.Name!, { schema: view.schema, sql: view.originalSql });
  }
  return views;
}

/**
 * Runs a view on DuckDB, with the Glue tables it reads (`<table>`, `<table>_deletions`,
 * `ccexport_manifests`) made DuckDB views of the same files Athena reads: the Parquet objects under
 * `run_date=` folders, the csv deletion records with their header skipped, every column as text and
 * Athena's `"$path"`, and the manifests' deletions keys.
 */
function runView(output: string, table: string, view: { schema: string; sql: string }) {
  const folder = join(output, tableFolder(table));
  const db = `"${view.schema}"`;
  return duckdb(
    `CREATE SCHEMA ${db}`,
    `CREATE VIEW ${db}."${table}" AS SELECT * FROM read_parquet(${sqlString(join(folder, '*', '*.parquet'))}, union_by_name = true, hive_partitioning = true)`,
    `CREATE VIEW ${db}."${table}_deletions" AS SELECT * FROM ${duckdbDeletionRecords(folder)}`,
    `CREATE VIEW ${db}."${MANIFESTS_TABLE}" AS SELECT * FROM ${duckdbManifests(output)}`,
    `SELECT * FROM (${view.sql}) ORDER BY id`,
  );
}

describe.skipIf(!hasDuckdb)('the synthesized <table>_latest views on DuckDB over real runs', () => {
  it.each(['remove', 'mark'] as const)(
    'with --deletions %s: an archived form and its members are left out, an unarchived one is back with its newest run, as ccexport latest has them',
    async (mode) => {
      // prepare: run 1 exports everything; A and B are archived before run 2; B is unarchived before run 3
      const output = join(hq.work, mode);
      await exportRun(output, mode);
      const archived = registrationWithMembers();
      const revived = registrationWithMembers();
      hq.sandbox.apply(PROJECT, { kind: 'archive-form', id: archived });
      hq.sandbox.apply(PROJECT, { kind: 'archive-form', id: revived });
      await exportRun(output, mode);
      hq.sandbox.apply(PROJECT, { kind: 'unarchive-form', id: revived });
      await exportRun(output, mode);
      const runs = (await readManifests(await objectStoreFor(output))).map((m) => m.runId);
      expect(runs).toHaveLength(3);
      const views = synthesizedViews(mode === 'mark');

      // act
      const results = new Map(TABLES.map((t) => [t, runView(output, t, views.get(`${t}_latest`)!)]));
      await ccexport('latest', '--output', output, '--output-format', 'csv', '--to', join(output, 'cmd'));

      // assert: the archived form's rows are gone from both tables, the revived form's are the third run's
      for (const table of TABLES) {
        const result = results.get(table)!;
        const idAt = result.columns.indexOf('id');
        const runAt = result.columns.indexOf('_run_id');
        const ids = result.rows.map((r) => String(r[idAt]));
        const ofRecord = (form: string) => result.rows.filter((r) => String(r[idAt]).split('.')[0] === form);
        expect(ofRecord(archived), `${table}: ${archived}`).toEqual([]);
        expect(ofRecord(revived).length, `${table}: ${revived}`).toBeGreaterThan(0);
        expect(ofRecord(revived).every((r) => r[runAt] === runs[2])).toBe(true);
        expect(new Set(ids).size).toBe(ids.length);
        if (mode === 'mark')
          expect(result.rows.every((r) => r[result.columns.indexOf('_deleted')] !== true)).toBe(true);

        const [header, ...lines] = parseCsv(
          readFileSync(join(output, 'cmd', 'latest', `${table}.csv`), 'utf8'),
        );
        const commandIds = lines.map((l) => l[header!.indexOf('id')]!).sort();
        expect(ids).toEqual(commandIds);
        expect(ids.length).toBeGreaterThan(10);
      }
    },
  );
});

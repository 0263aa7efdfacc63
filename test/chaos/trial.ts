/**
 * One crash trial: a fresh target, the export CLI killed with SIGKILL after chosen numbers of pages
 * (checking after each kill that the checkpoint is never ahead of the data), then a run to the end,
 * whose result must equal the ground truth row for row.
 */
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { dataSourceId } from '../../functions/export/run';
import { compileQueryFile } from '../../functions/query';
import type { CompiledQuery } from '../../functions/query/types';
import type { RunningSandbox } from '../../functions/sandbox';
import { S3ObjectStore } from '../../functions/sinks/store/s3';
import {
  CHAOS_KEY,
  CHAOS_USER,
  type CliResult,
  createDatabase,
  csvTruth,
  diffCsv,
  diffTables,
  dropDatabase,
  groundTruth,
  HOUSEHOLD_QUERY,
  readFileCheckpoint,
  readPostgresCheckpoint,
  readPostgresTables,
  reassembleCsv,
  runCli,
} from './support';

export interface ChaosWorld {
  readonly sandbox: RunningSandbox;
  readonly project: string;
  readonly pgAdminUrl: string;
  readonly motoEndpoint: string;
  readonly s3: S3Client;
  readonly bucket: string;
  readonly batchSize: number;
  readonly queryFile?: string;
}

export type ChaosTarget = 'postgres' | 's3';

export interface TrialOutcome {
  readonly name: string;
  readonly target: ChaosTarget;
  readonly kills: readonly number[];
  /** Per killed run: pages seen before the kill, and whether the kill landed (or the run had finished). */
  readonly runs: readonly { pages: number; killed: boolean; code: number | null }[];
  /** Empty when the trial passed. */
  readonly problems: readonly string[];
  readonly rows: number;
}

export async function createBucket(s3: S3Client, bucket: string): Promise<void> {
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
}

const compiled = new Map<string, Promise<CompiledQuery>>();
function queryFor(world: ChaosWorld, forSql: boolean): Promise<CompiledQuery> {
  const file = world.queryFile ?? HOUSEHOLD_QUERY;
  const key = `${file}|${forSql}|${world.sandbox.url}`;
  let q = compiled.get(key);
  if (!q) {
    q = compileQueryFile(file, { baseUrl: world.sandbox.url, forSql });
    compiled.set(key, q);
  }
  return q;
}

function cliArgs(world: ChaosWorld, target: ChaosTarget, output: string): string[] {
  return [
    'run',
    '--project',
    world.project,
    '--commcare-hq',
    world.sandbox.url,
    '--username',
    CHAOS_USER,
    '--query',
    world.queryFile ?? HOUSEHOLD_QUERY,
    '--output-format',
    target === 'postgres' ? 'sql' : 'csv',
    '--output',
    output,
    '--batch-size',
    String(world.batchSize),
    '--progress',
    'json',
  ];
}

function cliEnv(world: ChaosWorld): Record<string, string> {
  return {
    CCEXPORT_API_KEY: CHAOS_KEY,
    AWS_ENDPOINT_URL_S3: world.motoEndpoint,
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
    AWS_REGION: 'us-east-1',
  };
}

function describeRun(r: CliResult): string {
  return `exit ${r.code ?? r.signal}; stdout: ${r.stdout.trim().slice(-300)}; stderr: ${r.stderr.trim().slice(-600)}`;
}

export async function crashTrial(
  world: ChaosWorld,
  name: string,
  target: ChaosTarget,
  kills: readonly number[],
): Promise<TrialOutcome> {
  const forSql = target === 'postgres';
  const query = await queryFor(world, forSql);
  const rule = forSql ? 'coalesce' : 'replace';
  const full = groundTruth(world.sandbox.dataset, world.project, query, rule);
  // Rows of every version ever served live: a row a later run removes may still be in an earlier run's files.
  const everLive = new Map<string, Set<string>>();
  for (const t of query.sources[0]!.tables) everLive.set(t.name, new Set());
  for (const record of world.sandbox.dataset.timeline(world.project, 'form')) {
    if (record.archived === true) continue;
    for (const t of query.sources[0]!.tables) {
      const at = t.headings.indexOf('id');
      for (const row of t.rowsFor(record)) everLive.get(t.name)!.add(String(row[at]));
    }
  }
  const source = query.sources[0]!;
  const dataSource = dataSourceId(source);
  const problems: string[] = [];
  const runs: { pages: number; killed: boolean; code: number | null }[] = [];

  let output: string;
  let store: S3ObjectStore | undefined;
  if (target === 'postgres') {
    output = await createDatabase(world.pgAdminUrl, name);
  } else {
    output = `s3://${world.bucket}/${name}`;
    store = new S3ObjectStore(world.s3, output);
  }

  const checkNotAhead = async (after: string) => {
    if (target === 'postgres') {
      const position = await readPostgresCheckpoint(output, query.queryFileMd5, world.project);
      const prefix = groundTruth(world.sandbox.dataset, world.project, query, rule, position);
      const actual = await readPostgresTables(output, prefix);
      // Rows and checkpoint commit in one transaction: the tables hold exactly what the checkpoint covers.
      for (const p of diffTables(prefix, actual)) problems.push(`${after}: ${p}`);
    } else {
      const checkpoint = await readFileCheckpoint(store!, query.queryFileMd5, world.project, dataSource);
      const prefix = csvTruth(
        groundTruth(world.sandbox.dataset, world.project, query, rule, checkpoint?.position ?? null),
      );
      const actual = await reassembleCsv(store!, prefix);
      // Files commit data, then manifest, then checkpoint: everything the checkpoint covers is there
      // (a run killed between manifest and checkpoint leaves more, which the next run rewrites).
      for (const [table, t] of prefix) {
        const got = actual.get(table)!;
        for (const id of t.rows.keys())
          if (!got.has(id)) problems.push(`${after}: ${table} row ${id} behind checkpoint is missing`);
        for (const id of got.keys())
          if (!everLive.get(table)!.has(id)) problems.push(`${after}: ${table} has unknown row ${id}`);
      }
    }
  };

  try {
    for (const [i, killAfter] of kills.entries()) {
      const r = await runCli({
        args: cliArgs(world, target, output),
        env: cliEnv(world),
        killAfterPages: killAfter,
      });
      runs.push({ pages: r.pages, killed: r.killed, code: r.code });
      if (!r.killed && r.code !== 0)
        problems.push(`run ${i + 1} (kill after ${killAfter} pages) failed: ${describeRun(r)}`);
      await checkNotAhead(`after run ${i + 1} (killed after ${r.pages} pages)`);
    }
    const last = await runCli({ args: cliArgs(world, target, output), env: cliEnv(world) });
    if (last.code !== 0 || !last.stdout.includes('Export finished')) {
      problems.push(`final run did not finish: ${describeRun(last)}`);
    }
    if (target === 'postgres') {
      const actual = await readPostgresTables(output, full);
      for (const p of diffTables(full, actual)) problems.push(`final: ${p}`);
    } else {
      const truth = csvTruth(full);
      const actual = await reassembleCsv(store!, truth);
      for (const p of diffCsv(truth, actual)) problems.push(`final: ${p}`);
    }
  } finally {
    if (target === 'postgres') await dropDatabase(world.pgAdminUrl, name).catch(() => undefined);
  }
  const rows = [...full.values()].reduce((n, t) => n + t.rows.size, 0);
  return { name, target, kills, runs, problems, rows };
}

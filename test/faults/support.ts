/**
 * In-process export runs for the fault tests: the real client (with a no-op sleep so backoff costs no
 * time) and the real run loop writing to a real sink, plus checks of the target against the ground truth.
 */

import { newRunId } from '../../functions/cli/run-command';
import { CommCareClient, type CommCareClientOptions } from '../../functions/commcare';
import { type ExportSummary, type ProgressListener, runExport } from '../../functions/export/run';
import { compileQueryFile } from '../../functions/query';
import type { CompiledQuery } from '../../functions/query/types';
import type { RunningSandbox } from '../../functions/sandbox';
import { createSink } from '../../functions/sinks';
import type { ExportSink } from '../../functions/sinks/types';
import {
  CHAOS_KEY,
  CHAOS_USER,
  diffTables,
  groundTruth,
  HOUSEHOLD_QUERY,
  readPostgresCheckpoint,
  readPostgresTables,
} from '../chaos/support';

export interface InProcessRun {
  readonly sandbox: RunningSandbox;
  readonly project: string;
  readonly dbUrl: string;
  readonly client?: Partial<CommCareClientOptions>;
  readonly progress?: ProgressListener;
  readonly pageSize?: number;
  /** Wraps the real sink, e.g. to hold a write until a fault has been injected. */
  readonly wrapSink?: (sink: ExportSink) => ExportSink;
}

export interface RunResult {
  readonly summary?: ExportSummary;
  readonly error?: Error;
  readonly client: CommCareClient;
  readonly sleeps: number[];
}

export async function sqlQuery(sandbox: RunningSandbox): Promise<CompiledQuery> {
  return await compileQueryFile(HOUSEHOLD_QUERY, { baseUrl: sandbox.url, forSql: true });
}

/** One export to PostgreSQL, as `ccexport run --output-format sql` does it, never throwing. */
export async function exportToPostgres(run: InProcessRun): Promise<RunResult> {
  const query = await sqlQuery(run.sandbox);
  const sleeps: number[] = [];
  const client = new CommCareClient({
    baseUrl: run.sandbox.url,
    username: CHAOS_USER,
    apiKey: CHAOS_KEY,
    pageSize: run.pageSize ?? 10,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    ...run.client,
  });
  const created = await createSink({ format: 'sql', output: run.dbUrl });
  const sink = run.wrapSink ? run.wrapSink(created) : created;
  try {
    const summary = await runExport(
      { source: client, sink, runId: newRunId(), ...(run.progress ? { progress: run.progress } : {}) },
      {
        project: run.project,
        sources: query.sources,
        checkpointKey: query.queryFileMd5,
        startOver: false,
        pageSize: run.pageSize ?? 10,
        commitEveryPages: 5,
      },
    );
    return { summary, client, sleeps };
  } catch (error) {
    return { error: error as Error, client, sleeps };
  }
}

/** Differences between the database and the whole ground truth (empty when exact). */
export async function diffWhole(sandbox: RunningSandbox, project: string, dbUrl: string): Promise<string[]> {
  const query = await sqlQuery(sandbox);
  const truth = groundTruth(sandbox.dataset, project, query, 'coalesce');
  return diffTables(truth, await readPostgresTables(dbUrl, truth));
}

/** Differences between the database and the truth up to its own checkpoint: nothing half-written. */
export async function diffToCheckpoint(
  sandbox: RunningSandbox,
  project: string,
  dbUrl: string,
): Promise<string[]> {
  const query = await sqlQuery(sandbox);
  const position = await readPostgresCheckpoint(dbUrl, query.queryFileMd5, project);
  const truth = groundTruth(sandbox.dataset, project, query, 'coalesce', position);
  return diffTables(truth, await readPostgresTables(dbUrl, truth));
}

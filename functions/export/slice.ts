/**
 * One slice of one export job, for the Lambda inside the Step Functions loop: works until a safety
 * margin before the invocation's deadline, commits rows and checkpoint together, and says whether the
 * job is done. The next slice resumes from the committed checkpoint, so the continuation only counts
 * slices: all state that matters is durable in the target.
 */
import { randomUUID } from 'node:crypto';
import { CommCareClient, findHqExport, LARGEST_PAGE } from '../commcare';
import type { ExportJobOutput, ExportSliceEvent, ExportSliceResult, HqConfigRecord } from '../config/job';
import { compileQueryFile, compileWorkbook, QueryFileError } from '../query';
import type { CompiledQuery } from '../query/types';
import { createSink, openReconcileTarget, openStagedFileReconcileTarget, SinkConfigError } from '../sinks';
import { syncGlueTables } from '../sinks/formats/parquet/glue-catalog';
import type { ExportSink, SinkOptions } from '../sinks/types';
import { recordedColumnChanges } from './config-changes';
import {
  ExportEventError,
  MAX_PINNED_CONFIG_BYTES,
  type PinnedHqConfig,
  parseContinuation,
  type SliceContinuation,
} from './event';
import type { ExportSliceDeps, SliceClock } from './handler';
import { configFingerprint } from './hq-config';
import { ReconcileGuardError, runReconcileSlice, type StagedReconcileTarget } from './reconcile';
import { runExport } from './run';

export type { SliceContinuation } from './event';

/**
 * Where the job writes, as sink options: its prefix in the exports bucket, or the export database with
 * the server verified (its certificate must chain to a trusted CA and name the host; on Lambda the stack
 * sets NODE_EXTRA_CA_CERTS to the runtime's CA file, which holds the RDS certificate authorities). A run
 * and a reconcile of the job open the same output.
 */
async function jobOutputOptions(deps: ExportSliceDeps, output: ExportJobOutput): Promise<SinkOptions> {
  if (output.type === 's3') {
    if (!deps.bucket)
      throw new SinkConfigError('The export function has no EXPORT_BUCKET; S3 outputs need one');
    return {
      format: output.format,
      output: `s3://${deps.bucket}/${output.prefix.replace(/^\/+|\/+$/g, '')}`,
      s3Client: deps.s3Client,
      ...(output.keepLatest ? { keepLatest: true } : {}),
    };
  }
  if (!deps.databaseSecret)
    throw new SinkConfigError('The export function has no DATABASE_SECRET_ARN; PostgreSQL outputs need one');
  const db = await deps.databaseSecret();
  return { format: 'sql', output: '', database: { ...db, sslmode: 'verify-full' }, schema: output.schema };
}

async function openJobSink(deps: ExportSliceDeps, input: ExportSliceEvent): Promise<ExportSink> {
  return await createSink(await jobOutputOptions(deps, input.job.output));
}

/**
 * A reconcile job, in slices like an export: each slice lists ids until the deadline and stages them
 * (PostgreSQL: in a table of the output's schema; S3: as sorted runs under the export's prefix,
 * `file-reconcile-staging.ts`), the continuation says where the listing resumes, and the last slice
 * compares and removes (or marks) in one transaction, or for S3 writes the deletion records and the
 * reconcile manifest (`runReconcileSlice`). A guard trip fails the slice (the run fails and alarms) and
 * also counts `ReconcileGuardTripped`.
 */
async function reconcileSlice(
  deps: ExportSliceDeps,
  input: ExportSliceEvent,
  clock: SliceClock,
  client: CommCareClient,
  compiled: { sources: readonly import('../query/types').SourcePlan[] },
  query: { checkpointKey: string; pinned?: PinnedHqConfig },
  previous: SliceContinuation | null,
  runId: string,
  slice: number,
): Promise<ExportSliceResult> {
  const mode = input.job.deletions ?? 'ignore';
  const output = input.job.output;
  if (mode === 'ignore')
    throw new SinkConfigError('A reconcile job needs deletions "remove" or "mark"; this job ignores them');
  const options = await jobOutputOptions(deps, output);
  let target: StagedReconcileTarget;
  if (output.type === 's3') {
    const files = await openStagedFileReconcileTarget({
      ...options,
      resumesFrom: previous?.reconcile ?? null,
      // The reconcile manifest and deletion records are this attempt's own, as an export slice's
      // objects are: a retried final slice must not replace a manifest an earlier attempt committed.
      objectRunId: sliceObjectRunId(runId, input.job.project, slice, randomUUID().slice(0, 8)),
      onCleanupError: (error) =>
        deps.logger.warn('Could not delete the staged ids of a finished reconcile; the bucket expires them', {
          error: error instanceof Error ? error.message : String(error),
        }),
    });
    // A reconcile scheduled before the project's first run has nothing to compare: done, not failed.
    if (previous === null && !(await files.hasRuns(input.job.project))) {
      deps.logger.info('Reconcile skipped: the export has written no run of this project yet');
      return { done: true, continuation: null, rows: 0, pages: 0 };
    }
    target = files;
  } else {
    target = (await openReconcileTarget(options)) as StagedReconcileTarget;
  }
  try {
    const result = await runReconcileSlice(
      { source: client, target, runId, shouldStop: () => clock.remainingMs() < clock.safetyMarginMs },
      {
        project: input.job.project,
        sources: compiled.sources,
        checkpointKey: query.checkpointKey,
        pageSize: 10_000,
        mode,
        ...(input.job.reconcileMaxShare !== undefined ? { maxShare: input.job.reconcileMaxShare } : {}),
      },
      previous?.reconcile ?? null,
    );
    if (!result.done)
      return {
        done: false,
        continuation: {
          slice,
          runId,
          exportName: input.job.exportName,
          project: input.job.project,
          ...(query.pinned ? { hqConfig: query.pinned } : {}),
          // The run's budget from HQ counts the listing too, across slices.
          pulled: client.budgetUsed,
          reconcile: result.cursor,
        } satisfies SliceContinuation,
        rows: 0,
        pages: result.pages,
      };
    deps.metrics.addMetric('RecordsRemoved', 'Count', result.summary.gone);
    return { done: true, continuation: null, rows: result.summary.gone, pages: result.pages };
  } catch (error) {
    if (error instanceof ReconcileGuardError) deps.metrics.addMetric('ReconcileGuardTripped', 'Count', 1);
    throw error;
  }
}

/**
 * The job's compiled query and checkpoint key. A query file: compiled from the bundle, checkpoints keyed
 * by its MD5 (DET's rule). An HQ export: the first slice finds it and downloads its current DET config;
 * later slices compile the copy pinned in the continuation, so one run never mixes two versions of an
 * export edited in HQ meanwhile. Checkpoints are keyed `hq:<export id>` (as the CLI's), so an edit in HQ
 * (a new column) continues from the checkpoint instead of exporting everything again. A config that no
 * longer validates throws `QueryFileError` with its errors: a permanent error, never retried.
 */
async function jobQuery(
  deps: ExportSliceDeps,
  input: ExportSliceEvent,
  client: CommCareClient,
  previous: SliceContinuation | null,
  baseUrl: string,
): Promise<{ compiled: CompiledQuery; checkpointKey: string; pinned?: PinnedHqConfig }> {
  const options = {
    baseUrl,
    forSql: input.job.output.type === 'postgres',
    deletions: input.job.deletions ?? 'ignore',
  };
  const job = input.job;
  if (job.hqExport === undefined) {
    const compiled = await compileQueryFile(job.queryFile as string, options);
    return { compiled, checkpointKey: compiled.queryFileMd5 };
  }
  let pinned = previous?.hqConfig;
  if (!pinned) {
    const found = findHqExport(await client.hqExports(job.project), job.project, job.hqExport);
    const bytes = await client.hqExportConfig(job.project, found);
    if (bytes.length > MAX_PINNED_CONFIG_BYTES)
      throw new ExportEventError(
        `The DET config of HQ export "${found.name}" (${found.id}) is ${bytes.length} bytes; a run pins at most ${MAX_PINNED_CONFIG_BYTES} bytes in its continuation (Step Functions state is capped at 256 KB). Use a query file instead.`,
      );
    pinned = {
      id: found.id,
      name: found.name,
      fingerprint: await configFingerprint(bytes),
      workbook: bytes.toString('base64'),
    };
  }
  let compiled: CompiledQuery;
  try {
    compiled = await compileWorkbook(Buffer.from(pinned.workbook, 'base64'), options);
  } catch (error) {
    if (error instanceof QueryFileError)
      throw new QueryFileError(error.issues, {
        cause: error,
        file: `HQ export "${pinned.name}" (${pinned.id}), config ${pinned.fingerprint}`,
      });
    throw error;
  }
  deps.logger.info('HQ export config', {
    hqExport: pinned.id,
    hqExportName: pinned.name,
    configFingerprint: pinned.fingerprint,
    pinnedBy: previous?.hqConfig ? 'continuation' : 'this slice',
  });
  return { compiled, checkpointKey: `hq:${pinned.id}`, pinned };
}

/** `syncGlueTables` for a Parquet S3 output, when the function has a Glue database. */
async function syncJobGlueTables(
  deps: ExportSliceDeps,
  input: ExportSliceEvent,
  compiled: CompiledQuery,
): Promise<void> {
  const output = input.job.output;
  if (output.type !== 's3' || output.format !== 'parquet' || !deps.glue || !deps.bucket) return;
  const changes = await syncGlueTables(
    deps.glue.client,
    compiled.sources.flatMap((s) => s.tables),
    {
      database: deps.glue.database,
      bucketName: deps.bucket,
      // The prefix as the S3 sink writes under it (openJobSink).
      prefix: `${output.prefix.replace(/^\/+|\/+$/g, '')}/`,
      exportName: input.job.exportName,
      ...(input.job.deletions === 'mark' ? { deletionColumns: true } : {}),
    },
  );
  for (const change of changes)
    deps.logger.info(`Glue table ${deps.glue.database}.${change.name} ${change.action}`, {
      glueTable: change.name,
      action: change.action,
      addedColumns: change.addedColumns,
    });
}

/** A project name as it may appear in an object name. */
function objectSafe(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, '_');
}

/**
 * The name of this attempt's objects and manifest: `<run>-<project>-<slice>-<attempt>`. The state
 * machine retries a failed slice with the same input, and an attempt may have committed rows and
 * checkpoint before it failed (say, its final manifest write got a 500): a retry under the same names
 * would replace those objects with the rows after the checkpoint and lose the committed ones. So every
 * attempt (every call of the core: the handler's retry after a key refresh is one too) writes under
 * names of its own; the committed attempt's objects stay listed by its manifest.
 */
export function sliceObjectRunId(runId: string, project: string, slice: number, attempt: string): string {
  return `${runId}-${objectSafe(project)}-${String(slice).padStart(4, '0')}-${attempt}`;
}

export async function runExportSlice(
  deps: ExportSliceDeps,
  input: ExportSliceEvent,
  clock: SliceClock,
): Promise<ExportSliceResult> {
  const previous = parseContinuation(input);
  const runId = previous?.runId ?? input.runId ?? randomUUID();
  const slice = (previous?.slice ?? 0) + 1;
  const attempt = randomUUID().slice(0, 8);
  const credentials = await deps.credentials();
  const client = new CommCareClient({
    baseUrl: credentials.baseUrl,
    username: credentials.username,
    apiKey: credentials.apiKey,
    ...(input.job.maxRecords !== undefined ? { maxRecords: input.job.maxRecords } : {}),
    ...(input.job.maxBytes !== undefined ? { maxBytes: input.job.maxBytes } : {}),
    // The budget is the run's, not the slice's: an endless page stream must not go on slice after slice.
    ...(previous?.pulled ? { budgetUsed: previous.pulled } : {}),
    logger: (event) => {
      if (event.level === 'warn' || event.level === 'error') deps.logger.warn(event.message, { ...event });
    },
  });
  const query = await jobQuery(deps, input, client, previous, credentials.baseUrl);
  const compiled = query.compiled;
  if (input.job.task === 'reconcile')
    return await reconcileSlice(deps, input, clock, client, compiled, query, previous, runId, slice);
  // An HQ export's Parquet tables in Glue follow its config: the first slice of each run creates them or
  // adds the new columns, before any file of the run is written, so Athena sees a new column as soon as
  // files have it (and an export's first run is queryable the minute it finishes).
  if (previous === null && query.pinned) await syncJobGlueTables(deps, input, compiled);
  const sink = await openJobSink(deps, input);
  const summary = await runExport(
    {
      source: client,
      sink,
      // Unique per project, slice and attempt: the projects of one export run in parallel under one
      // run id and write under the same prefix, and a retried slice must not replace what it committed.
      runId: sliceObjectRunId(runId, input.job.project, slice, attempt),
      shouldYield: () => clock.remainingMs() < clock.safetyMarginMs,
      // Columns that appeared or disappeared since the last run (an HQ export edited in HQ).
      notice: (message) => deps.logger.info(message),
    },
    {
      project: input.job.project,
      sources: compiled.sources,
      // DET's rule: checkpoints are keyed by the query file's MD5, so an edited query starts a fresh
      // export. A snapshot run starts over only in its first slice; later slices resume from it.
      checkpointKey: query.checkpointKey,
      startOver: input.job.mode === 'snapshot' && previous === null,
      // Each resource's largest page (1000 forms, 5000 cases): fewer round trips for the same rows.
      pageSize: LARGEST_PAGE,
      commitEveryPages: input.job.output.type === 'postgres' ? 5 : Number.POSITIVE_INFINITY,
      deletions: input.job.deletions ?? 'ignore',
      ...(query.pinned ? { configFingerprint: query.pinned.fingerprint } : {}),
    },
  );
  // The run's change is what its first slice saw; later slices compare with the run's own checkpoint.
  const pinned: PinnedHqConfig | undefined = query.pinned && {
    ...query.pinned,
    changes: query.pinned.changes ?? {
      previousFingerprint: summary.changes.previousFingerprint,
      columnChanges: recordedColumnChanges(summary.changes.columnChanges),
    },
  };
  const stats = client.stats;
  // Rows of archived or deleted records removed or marked (dashboard: "records removed or marked").
  deps.metrics.addMetric('RecordsRemoved', 'Count', summary.archived);
  deps.metrics.addMetric('Retries', 'Count', stats.retries);
  deps.metrics.addMetric('ThrottleWaitMs', 'Milliseconds', stats.throttleWaitMs);
  return {
    done: summary.done,
    continuation: summary.done
      ? null
      : ({
          slice,
          runId,
          exportName: input.job.exportName,
          project: input.job.project,
          ...(pinned ? { hqConfig: pinned } : {}),
          pulled: client.budgetUsed,
        } satisfies SliceContinuation),
    rows: summary.rows,
    pages: summary.pages,
    hqConfig: pinned ? hqConfigRecord(pinned) : null,
  };
}

/** The run record's view of a pinned config: everything but the workbook. */
function hqConfigRecord(pinned: PinnedHqConfig): HqConfigRecord {
  return {
    id: pinned.id,
    name: pinned.name,
    fingerprint: pinned.fingerprint,
    previousFingerprint: pinned.changes?.previousFingerprint ?? null,
    columnChanges: pinned.changes?.columnChanges ?? [],
  };
}

/**
 * The export function's event and the continuation it carries, checked before anything runs. A wrong
 * event is a permanent error (`ExportEventError`, never retried by the state machine) whose message
 * names the field: a retry of the same event can only fail the same way.
 */
import { z } from 'zod';
import type { RunBudgetUsed } from '../commcare/budget';
import type { ExportJob, ExportSliceEvent, HqConfigRecord } from '../config/job';
import { exportOutputSchema, projectSchema } from '../config/schema';
import type { ReconcileCursor } from './reconcile';

/** The event (or the function's environment) cannot run: a field is missing or wrong. */
export class ExportEventError extends Error {
  override readonly name = 'ExportEventError';
}

/** The continuation the state machine carries between slices of one job. */
export interface SliceContinuation {
  /** How many slices of this job have finished (1 after the first). */
  readonly slice: number;
  /** The run's id, the same for every slice of a run. */
  readonly runId: string;
  /** The job the continuation belongs to: a continuation handed to another job is refused. */
  readonly exportName: string;
  readonly project: string;
  /** An HQ export's DET config as the run's first slice downloaded it: every later slice uses it. */
  readonly hqConfig?: PinnedHqConfig;
  /** What the run's slices so far used of its budget from HQ (records, bytes); absent: nothing yet. */
  readonly pulled?: RunBudgetUsed;
  /** A reconcile job: where its listing resumes (the ids listed so far are staged in the database). */
  readonly reconcile?: ReconcileCursor;
}

/**
 * The DET config of an HQ export, pinned for one run. The workbook travels in the continuation itself
 * rather than next to the checkpoint: every output (S3 files, PostgreSQL) carries the continuation the
 * same way, a pinned copy cannot be lost or overwritten by another run, and HQ's config workbooks are
 * small (a few KB; `MAX_PINNED_CONFIG_BYTES` keeps the state well under Step Functions' 256 KB).
 */
export interface PinnedHqConfig {
  readonly id: string;
  readonly name: string;
  /** What the workbook says, hashed (`configFingerprint`): changes only when the export is edited. */
  readonly fingerprint: string;
  /** The workbook's bytes, base64. */
  readonly workbook: string;
  /**
   * What the first slice found changed since the last committed run (fingerprint, columns), kept so
   * every slice's result reports the run's change: later slices compare with the run's own checkpoint.
   * Absent in continuations of older versions.
   */
  readonly changes?: Pick<HqConfigRecord, 'previousFingerprint' | 'columnChanges'>;
}

/**
 * Largest DET config workbook a run pins (bytes before base64). Several projects of one export may be
 * carried in one continue-as-new input, which Step Functions caps at 256 KB.
 */
export const MAX_PINNED_CONFIG_BYTES = 48 * 1024;

/** More slices than any run makes (at up to 15 minutes each, about 28 years of one export). */
export const MAX_SLICES = 1_000_000;

const nonEmpty = z.string().min(1, { error: 'expected a non-empty string' });

const jobSchema = z.object({
  exportName: nonEmpty,
  project: projectSchema,
  credential: z.object({
    name: nonEmpty,
    provider: z.enum(['commcare', 'conduce', 'civicrm']),
    baseUrl: nonEmpty,
    username: nonEmpty,
  }),
  queryFile: nonEmpty.optional(),
  hqExport: nonEmpty.optional(),
  output: exportOutputSchema,
  mode: z.enum(['incremental', 'snapshot']),
  deletions: z.enum(['remove', 'mark', 'ignore']).optional(),
  task: z.enum(['export', 'reconcile']).optional(),
  reconcileMaxShare: z.number().gt(0).max(1).optional(),
  maxRecords: z.number().int().positive().optional(),
  maxBytes: z.number().int().positive().optional(),
});

const eventSchema = z.object({
  job: jobSchema,
  continuation: z.unknown(),
  runId: z.string().min(1).max(200).optional(),
});

const EXPECTED = 'expected { job: ExportJob, continuation, runId? } as the state machine sends it';

function describe(value: unknown): string {
  if (value === undefined) return 'missing';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}

/** Checks the whole event; the first problems name their fields (`job.output.prefix: ...`). */
export function parseSliceEvent(event: unknown): ExportSliceEvent {
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    throw new ExportEventError(`The event is ${describe(event)}; ${EXPECTED}`);
  }
  const parsed = eventSchema.safeParse(event);
  const problems = parsed.success
    ? []
    : parsed.error.issues.map((issue) => {
        const field = issue.path.map(String).join('.') || 'event';
        return field === 'continuation'
          ? 'continuation: missing (null for a first slice)'
          : `${field}: ${issue.message}`;
      });
  if (problems.length > 0) {
    const shown = problems.length > 8 ? [...problems.slice(0, 8), `${problems.length - 8} more`] : problems;
    throw new ExportEventError(`The event is not a valid export job (${shown.join('; ')}); ${EXPECTED}`);
  }
  const job = (event as ExportSliceEvent).job;
  if ((job.queryFile === undefined) === (job.hqExport === undefined))
    throw new ExportEventError(
      `The event's job has ${job.queryFile === undefined ? 'neither queryFile nor hqExport' : 'both queryFile and hqExport'}; expected one of them`,
    );
  // The job as sent (unknown fields kept) once its known fields are checked.
  return event as ExportSliceEvent;
}

function wrong(field: string, value: unknown, expected: string): ExportEventError {
  return new ExportEventError(
    `The event's continuation.${field} is ${describe(value)}; expected ${expected}. A continuation is ` +
      'what the previous slice of the same job returned; this one cannot resume the job.',
  );
}

/** The continuation of `event`, checked against its job and run; null for the job's first slice. */
export function parseContinuation(event: ExportSliceEvent): SliceContinuation | null {
  const value = event.continuation;
  if (value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ExportEventError(
      `The event's continuation is ${describe(value)}; expected null (first slice) or the object the previous slice returned`,
    );
  }
  const { slice, runId, exportName, project, hqConfig, pulled, reconcile } = value as Partial<
    Record<keyof SliceContinuation, unknown>
  >;
  const used = pulled as Partial<Record<keyof RunBudgetUsed, unknown>> | undefined;
  const count = (n: unknown) => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
  if (
    used !== undefined &&
    (used === null || typeof used !== 'object' || !count(used.records) || !count(used.bytes))
  )
    throw wrong(
      'pulled',
      pulled,
      'the records and bytes the run pulled so far ({ records, bytes }, whole numbers)',
    );
  const budget =
    used === undefined ? {} : { pulled: { records: used.records as number, bytes: used.bytes as number } };
  if (typeof slice !== 'number' || !Number.isSafeInteger(slice) || slice < 1 || slice > MAX_SLICES) {
    throw wrong('slice', slice, `a whole number from 1 to ${MAX_SLICES}`);
  }
  if (typeof runId !== 'string' || runId === '' || runId.length > 200) {
    throw wrong('runId', runId, 'the run id (a non-empty string)');
  }
  if (event.runId !== undefined && runId !== event.runId) {
    throw wrong('runId', runId, `the event's run id ${JSON.stringify(event.runId)}`);
  }
  const job: ExportJob = event.job;
  if (exportName !== job.exportName) {
    throw wrong('exportName', exportName, `this job's export ${JSON.stringify(job.exportName)}`);
  }
  if (project !== job.project) {
    throw wrong('project', project, `this job's project ${JSON.stringify(job.project)}`);
  }
  let cursor: { reconcile?: ReconcileCursor } = {};
  if (event.job.task === 'reconcile' && reconcile !== undefined) {
    const r = reconcile as Partial<Record<keyof ReconcileCursor, unknown>> | null;
    const position = (p: unknown) =>
      p === null ||
      (typeof p === 'object' &&
        !Array.isArray(p) &&
        (((p as { indexedOn?: unknown }).indexedOn ?? null) === null ||
          typeof (p as { indexedOn?: unknown }).indexedOn === 'string') &&
        Array.isArray((p as { boundaryIds?: unknown }).boundaryIds));
    if (
      r === null ||
      typeof r !== 'object' ||
      typeof r.source !== 'number' ||
      !Number.isSafeInteger(r.source) ||
      r.source < 0 ||
      !position(r.position) ||
      !Array.isArray(r.ends) ||
      !r.ends.every(position) ||
      typeof r.ids !== 'number' ||
      typeof r.pages !== 'number'
    )
      throw wrong(
        'reconcile',
        '(not a reconcile cursor)',
        'where the reconcile listing resumes, as the previous slice returned it',
      );
    cursor = { reconcile: r as ReconcileCursor };
  }
  if (event.job.hqExport !== undefined) {
    const pinned = hqConfig as Partial<Record<keyof PinnedHqConfig, unknown>> | undefined;
    if (
      pinned === null ||
      typeof pinned !== 'object' ||
      typeof pinned.id !== 'string' ||
      typeof pinned.name !== 'string' ||
      typeof pinned.fingerprint !== 'string' ||
      typeof pinned.workbook !== 'string' ||
      pinned.workbook === '' ||
      (pinned.changes !== undefined &&
        !Array.isArray((pinned.changes as { columnChanges?: unknown } | null)?.columnChanges))
    )
      throw wrong(
        'hqConfig',
        hqConfig === undefined ? undefined : '(not a pinned config)',
        'the HQ export config the run pinned in its first slice',
      );
    return { slice, runId, exportName, project, hqConfig: pinned as PinnedHqConfig, ...budget, ...cursor };
  }
  return { slice, runId, exportName, project, ...budget, ...cursor };
}

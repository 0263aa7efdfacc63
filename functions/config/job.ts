/**
 * The job the state machine hands to the export function: one export of one project space. Both sides
 * share these types: the CDK app builds jobs from the config file (`exportJobs`), the handler receives
 * them, and the core (`functions/export/slice.ts`) runs them.
 */
import type { ExportsConfig } from './parse';

export type KeyProvider = 'commcare' | 'conduce' | 'civicrm';

/** Where a job's rows go. The bucket and database come from the deployment, not from the job. */
export type ExportJobOutput =
  | {
      readonly type: 's3';
      readonly format: 'csv' | 'xlsx' | 'json' | 'markdown' | 'parquet';
      readonly keepLatest?: boolean;
      readonly prefix: string;
    }
  | { readonly type: 'postgres'; readonly schema: string };

export interface ExportJob {
  /** The export's name in the config: metric dimension, resource names, checkpoint namespace. */
  readonly exportName: string;
  /** The one project space (HQ domain) this job exports. */
  readonly project: string;
  /** Which key to use. The secret itself is found by the function (its ARN is in its environment). */
  readonly credential: {
    readonly name: string;
    readonly provider: KeyProvider;
    readonly baseUrl: string;
    readonly username: string;
  };
  /**
   * DET query file. In Lambda: relative to the function's code root, where the deployment bundles it
   * (`query/<file name>`); the handler makes it absolute. Locally: a path on disk. Absent when the job
   * names an HQ export (`hqExport`): a job has exactly one of the two.
   */
  readonly queryFile?: string;
  /**
   * An export defined in CommCare HQ, by name or id: the run's first slice downloads its DET config and
   * pins it in the continuation, so every slice of one run uses one version (`functions/export/slice.ts`).
   */
  readonly hqExport?: string;
  readonly output: ExportJobOutput;
  /** `incremental` resumes from the checkpoint; `snapshot` exports everything on every run. */
  readonly mode: 'incremental' | 'snapshot';
  /** Archived and deleted records (`remove`, `mark`, `ignore`). @default 'ignore' (jobs of older deployments) */
  readonly deletions?: 'remove' | 'mark' | 'ignore';
  /** `reconcile`: compare HQ's ids with the output instead of exporting. @default 'export' */
  readonly task?: 'export' | 'reconcile';
  /** Reconcile: largest share of a table one reconcile may remove or mark. @default 0.2 */
  readonly reconcileMaxShare?: number;
  /** The run's budget of records and bytes from HQ (`maxRecords`, `maxBytes` in the config). @default the client's */
  readonly maxRecords?: number;
  readonly maxBytes?: number;
}

/** The export function's event: a job and where the previous slice stopped (null for a fresh start). */
export interface ExportSliceEvent {
  readonly job: ExportJob;
  readonly continuation: unknown | null;
  /** Same for every slice of one run, across continue-as-new executions (the first execution's name). */
  readonly runId?: string;
}

/** What one slice returns; the state machine loops while `done` is false. */
export interface ExportSliceResult {
  readonly done: boolean;
  /** Opaque to the state machine; must stay small (Step Functions payloads are capped at 256 KB). */
  readonly continuation: unknown | null;
  readonly rows: number;
  readonly pages: number;
  /**
   * An HQ export's run: the config the run pinned and what changed since the last committed run. The
   * state machine keeps it in each project's result, so the execution's output (what `ccexport runs`
   * reads) records it. Null for a query file (the handler always sends the field: the state machine's
   * result selector needs it).
   */
  readonly hqConfig?: HqConfigRecord | null;
}

/** The HQ export config a run used, as its run record keeps it. */
export interface HqConfigRecord {
  readonly id: string;
  readonly name: string;
  /** `configFingerprint` of the pinned workbook: what it says, not its bytes. */
  readonly fingerprint: string;
  /** The fingerprint the last committed run of this export recorded; null on a first run or when unknown. */
  readonly previousFingerprint: string | null;
  /** Columns each table gained or lost since that run (empty when none, or nothing to compare with). */
  readonly columnChanges: readonly {
    readonly table: string;
    readonly appeared: readonly string[];
    readonly disappeared: readonly string[];
  }[];
}

/**
 * An execution's input. The schedule sends every job with a null continuation; `ccexport trigger` may
 * send `{}` (the state machine then uses the jobs it was deployed with); a continue-as-new execution
 * receives the unfinished slices, the run id and the generation number.
 */
export interface ExportRunInput {
  readonly slices?: readonly ExportSliceEvent[];
  readonly runId?: string;
  readonly generation?: number;
}

/** The code-root-relative path where the deployment puts an export's query file. */
export function bundledQueryFile(exportConfig: { readonly queryFile: string }): string {
  const base = exportConfig.queryFile.split(/[\\/]/).pop() as string;
  return `query/${base}`;
}

/** One job per project of the named export, with the query file path as deployed. */
export function exportJobs(config: ExportsConfig, exportName: string): ExportJob[] {
  const exp = config.exports.find((e) => e.name === exportName);
  if (!exp) {
    throw new Error(
      `No export named ${JSON.stringify(exportName)}; expected one of ${config.exports.map((e) => e.name).join(', ')}`,
    );
  }
  const cred = config.credentials.find((c) => c.name === exp.credential);
  if (!cred)
    throw new Error(
      `Export ${exp.name} names credential ${JSON.stringify(exp.credential)}, which is not defined`,
    );
  return exp.projects.map((project) => ({
    exportName: exp.name,
    project,
    credential: { name: cred.name, provider: cred.provider, baseUrl: cred.baseUrl, username: cred.username },
    ...(exp.query
      ? { hqExport: exp.query.hqExport }
      : { queryFile: bundledQueryFile({ queryFile: exp.queryFile as string }) }),
    output: exp.output,
    mode: exp.mode,
    deletions: exp.deletions,
    ...(exp.maxRecords !== undefined ? { maxRecords: exp.maxRecords } : {}),
    ...(exp.maxBytes !== undefined ? { maxBytes: exp.maxBytes } : {}),
  }));
}

/**
 * The reconcile jobs of the named export: its export jobs with `task: 'reconcile'`, for an export with
 * deletions tracked and a reconcile schedule whose output can be compared: PostgreSQL, or S3 files the
 * reconcile reads back (csv, json, xlsx, parquet; not markdown). None otherwise.
 */
export function reconcileJobs(config: ExportsConfig, exportName: string): ExportJob[] {
  const exp = config.exports.find((e) => e.name === exportName);
  if (
    !exp ||
    exp.reconcile === 'off' ||
    exp.deletions === 'ignore' ||
    (exp.output.type === 's3' && exp.output.format === 'markdown')
  )
    return [];
  const maxShare = exp.reconcile.maxShare;
  return exportJobs(config, exportName).map((job) => ({
    ...job,
    task: 'reconcile',
    reconcileMaxShare: maxShare,
  }));
}

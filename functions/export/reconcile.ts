/**
 * Reconciliation: lists the ids HQ returns today for every data source of an export, compares them with
 * the target's rows, and removes (or marks) the rows whose record is gone: deleted forms and cases, the
 * forms and cases of deleted mobile workers, forms archived without HQ re-indexing them, records that
 * no longer match the query's filters.
 *
 * The ids go to the target as they arrive (a temporary table in PostgreSQL), so memory stays flat in
 * the number of ids. Everything happens in one transaction: a reconcile that fails or is killed leaves
 * the target as it was, and one that ends has changed every table.
 */

import { LazyRecords } from '../commcare/page-body';
import type { PageRecords, PullPosition } from '../commcare/types';
import type { JsonObject, JsonValue } from '../common/json';
import type { SourcePlan } from '../query/types';
import type { DeletionMode } from '../sinks/types';
import { dataSourceId, type PageSource, type ProgressListener, type SourceProgress } from './run';

/** One table compared with HQ. */
export interface TableReconcile {
  readonly table: string;
  /** Rows compared (in `mark` mode, the rows not marked yet). */
  readonly rows: number;
  /** Rows whose record HQ no longer lists: removed or marked. */
  readonly gone: number;
}

/** Where a reconcile compares and removes. */
/** The reconcile run a target begins. */
export interface ReconcileRun {
  readonly runId: string;
  readonly checkpointKey: string;
  readonly project: string;
  /** Every table the reconcile may change (a PostgreSQL target refuses tables ccexport did not create). */
  readonly tables?: readonly string[];
}

export interface ReconcileTarget {
  /** Takes the export's lock and opens the transaction. */
  begin(run: ReconcileRun): Promise<void>;
  /** Ids HQ lists for the data source being compared (any order; repeats allowed). */
  addLiveIds(ids: readonly string[]): Promise<void>;
  /**
   * Counts, per table, the rows whose record is not among the ids added since the last call; throws
   * `ReconcileGuardError` when a table would lose more than `maxShare` of its rows, else removes or
   * marks them (uncommitted) and forgets the ids.
   */
  settle(
    tables: readonly string[],
    mode: Exclude<DeletionMode, 'ignore'>,
    deletedAt: Date,
    maxShare: number,
  ): Promise<TableReconcile[]>;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/** A reconcile that would remove or mark more than the allowed share of a table: nothing changed. */
export class ReconcileGuardError extends Error {
  constructor(
    readonly table: string,
    readonly gone: number,
    readonly rows: number,
    readonly maxShare: number,
  ) {
    super(
      `Reconcile stopped, nothing changed: table "${table}" would lose ${gone} of ${rows} rows ` +
        `(${((100 * gone) / rows).toFixed(1)}%, more than the ${(100 * maxShare).toFixed(0)}% allowed). ` +
        'This usually means a wrong project, key or filter rather than real deletions; if the deletions are ' +
        'real, raise the share (--reconcile-max-share, config reconcile.maxShare)',
    );
    this.name = 'ReconcileGuardError';
  }
}

/** Default largest share of a table one reconcile may remove or mark. */
export const DEFAULT_RECONCILE_MAX_SHARE = 0.2;

export interface ReconcilePlan {
  readonly project: string;
  readonly sources: readonly SourcePlan[];
  readonly checkpointKey: string;
  readonly pageSize: number;
  readonly mode: Exclude<DeletionMode, 'ignore'>;
  /** @default 0.2 */
  readonly maxShare?: number;
}

export interface ReconcileDeps {
  readonly source: PageSource;
  readonly target: ReconcileTarget;
  readonly runId: string;
  readonly progress?: ProgressListener;
  readonly now?: () => Date;
  /** Checked between pages: true stops the reconcile, changing nothing (`ReconcileStoppedError`). */
  readonly shouldStop?: () => boolean;
}

/** A reconcile stopped before it ended (`shouldStop`): its transaction rolled back, nothing changed. */
export class ReconcileStoppedError extends Error {
  constructor(readonly ids: number) {
    super(`Reconcile stopped after listing ${ids} ids, before comparing them; nothing changed`);
    this.name = 'ReconcileStoppedError';
  }
}

export interface ReconcileSummary {
  readonly tables: readonly TableReconcile[];
  readonly ids: number;
  readonly pages: number;
  /** Rows removed or marked, all tables together. */
  readonly gone: number;
}

/** HQ's id of a listed record: `id` (forms, case v1, users, ...), `case_id` (case v2), `location_id` (location v2). */
export function liveId(record: JsonObject): string | null {
  return idText(record.id ?? record.case_id ?? record.location_id);
}

/** An id as the targets key it (text), or null for a value that is not a string or number. */
function idText(id: JsonValue | undefined): string | null {
  return typeof id === 'string' || typeof id === 'number' ? String(id) : null;
}

/**
 * Case v1 filters with the same meaning in case v2 (`corehq/apps/hqcase/api/get_list.py`: `case_type`,
 * `owner_id`, `closed`, `external_id` are exact matches, as v1's term filters are).
 */
const CASE_V1_TO_V2: Readonly<Record<string, string>> = {
  type: 'case_type',
  owner_id: 'owner_id',
  closed: 'closed',
  external_id: 'external_id',
};

/**
 * The fields a reconcile needs from each case: its id, and `indexed_on`, on which the client drops the
 * records a cursor repeats and resumes a listing.
 */
export const CASE_ID_FIELDS = 'case_id,indexed_on';

/**
 * The cheapest listing of a source's ids HQ offers. Only case API v2 can leave fields out
 * (`fields=`, `corehq/apps/hqcase/api/field_filters.py`); the form and case v1 APIs (tastypie) have no
 * such parameter and would even read an unknown one as an Elasticsearch term filter, so they are asked
 * for their largest pages and nothing else. A case v1 source whose filters all exist in v2 is listed
 * through v2 (`include_deprecated` too: v1 lists cases of deprecated types), so a page of 5,000 cases
 * carries ids instead of whole cases; any other filter keeps v1, whose answers it defines.
 */
export function idListing(source: Pick<SourcePlan, 'resource' | 'params'>): {
  resource: SourcePlan['resource'];
  params: SourcePlan['params'];
} {
  if (source.resource === 'case-v2') {
    const { fields: _fields, exclude: _exclude, ...params } = source.params;
    return { resource: 'case-v2', params: { ...params, fields: [CASE_ID_FIELDS] } };
  }
  if (source.resource === 'case' && Object.keys(source.params).every((name) => name in CASE_V1_TO_V2)) {
    const params: Record<string, readonly string[]> = {};
    for (const [name, values] of Object.entries(source.params)) params[CASE_V1_TO_V2[name]!] = values;
    return {
      resource: 'case-v2',
      params: { ...params, include_deprecated: ['true'], fields: [CASE_ID_FIELDS] },
    };
  }
  return { resource: source.resource, params: source.params };
}

/**
 * Lists each source's ids with the query's own filters (forms without `include_archived`: an archived
 * form is not one HQ counts), in the largest pages HQ allows, then settles its tables.
 */
export async function runReconcile(deps: ReconcileDeps, plan: ReconcilePlan): Promise<ReconcileSummary> {
  const now = deps.now ?? (() => new Date());
  const maxShare = plan.maxShare ?? DEFAULT_RECONCILE_MAX_SHARE;
  await deps.target.begin({
    runId: deps.runId,
    checkpointKey: plan.checkpointKey,
    project: plan.project,
    tables: plan.sources.flatMap((s) => s.tables.map((t) => t.name)),
  });
  const tables: TableReconcile[] = [];
  let ids = 0;
  let pages = 0;
  try {
    for (const source of plan.sources) {
      const progress: SourceProgress = {
        dataSource: dataSourceId(source),
        tables: source.tables.map((t) => t.name),
        pages: 0,
        records: 0,
        rows: 0,
        archived: 0,
        totalCount: null,
        startedAt: Date.now(),
        resumedFrom: null,
      };
      deps.progress?.sourceStarted?.(progress);
      for await (const page of deps.source.pages({
        project: plan.project,
        ...idListing(source),
        pageSize: plan.pageSize,
      })) {
        await deps.target.addLiveIds(liveIds(page.records));
        progress.records += page.records.length;
        if (deps.shouldStop?.()) throw new ReconcileStoppedError(ids + progress.records);
        progress.pages += 1;
        if (progress.pages === 1) progress.totalCount = page.totalCount;
        deps.progress?.pageWritten?.(progress);
      }
      ids += progress.records;
      pages += progress.pages;
      const settled = await deps.target.settle(progress.tables, plan.mode, now(), maxShare);
      progress.rows = settled.reduce((n, t) => n + t.gone, 0);
      tables.push(...settled);
      deps.progress?.sourceFinished?.(progress);
    }
    await deps.target.commit();
  } catch (error) {
    await deps.target.abort();
    throw error;
  }
  return { tables, ids, pages, gone: tables.reduce((n, t) => n + t.gone, 0) };
}

/**
 * A target that keeps listed ids between invocations (the PostgreSQL output's staging table), for the
 * reconcile in Lambda slices.
 */
export interface StagedReconcileTarget extends ReconcileTarget {
  /** Forgets what earlier, abandoned reconciles of the export staged. */
  clearStaged(run: StagingRunId): Promise<void>;
  /** Stores ids of the `source`th data source durably, outside any transaction. */
  stageIds(run: StagingRunId, source: number, ids: readonly string[]): Promise<void>;
  /**
   * Makes every id staged so far durable before the slice hands back its cursor (a target that
   * stages ids in batches writes its last one here); not called when the listing fails.
   * @default - `stageIds` is durable by itself
   */
  flushStaged?(run: StagingRunId): Promise<void>;
  /** In the final transaction: the staged ids of a source join the ids compared at the next `settle`. */
  addStagedIds(run: StagingRunId, source: number): Promise<void>;
  /** In the final transaction: the staged ids go. */
  dropStagedIds(run: StagingRunId): Promise<void>;
  /** Releases what a slice that does not finish holds. */
  closeStaging(): Promise<void>;
}

export interface StagingRunId {
  readonly runId: string;
  readonly checkpointKey: string;
  readonly project: string;
}

/**
 * Where a sliced reconcile stands between invocations (it travels in the Step Functions continuation).
 * The ids listed so far are in the target's staging table; this says where the listing resumes.
 */
export interface ReconcileCursor {
  /** The data source being listed; `sources.length` once every one is. */
  readonly source: number;
  /** Where that source's listing resumes (null: from its start). */
  readonly position: PullPosition | null;
  /**
   * For each source listed to its end, where the listing ended (null for resources without a resume
   * point, which the final slice lists again whole).
   */
  readonly ends: readonly (PullPosition | null)[];
  readonly ids: number;
  readonly pages: number;
}

export type ReconcileSliceResult =
  | { readonly done: false; readonly cursor: ReconcileCursor; readonly pages: number }
  | { readonly done: true; readonly summary: ReconcileSummary; readonly pages: number };

/**
 * One slice of a reconcile that may take more than one invocation (Lambda's 15 minutes):
 *
 * 1. the sources are listed in order, each page's ids staged (committed) in the target, until the
 *    deadline (`shouldStop`); the cursor then says where the listing resumes. A slice that dies after
 *    staging a page and before returning is retried from the previous cursor: the page is staged twice,
 *    which the comparison does not mind.
 * 2. once every source is listed, the final slice takes the export's lock and opens the transaction,
 *    and for each source lists again from where its listing ended to HQ's end (records an export run
 *    added between two slices are listed there, so they are never taken for deleted; resources without
 *    a resume point are listed whole here), then compares and removes (or marks) as `runReconcile` does.
 *    The staged ids are deleted in the same transaction. A deadline in this step rolls it back and the
 *    next slice does it again.
 *
 * The tables change only in that last transaction: a reconcile stopped at any point leaves them
 * unchanged or complete.
 */
export async function runReconcileSlice(
  deps: Omit<ReconcileDeps, 'target'> & { readonly target: StagedReconcileTarget },
  plan: ReconcilePlan,
  previous: ReconcileCursor | null,
): Promise<ReconcileSliceResult> {
  const now = deps.now ?? (() => new Date());
  const maxShare = plan.maxShare ?? DEFAULT_RECONCILE_MAX_SHARE;
  const run: StagingRunId = { runId: deps.runId, checkpointKey: plan.checkpointKey, project: plan.project };
  const target = deps.target;
  let pagesThisSlice = 0;
  let cursor: ReconcileCursor = previous ?? { source: 0, position: null, ends: [], ids: 0, pages: 0 };
  try {
    if (previous === null) await target.clearStaged(run);
    while (cursor.source < plan.sources.length) {
      const source = plan.sources[cursor.source]!;
      let position = cursor.position;
      let ids = cursor.ids;
      let pages = cursor.pages;
      for await (const page of deps.source.pages({
        project: plan.project,
        ...idListing(source),
        pageSize: plan.pageSize,
        ...(position ? { from: position } : {}),
      })) {
        await target.stageIds(run, cursor.source, liveIds(page.records));
        ids += page.records.length;
        pages += 1;
        pagesThisSlice += 1;
        position = page.position;
        // A page without records made no progress (a resumed listing's end): stopping there could
        // repeat it slice after slice.
        if (page.records.length > 0 && deps.shouldStop?.()) {
          await target.flushStaged?.(run);
          // Without a resume point (offset paging) the source starts over; repeats do no harm.
          return {
            done: false,
            cursor: { ...cursor, position, ids, pages },
            pages: pagesThisSlice,
          };
        }
      }
      cursor = { source: cursor.source + 1, position: null, ends: [...cursor.ends, position], ids, pages };
    }
    await target.flushStaged?.(run);
  } finally {
    await target.closeStaging();
  }

  await target.begin({ ...run, tables: plan.sources.flatMap((s) => s.tables.map((t) => t.name)) });
  const tables: TableReconcile[] = [];
  let ids = cursor.ids;
  let pages = cursor.pages;
  try {
    for (const [index, source] of plan.sources.entries()) {
      const end = cursor.ends[index] ?? null;
      if (end !== null) await target.addStagedIds(run, index);
      for await (const page of deps.source.pages({
        project: plan.project,
        ...idListing(source),
        pageSize: plan.pageSize,
        ...(end !== null ? { from: end } : {}),
      })) {
        await target.addLiveIds(liveIds(page.records));
        ids += page.records.length;
        pages += 1;
        pagesThisSlice += 1;
        if (page.records.length > 0 && deps.shouldStop?.()) {
          await target.abort();
          return { done: false, cursor, pages: pagesThisSlice };
        }
      }
      tables.push(
        ...(await target.settle(
          source.tables.map((t) => t.name),
          plan.mode,
          now(),
          maxShare,
        )),
      );
    }
    await target.dropStagedIds(run);
    await target.commit();
  } catch (error) {
    await target.abort();
    throw error;
  }
  return {
    done: true,
    summary: { tables, ids, pages, gone: tables.reduce((n, t) => n + t.gone, 0) },
    pages: pagesThisSlice,
  };
}

/**
 * The `liveId` of each record. A form or case page held as HQ's bytes gives each record's `id` without
 * parsing the record (functions/commcare/page-body.ts); a record whose `id` is not a plain string or
 * number there is parsed and read by `liveId`, so the ids are the same either way.
 */
export function liveIds(records: PageRecords): string[] {
  const out: string[] = [];
  if (records instanceof LazyRecords && records.reads('id')) {
    for (let i = 0; i < records.length; i += 1) {
      const live = idText(records.value(i, 'id')) ?? liveId(records.at(i));
      if (live !== null) out.push(live);
    }
    return out;
  }
  for (const record of records) {
    const id = liveId(record);
    if (id !== null) out.push(id);
  }
  return out;
}

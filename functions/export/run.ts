/**
 * The export run loop: pulls each data source's pages from HQ, turns every record into table rows,
 * writes them to the sink, and commits rows together with the source's checkpoint.
 *
 * Pure core: everything it touches comes in as arguments, so the CLI, the Lambda slice handler and the
 * tests run the same code.
 */
import { setImmediate } from 'node:timers/promises';
import { unionOfKeyPaths } from '../commcare/key-paths';
import type { Page, PullPosition, PullRequest, QueryParams, RecordKeyPath } from '../commcare/types';
import type { JsonObject } from '../common/json';
import type { Cell, SourcePlan, TablePlan, TableSpec } from '../query/types';
import {
  DELETED_AT_COLUMN,
  DELETED_COLUMN,
  type DeletionMode,
  type ExportSink,
  type SourceCheckpoint,
} from '../sinks/types';
import { describeColumnChange, type QueryChanges, queryChanges, tableColumns } from './config-changes';
import { DeletionLog } from './deletion-log';
import { sourceLabel } from './progress';

/** What the loop needs from the HQ client. */
export interface PageSource {
  pages(request: PullRequest): AsyncIterable<Page>;
}

/** Receives progress; the CLI renders it on a TTY or as JSON lines. */
export interface ProgressListener {
  sourceStarted?(source: SourceProgress): void;
  pageWritten?(source: SourceProgress): void;
  sourceFinished?(source: SourceProgress): void;
}

export interface SourceProgress {
  readonly dataSource: string;
  readonly tables: readonly string[];
  pages: number;
  records: number;
  rows: number;
  /** Records seen archived in this pull, removed or marked (mode `remove`/`mark`). */
  archived: number;
  /** Records the pull was to fetch, as HQ counted them for its first request (null: HQ gives no count). */
  totalCount: number | null;
  readonly startedAt: number;
  resumedFrom: PullPosition | null;
}

export interface ExportPlan {
  readonly project: string;
  readonly sources: readonly SourcePlan[];
  /** `--checkpoint-key`, else the query file's MD5 (DET's rule). */
  readonly checkpointKey: string;
  readonly since?: string;
  readonly until?: string;
  /** Ignore stored checkpoints (DET `--start-over`). */
  readonly startOver: boolean;
  readonly pageSize: number;
  /**
   * Pages between commits. A commit makes rows and checkpoint durable together; for file outputs each
   * commit completes the current objects, so file runs commit only at the end (or at a slice's end).
   */
  readonly commitEveryPages: number;
  /**
   * Pull every data source at once (their requests share the client's per-project budget) instead of
   * one after another as DET does. @default false
   */
  readonly parallelSources?: boolean;
  /**
   * What to do with records HQ archived (`remove`, `mark`, `ignore`); see `DeletionMode`. With `remove`
   * or `mark`, form sources are pulled with `include_archived` (unless the query sends it already) and
   * an archived form's rows are removed or marked in the same run.
   * @default 'ignore'
   */
  readonly deletions?: DeletionMode;
  /**
   * The fingerprint of the query's config (an HQ export's `configFingerprint`), recorded with each
   * checkpoint so the next run can tell that the config changed. @default none recorded
   */
  readonly configFingerprint?: string;
}

export interface ExportDeps {
  readonly source: PageSource;
  readonly sink: ExportSink;
  readonly runId: string;
  readonly progress?: ProgressListener;
  /** One-off notes for the person running the export (a checkpoint taken over from DET). */
  readonly notice?: (message: string) => void;
  readonly now?: () => Date;
  /** Checked between pages: true asks the loop to commit and return early (Lambda slice deadline). */
  readonly shouldYield?: () => boolean;
}

export interface ExportSummary {
  /** False when the loop yielded before every source was complete. */
  readonly done: boolean;
  readonly sources: readonly SourceProgress[];
  readonly rows: number;
  readonly pages: number;
  readonly records: number;
  /** Records seen archived and removed or marked (deletion mode `remove` or `mark`). */
  readonly archived: number;
  /** The query compared with the last committed run of the same checkpoint key (also told through `notice`). */
  readonly changes: QueryChanges;
}

/** Records written between two turns of the event loop (see `writePage`). */
const YIELD_EVERY_RECORDS = 100;

/** Resources that page on `indexed_on` and so can resume from a checkpoint. */
const INCREMENTAL_RESOURCES = new Set(['form', 'case', 'case-v2']);

/** Stable name of a data source: the resource and its sorted filters. */
export function dataSourceId(source: Pick<SourcePlan, 'resource' | 'params'>): string {
  const params = Object.entries(source.params)
    .flatMap(([name, values]) => values.map((v) => `${name}=${v}`))
    .sort();
  return params.length > 0 ? `${source.resource}?${params.join('&')}` : source.resource;
}

/**
 * The tables as the `mark` mode writes them: `_deleted` and `_deleted_at` after the query's columns,
 * false and null for a live record, true and the time the run saw it archived otherwise.
 */
export function withDeletionColumns(source: SourcePlan): SourcePlan {
  return {
    ...source,
    tables: source.tables.map(
      (table): TablePlan => ({
        name: table.name,
        headings: [...table.headings, DELETED_COLUMN, DELETED_AT_COLUMN],
        dataTypes: [...table.dataTypes, 'boolean', 'datetime'],
        ...(table.valueKinds ? { valueKinds: [...table.valueKinds, null, null] } : {}),
        ...(table.missingValue !== undefined ? { missingValue: table.missingValue } : {}),
        ...(table.recordKeys ? { recordKeys: table.recordKeys } : {}),
        rowsFor: (record) => table.rowsFor(record),
      }),
    ),
  };
}

/**
 * The parameters a pull sends: form sources add `include_archived` when deletions are tracked, so an
 * archived form comes back (HQ leaves archived forms out without it; only its presence counts) and its
 * rows can go. A query that sends it already keeps its own value.
 */
export function pullParams(source: Pick<SourcePlan, 'resource' | 'params'>, mode: DeletionMode): QueryParams {
  if (mode === 'ignore' || source.resource !== 'form' || 'include_archived' in source.params)
    return source.params;
  return { ...source.params, include_archived: ['true'] };
}

/** Keys of a record the export itself reads, whatever the query: the id and `archived` (`isArchived`). */
const KEYS_READ_BY_EXPORT: readonly RecordKeyPath[] = [['archived'], ['id']];

/**
 * The parts of a record that the source's tables and the export read, as key paths, so the client may
 * leave the rest out of each record (`PullRequest.recordKeys`); undefined when some table may read any key.
 */
export function sourceRecordKeys(source: Pick<SourcePlan, 'tables'>): RecordKeyPath[] | undefined {
  const sets: (readonly RecordKeyPath[])[] = [KEYS_READ_BY_EXPORT];
  for (const table of source.tables) {
    if (!table.recordKeys) return undefined;
    sets.push(table.recordKeys);
  }
  return unionOfKeyPaths(sets);
}

/** HQ's `archived` is a JSON boolean; a text 'true' is accepted too (tastypie declares it a CharField). */
export function isArchived(record: JsonObject): boolean {
  return record.archived === true || record.archived === 'true';
}

export async function runExport(deps: ExportDeps, plan: ExportPlan): Promise<ExportSummary> {
  const now = deps.now ?? (() => new Date());
  const mode = plan.deletions ?? 'ignore';
  if (mode === 'mark') plan = { ...plan, sources: plan.sources.map(withDeletionColumns) };
  const tables: TableSpec[] = plan.sources.flatMap((s) => s.tables);
  // DET: checkpointing is disabled when --since or --until is given.
  const checkpointsEnabled = plan.since === undefined && plan.until === undefined;
  const snapshot = plan.startOver || !checkpointsEnabled;
  await deps.sink.begin(tables, {
    runId: deps.runId,
    checkpointKey: plan.checkpointKey,
    project: plan.project,
    snapshot,
    deletions: mode,
    ...(plan.configFingerprint !== undefined ? { configFingerprint: plan.configFingerprint } : {}),
  });
  let result: { done: boolean; progress: SourceProgress[] };
  let changes: QueryChanges;
  const pulls: SourcePull[] = [];
  try {
    for (const source of plan.sources) pulls.push(await openPull(deps, plan, source, checkpointsEnabled));
    changes = queryChanges(pulls);
    for (const change of changes.columnChanges) deps.notice?.(describeColumnChange(change));
    result =
      plan.parallelSources && pulls.length > 1
        ? await pullTogether(deps, plan, pulls, now)
        : await pullInTurn(deps, plan, pulls, now);
    await deps.sink.finish();
  } catch (error) {
    await deps.sink.abort(error);
    throw error;
  } finally {
    for (const pull of pulls) pull.archived.close();
  }
  const progress = result.progress;
  return {
    done: result.done,
    sources: progress,
    rows: sum(progress, (p) => p.rows),
    pages: sum(progress, (p) => p.pages),
    records: sum(progress, (p) => p.records),
    archived: sum(progress, (p) => p.archived),
    changes,
  };
}

/** One data source being exported: what to ask HQ for, and where it stands. */
interface SourcePull {
  readonly source: SourcePlan;
  readonly request: PullRequest;
  readonly useCheckpoint: boolean;
  readonly progress: SourceProgress;
  /** Position after the last page written. */
  position: PullPosition | null;
  /** Whether archived records are removed or marked (a form source, mode `remove` or `mark`). */
  readonly tracking: boolean;
  /**
   * Archived records since the last commit, by id; a later live version of one cancels it. Kept out
   * of memory beyond a fixed amount (a file output commits only at the end of the run).
   */
  readonly archived: DeletionLog;
  /**
   * The last committed checkpoint of this source, read even when the run starts over: its recorded
   * columns are what this run's tables are compared with. Null for DET's checkpoints (they record none).
   */
  readonly previous: SourceCheckpoint | null;
}

async function openPull(
  deps: ExportDeps,
  plan: ExportPlan,
  source: SourcePlan,
  checkpointsEnabled: boolean,
): Promise<SourcePull> {
  const dataSource = dataSourceId(source);
  const incremental = INCREMENTAL_RESOURCES.has(source.resource);
  const useCheckpoint = incremental && checkpointsEnabled;
  const found = useCheckpoint
    ? await deps.sink.readCheckpoint(
        plan.checkpointKey,
        plan.project,
        dataSource,
        source.tables.map((t) => t.name),
      )
    : null;
  const stored = plan.startOver ? null : found;
  if (stored?.takenOver)
    deps.notice?.(`${sourceLabel({ dataSource, tables: stored.tables })}: took over ${stored.takenOver}`);
  const progress: SourceProgress = {
    dataSource,
    tables: source.tables.map((t) => t.name),
    pages: 0,
    records: 0,
    rows: 0,
    archived: 0,
    totalCount: null,
    startedAt: Date.now(),
    resumedFrom: stored?.position ?? null,
  };
  const recordKeys = sourceRecordKeys(source);
  const request: PullRequest = {
    project: plan.project,
    resource: source.resource,
    params: pullParams(source, plan.deletions ?? 'ignore'),
    pageSize: plan.pageSize,
    ...(recordKeys ? { recordKeys } : {}),
    ...(stored ? { from: stored.position } : {}),
    ...(plan.since !== undefined && incremental ? { since: plan.since } : {}),
    ...(plan.until !== undefined && incremental ? { until: plan.until } : {}),
  };
  return {
    source,
    request,
    useCheckpoint,
    progress,
    position: stored?.position ?? null,
    tracking: (plan.deletions ?? 'ignore') !== 'ignore' && source.resource === 'form',
    archived: new DeletionLog(),
    previous: found?.takenOver ? null : found,
  };
}

/** Commits every row written so far with the checkpoints of `pulls` at the pages written. */
async function commitPulls(
  deps: ExportDeps,
  plan: ExportPlan,
  pulls: readonly SourcePull[],
  now: () => Date,
): Promise<void> {
  for (const pull of pulls) {
    if (pull.archived.size === 0) continue;
    if (!deps.sink.recordDeletions) pull.archived.clear();
    else
      for (const batch of pull.archived.drain()) await deps.sink.recordDeletions(pull.progress.tables, batch);
  }
  const checkpoints: SourceCheckpoint[] = [];
  for (const pull of pulls) {
    if (!pull.useCheckpoint || !pull.position) continue;
    checkpoints.push({
      checkpointKey: plan.checkpointKey,
      project: plan.project,
      dataSource: pull.progress.dataSource,
      tables: pull.progress.tables,
      position: pull.position,
      writtenAt: now().toISOString(),
      columns: tableColumns(pull.source),
      ...(plan.configFingerprint !== undefined ? { configFingerprint: plan.configFingerprint } : {}),
    });
  }
  await deps.sink.commit(checkpoints);
}

/**
 * Turns one page into rows and writes them; returns true when the loop should yield after it. With
 * deletions tracked, an archived form's rows are not written (`remove`) or written marked (`mark`), and
 * the form is kept for `recordDeletions` at the next commit, after the rows written before it.
 */
/** A record nested so deeply that reading it ran out of call stack; the run stops, naming it. */
export class RecordTooDeepError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RecordTooDeepError';
  }
}

/**
 * Query paths, JSON cells and writers walk a record recursively; a record nested thousands of levels
 * deep (no real HQ record is) exhausts the stack. That is turned into an error naming the record,
 * instead of a bare "Maximum call stack size exceeded".
 */
function locatedStackOverflow(
  error: unknown,
  record: JsonObject,
  table: string,
  pageNumber: number,
): RecordTooDeepError | null {
  if (!(error instanceof RangeError) || !/call stack/i.test(error.message)) return null;
  const id = recordId(record);
  return new RecordTooDeepError(
    `record ${id === null ? '(no id)' : `"${id}"`} on page ${pageNumber + 1} nests too deeply to be read for ` +
      `table "${table}" (the call stack ran out); no row of it was written after the last commit`,
    { cause: error },
  );
}

async function writePage(
  deps: ExportDeps,
  plan: ExportPlan,
  pull: SourcePull,
  page: Page,
  now: () => Date,
): Promise<boolean> {
  const { progress, source } = pull;
  const tables = source.tables;
  const mode = plan.deletions ?? 'ignore';
  let done = 0;
  for (const record of page.records) {
    // Let requests and answers of the pulls move between records: a page of rows can keep this thread
    // busy for a good part of an HQ round trip, and the next request waits for the thread.
    if (++done % YIELD_EVERY_RECORDS === 0) await setImmediate();
    const archived = pull.tracking && isArchived(record);
    const deletedAt = archived ? now() : null;
    const rowIds: Record<string, string[]> | null = archived ? {} : null;
    for (const table of tables) {
      try {
        const rows = table.rowsFor(record);
        if (mode === 'mark') for (const row of rows) row.push(archived, deletedAt);
        if (rowIds !== null) rowIds[table.name] = idsOf(table, rows);
        // `remove`: an archived form's rows are never written (removed at the commit if they exist).
        if (rows.length > 0 && !(archived && mode === 'remove')) {
          await deps.sink.writeRows(table.name, rows);
          progress.rows += rows.length;
        }
      } catch (error) {
        throw locatedStackOverflow(error, record, table.name, page.pageNumber) ?? error;
      }
    }
    if (pull.tracking) {
      const id = recordId(record);
      if (archived && id !== null) {
        pull.archived.set(id, { id, deletedAt: deletedAt!, reason: 'archived', rowIds: rowIds! });
        progress.archived += 1;
      } else if (id !== null) pull.archived.delete(id);
    }
  }
  // Every record is written: the page's body can go now rather than at the next full collection.
  page.records.release?.();
  progress.records += page.records.length;
  progress.pages += 1;
  // The pull's size is what its first request counted: later requests count only what is left from
  // their own `indexed_on_start` (or, in a windowed pull, their window), which would make the remaining
  // work look done long before it is.
  if (progress.pages === 1) progress.totalCount = page.totalCount;
  if (page.position) pull.position = page.position;
  deps.progress?.pageWritten?.(progress);
  // Yield only after a page that carried records: a slice that resumes at the very end reads one
  // empty page, and yielding there would report "not done" forever instead of letting the pull end.
  return page.records.length > 0 && (deps.shouldYield?.() ?? false);
}

/** DET's order: one source after another, each committed with its checkpoint when it ends. */
async function pullInTurn(
  deps: ExportDeps,
  plan: ExportPlan,
  pulls: readonly SourcePull[],
  now: () => Date,
): Promise<{ done: boolean; progress: SourceProgress[] }> {
  const progress: SourceProgress[] = [];
  for (const pull of pulls) {
    progress.push(pull.progress);
    deps.progress?.sourceStarted?.(pull.progress);
    let pagesSinceCommit = 0;
    for await (const page of deps.source.pages(pull.request)) {
      const yieldNow = await writePage(deps, plan, pull, page, now);
      pagesSinceCommit += 1;
      if (pagesSinceCommit >= plan.commitEveryPages || yieldNow) {
        await commitPulls(deps, plan, [pull], now);
        pagesSinceCommit = 0;
      }
      if (yieldNow) return { done: false, progress };
    }
    await commitPulls(deps, plan, [pull], now);
    deps.progress?.sourceFinished?.(pull.progress);
  }
  return { done: true, progress };
}

/**
 * Every source at once: their pages are fetched concurrently (within the client's per-project request
 * budget) and written as they arrive, each source's pages in its own order. One writer turns pages into
 * rows, so the sink sees one call at a time. A commit carries the checkpoint of every source at the
 * last page written of it: rows and positions stay consistent whichever source wrote last.
 */
async function pullTogether(
  deps: ExportDeps,
  plan: ExportPlan,
  pulls: readonly SourcePull[],
  now: () => Date,
): Promise<{ done: boolean; progress: SourceProgress[] }> {
  type Step = { index: number; result: IteratorResult<Page> };
  const iterators = pulls.map((pull) => {
    deps.progress?.sourceStarted?.(pull.progress);
    return deps.source.pages(pull.request)[Symbol.asyncIterator]();
  });
  const pending = new Map<number, Promise<Step>>();
  const ask = (index: number) => {
    const step = iterators[index]!.next().then((result) => ({ index, result }));
    // Failures surface when the step is awaited below; until then they must not go unhandled.
    step.catch(() => undefined);
    pending.set(index, step);
  };
  for (let index = 0; index < pulls.length; index += 1) ask(index);
  let pagesSinceCommit = 0;
  let done = true;
  try {
    while (pending.size > 0) {
      const { index, result } = await Promise.race(pending.values());
      pending.delete(index);
      const pull = pulls[index]!;
      if (result.done) {
        deps.progress?.sourceFinished?.(pull.progress);
        continue;
      }
      const yieldNow = await writePage(deps, plan, pull, result.value, now);
      pagesSinceCommit += 1;
      if (yieldNow) {
        done = false;
        break;
      }
      if (pagesSinceCommit >= plan.commitEveryPages) {
        await commitPulls(deps, plan, pulls, now);
        pagesSinceCommit = 0;
      }
      ask(index);
    }
    await commitPulls(deps, plan, pulls, now);
  } finally {
    // Stop the pulls still running (an early yield or a failure); their fetched pages are not written.
    // A pull with a request in flight stops once that request ends, without holding up this return.
    await Promise.allSettled(
      iterators.map((iterator, index) => {
        const stopped = iterator.return?.();
        if (!pending.has(index)) return stopped;
        stopped?.catch(() => undefined);
        return undefined;
      }),
    );
  }
  return { done, progress: pulls.map((p) => p.progress) };
}

function recordId(record: JsonObject): string | null {
  const id = record.id;
  return typeof id === 'string' || typeof id === 'number' ? String(id) : null;
}

/** The ids of a table's rows (text, as the sinks key them); none when the table has no id column. */
function idsOf(table: TableSpec, rows: readonly Cell[][]): string[] {
  const at = table.headings.indexOf('id');
  if (at < 0) return [];
  const out: string[] = [];
  for (const row of rows) {
    const id = row[at];
    if (id !== null && id !== undefined && id !== '')
      out.push(typeof id === 'object' ? JSON.stringify(id) : String(id));
  }
  return out;
}

function sum<T>(items: readonly T[], pick: (item: T) => number): number {
  return items.reduce((total, item) => total + pick(item), 0);
}

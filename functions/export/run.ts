/**
 * The export run loop: pulls each data source's pages from HQ, turns every record into table rows,
 * writes them to the sink, and commits rows together with the source's checkpoint.
 *
 * Pure core: everything it touches comes in as arguments, so the CLI, the Lambda slice handler and the
 * tests run the same code.
 */
import type { Page, PullPosition, PullRequest } from '../commcare/types';
import type { SourcePlan, TableSpec } from '../query/types';
import type { ExportSink, SourceCheckpoint } from '../sinks/types';

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
}

export interface ExportDeps {
  readonly source: PageSource;
  readonly sink: ExportSink;
  readonly runId: string;
  readonly progress?: ProgressListener;
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
}

/** Resources that page on `indexed_on` and so can resume from a checkpoint. */
const INCREMENTAL_RESOURCES = new Set(['form', 'case', 'case-v2']);

/** Stable name of a data source: the resource and its sorted filters. */
export function dataSourceId(source: Pick<SourcePlan, 'resource' | 'params'>): string {
  const params = Object.entries(source.params)
    .flatMap(([name, values]) => values.map((v) => `${name}=${v}`))
    .sort();
  return params.length > 0 ? `${source.resource}?${params.join('&')}` : source.resource;
}

export async function runExport(deps: ExportDeps, plan: ExportPlan): Promise<ExportSummary> {
  const now = deps.now ?? (() => new Date());
  const tables: TableSpec[] = plan.sources.flatMap((s) => s.tables);
  // DET: checkpointing is disabled when --since or --until is given.
  const checkpointsEnabled = plan.since === undefined && plan.until === undefined;
  const snapshot = plan.startOver || !checkpointsEnabled;
  await deps.sink.begin(tables, {
    runId: deps.runId,
    checkpointKey: plan.checkpointKey,
    project: plan.project,
    snapshot,
  });
  const progress: SourceProgress[] = [];
  let done = true;
  try {
    for (const source of plan.sources) {
      const result = await exportSource(deps, plan, source, checkpointsEnabled, now);
      progress.push(result.progress);
      if (!result.done) {
        done = false;
        break;
      }
    }
    await deps.sink.finish();
  } catch (error) {
    await deps.sink.abort(error);
    throw error;
  }
  return {
    done,
    sources: progress,
    rows: sum(progress, (p) => p.rows),
    pages: sum(progress, (p) => p.pages),
    records: sum(progress, (p) => p.records),
  };
}

async function exportSource(
  deps: ExportDeps,
  plan: ExportPlan,
  source: SourcePlan,
  checkpointsEnabled: boolean,
  now: () => Date,
): Promise<{ done: boolean; progress: SourceProgress }> {
  const dataSource = dataSourceId(source);
  const incremental = INCREMENTAL_RESOURCES.has(source.resource);
  const useCheckpoint = incremental && checkpointsEnabled;
  const stored =
    useCheckpoint && !plan.startOver
      ? await deps.sink.readCheckpoint(plan.checkpointKey, plan.project, dataSource)
      : null;
  const progress: SourceProgress = {
    dataSource,
    tables: source.tables.map((t) => t.name),
    pages: 0,
    records: 0,
    rows: 0,
    totalCount: null,
    startedAt: Date.now(),
    resumedFrom: stored?.position ?? null,
  };
  deps.progress?.sourceStarted?.(progress);

  const request: PullRequest = {
    project: plan.project,
    resource: source.resource,
    params: source.params,
    pageSize: plan.pageSize,
    ...(stored ? { from: stored.position } : {}),
    ...(plan.since !== undefined && incremental ? { since: plan.since } : {}),
    ...(plan.until !== undefined && incremental ? { until: plan.until } : {}),
  };

  let position: PullPosition | null = stored?.position ?? null;
  let pagesSinceCommit = 0;
  const commit = async () => {
    const checkpoints: SourceCheckpoint[] =
      useCheckpoint && position
        ? [
            {
              checkpointKey: plan.checkpointKey,
              project: plan.project,
              dataSource,
              tables: progress.tables,
              position,
              writtenAt: now().toISOString(),
            },
          ]
        : [];
    await deps.sink.commit(checkpoints);
    pagesSinceCommit = 0;
  };

  for await (const page of deps.source.pages(request)) {
    for (const record of page.records) {
      for (const table of source.tables) {
        const rows = table.rowsFor(record);
        if (rows.length > 0) {
          await deps.sink.writeRows(table.name, rows);
          progress.rows += rows.length;
        }
      }
    }
    progress.records += page.records.length;
    progress.pages += 1;
    progress.totalCount = page.totalCount;
    if (page.position) position = page.position;
    pagesSinceCommit += 1;
    if (pagesSinceCommit >= plan.commitEveryPages) await commit();
    deps.progress?.pageWritten?.(progress);
    // Yield only after a page that carried records: a slice that resumes at the very end reads one
    // empty page, and yielding there would report "not done" forever instead of letting the pull end.
    if (page.records.length > 0 && deps.shouldYield?.()) {
      await commit();
      return { done: false, progress };
    }
  }
  await commit();
  deps.progress?.sourceFinished?.(progress);
  return { done: true, progress };
}

function sum<T>(items: readonly T[], pick: (item: T) => number): number {
  return items.reduce((total, item) => total + pick(item), 0);
}

/**
 * Progress for long exports: on a terminal, one live line per data source (pages, records, rate, ETA
 * where HQ gives a total); otherwise JSON lines, one per page, that a log collector can parse.
 */
import type { ProgressListener, SourceProgress } from './run';

export interface ProgressOutput {
  write(text: string): unknown;
  /** Terminal width, where the output is a terminal. */
  readonly columns?: number;
}

export function formatRate(records: number, startedAt: number, nowMs: number): number {
  const seconds = Math.max((nowMs - startedAt) / 1000, 0.001);
  return records / seconds;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** One human line for a source: `form: 12 pages, 12,000 records, 3,100/s, ETA 40s`. */
export function describeProgress(p: SourceProgress, nowMs: number): string {
  const rate = formatRate(p.records, p.startedAt, nowMs);
  const parts = [
    `${p.pages} pages`,
    `${p.records.toLocaleString('en-US')} records`,
    `${p.rows.toLocaleString('en-US')} rows`,
    `${Math.round(rate).toLocaleString('en-US')} records/s`,
  ];
  // A resumed pull's first request counted from the checkpoint on, as its records are: the ETA holds.
  if (p.totalCount !== null && p.totalCount > 0) {
    const remaining = Math.max(p.totalCount - p.records, 0);
    parts.push(`ETA ${formatDuration(remaining / Math.max(rate, 1e-9))}`);
  }
  return `${sourceLabel(p)}: ${parts.join(', ')}`;
}

/** `households, household_members (form)`: the tables a person named, not the filter string. */
export function sourceLabel(p: Pick<SourceProgress, 'dataSource' | 'tables'>): string {
  const resource = p.dataSource.split('?')[0] ?? p.dataSource;
  return p.tables.length > 0 ? `${p.tables.join(', ')} (${resource})` : resource;
}

/** Cuts a status line to the terminal's width so that redrawing it never wraps. */
function fitToWidth(line: string, columns: number | undefined): string {
  const width = columns && columns > 10 ? columns - 1 : 119;
  return line.length > width ? `${line.slice(0, width - 1)}…` : line;
}

export function ttyProgress(out: ProgressOutput, now: () => number = Date.now): ProgressListener {
  let lastDraw = 0;
  return {
    sourceStarted(p) {
      const from = p.resumedFrom?.indexedOn ? ` from the checkpoint at ${p.resumedFrom.indexedOn}` : '';
      out.write(`${fitToWidth(`${sourceLabel(p)}: starting${from}`, out.columns)}\n`);
    },
    pageWritten(p) {
      const t = now();
      if (t - lastDraw < 100) return;
      lastDraw = t;
      out.write(`\r\x1b[2K${fitToWidth(describeProgress(p, t), out.columns)}`);
    },
    sourceFinished(p) {
      out.write(`\r\x1b[2K${fitToWidth(`${describeProgress(p, now())}, done`, out.columns)}\n`);
    },
  };
}

export function jsonLinesProgress(out: ProgressOutput, now: () => number = Date.now): ProgressListener {
  const line = (event: string, p: SourceProgress) => {
    const t = now();
    out.write(
      `${JSON.stringify({
        time: new Date(t).toISOString(),
        event,
        dataSource: p.dataSource,
        pages: p.pages,
        records: p.records,
        rows: p.rows,
        totalCount: p.totalCount,
        recordsPerSecond: Math.round(formatRate(p.records, p.startedAt, t)),
      })}\n`,
    );
  };
  return {
    sourceStarted: (p) => line('source-started', p),
    pageWritten: (p) => line('page', p),
    sourceFinished: (p) => line('source-finished', p),
  };
}

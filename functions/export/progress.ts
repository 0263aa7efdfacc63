/**
 * Progress for long exports: on a terminal, one live line per data source (pages, records, rate, ETA
 * where HQ gives a total); otherwise JSON lines, one per page, that a log collector can parse.
 */
import type { ProgressListener, SourceProgress } from './run';

export interface ProgressOutput {
  write(text: string): unknown;
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
  if (p.totalCount !== null && p.totalCount > 0 && p.resumedFrom === null) {
    const remaining = Math.max(p.totalCount - p.records, 0);
    parts.push(`ETA ${formatDuration(remaining / Math.max(rate, 1e-9))}`);
  }
  return `${p.dataSource}: ${parts.join(', ')}`;
}

export function ttyProgress(out: ProgressOutput, now: () => number = Date.now): ProgressListener {
  let lastDraw = 0;
  return {
    sourceStarted(p) {
      out.write(
        `${p.dataSource}: starting${p.resumedFrom?.indexedOn ? ` from ${p.resumedFrom.indexedOn}` : ''}\n`,
      );
    },
    pageWritten(p) {
      const t = now();
      if (t - lastDraw < 100) return;
      lastDraw = t;
      out.write(`\r\x1b[2K${describeProgress(p, t)}`);
    },
    sourceFinished(p) {
      out.write(`\r\x1b[2K${describeProgress(p, now())}, done\n`);
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

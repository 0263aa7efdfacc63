/**
 * What changed in a query since the last committed run under the same checkpoint key: the columns each
 * table gained or lost, and the config fingerprint the previous run recorded. Each checkpoint keeps the
 * headings of its tables (and the fingerprint of an HQ export's config) as they were when it was
 * committed, so the comparison is with the last run whose rows are durable, whichever machine ran it.
 *
 * An HQ export edited in HQ keeps its checkpoint key (`hq:<export id>`), so its edits show here; a query
 * file's key is its checksum, so an edited file starts a fresh export (DET's rule) with nothing to
 * compare, unless `--checkpoint-key` keeps the key.
 */
import type { SourcePlan } from '../query/types';
import type { SourceCheckpoint } from '../sinks/types';

/** Columns one table gained (`appeared`) and lost (`disappeared`), in heading order. */
export interface ColumnChange {
  readonly table: string;
  readonly appeared: readonly string[];
  readonly disappeared: readonly string[];
}

/** The query compared with the last committed run of the same checkpoint key and project. */
export interface QueryChanges {
  /** The config fingerprint the last committed run recorded; null when it recorded none. */
  readonly previousFingerprint: string | null;
  /** Tables whose columns changed; empty when none did or when there was nothing to compare with. */
  readonly columnChanges: readonly ColumnChange[];
  /** Whether a previous run recorded its columns (false: first run, or a checkpoint written before they were kept). */
  readonly compared: boolean;
}

/** The headings of a source's tables, as a checkpoint records them. */
export function tableColumns(source: Pick<SourcePlan, 'tables'>): Record<string, string[]> {
  return Object.fromEntries(source.tables.map((t) => [t.name, [...t.headings]]));
}

/**
 * Compares each source's tables with the columns its last checkpoint recorded. A table the previous run
 * did not have shows all its columns as appeared; a table it had that the query no longer feeds, all
 * its columns as disappeared.
 */
export function queryChanges(
  sources: readonly { source: Pick<SourcePlan, 'tables'>; previous: SourceCheckpoint | null }[],
): QueryChanges {
  const changes: ColumnChange[] = [];
  let previousFingerprint: string | null = null;
  let compared = false;
  for (const { source, previous } of sources) {
    if (!previous?.columns) continue;
    compared = true;
    previousFingerprint ??= previous.configFingerprint ?? null;
    const now = tableColumns(source);
    const names = [...Object.keys(now), ...Object.keys(previous.columns).filter((t) => !(t in now))];
    for (const table of names) {
      const after = now[table] ?? [];
      const before = previous.columns[table] ?? [];
      const appeared = after.filter((c) => !before.includes(c));
      const disappeared = before.filter((c) => !after.includes(c));
      if (appeared.length > 0 || disappeared.length > 0) changes.push({ table, appeared, disappeared });
    }
  }
  return { previousFingerprint, columnChanges: changes, compared };
}

/** One line of the run log for a table's change: `table "visits": columns appeared: a, b; disappeared: c`. */
export function describeColumnChange(change: ColumnChange): string {
  const parts = [
    ...(change.appeared.length > 0 ? [`appeared: ${change.appeared.join(', ')}`] : []),
    ...(change.disappeared.length > 0 ? [`disappeared: ${change.disappeared.join(', ')}`] : []),
  ];
  return `table "${change.table}": columns ${parts.join('; ')} (since the last run)`;
}

/** Column names a run record keeps per list; the run log has them all. */
export const RECORDED_COLUMNS_PER_LIST = 40;

/**
 * The changes as a run record keeps them (Step Functions state, capped at 256 KB for all of an
 * execution's projects): at most `RECORDED_COLUMNS_PER_LIST` names per list, the rest counted in a last
 * entry `+N more`.
 */
export function recordedColumnChanges(changes: readonly ColumnChange[]): ColumnChange[] {
  const cap = (names: readonly string[]) =>
    names.length <= RECORDED_COLUMNS_PER_LIST
      ? [...names]
      : [...names.slice(0, RECORDED_COLUMNS_PER_LIST), `+${names.length - RECORDED_COLUMNS_PER_LIST} more`];
  return changes.map((c) => ({ table: c.table, appeared: cap(c.appeared), disappeared: cap(c.disappeared) }));
}

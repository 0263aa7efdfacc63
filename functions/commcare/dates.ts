/**
 * HQ timestamps as the client needs them: parsed to an exact instant (microseconds since the epoch, so
 * values can be compared without string tricks) and formatted back as naive UTC. HQ's v1 resources answer
 * 400 to a real UTC offset in `indexed_on_start`/`_end`, and DET sends `isoformat()` of a naive datetime:
 * seconds always, microseconds only when non-zero (`2024-01-01T00:09:00`, `2017-09-02T20:05:35.459547`).
 */
import { CommCareConfigError } from './errors';

/** Microseconds since 1970-01-01T00:00:00Z. Safe as a JS number until the year 2255. */
export type Micros = number;

const TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/i;

/**
 * Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.ffffff]]` with an optional `Z` or `±HH[:MM]` offset.
 * A value without an offset is UTC (HQ's naive dates are UTC). Digits past microseconds are truncated.
 * Returns null when the text is not such a timestamp.
 */
export function parseTimestamp(text: string): Micros | null {
  const m = TIMESTAMP.exec(text.trim());
  if (!m) return null;
  const [, y, mo, d, h, mi, s, frac, zone] = m;
  const ms = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h ?? 0), Number(mi ?? 0), Number(s ?? 0));
  if (Number.isNaN(ms)) return null;
  const check = new Date(ms);
  // Date.UTC rolls 2024-02-31 over to March; HQ would reject it, so do we.
  if (check.getUTCDate() !== Number(d) || check.getUTCMonth() !== Number(mo) - 1) return null;
  let micros = ms * 1000 + Number((frac ?? '').padEnd(6, '0').slice(0, 6));
  if (zone && zone.toUpperCase() !== 'Z') {
    const sign = zone.startsWith('-') ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    const offsetMinutes = Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2) || '0');
    micros -= sign * offsetMinutes * 60_000_000;
  }
  return micros;
}

/** Like `parseTimestamp`, but a bad value is the caller's mistake. */
export function requireTimestamp(text: string, what: string): Micros {
  const micros = parseTimestamp(text);
  if (micros === null) {
    throw new CommCareConfigError(
      `${what} must be an ISO date or date-time such as 2024-01-31 or 2024-01-31T12:00:00Z; received "${text}"`,
    );
  }
  return micros;
}

/** Naive UTC ISO text as HQ accepts it back: no `Z`, microseconds kept only when non-zero. */
export function formatNaiveUtc(micros: Micros): string {
  const ms = Math.floor(micros / 1000);
  const fraction = micros - Math.floor(micros / 1_000_000) * 1_000_000;
  const seconds = new Date(ms).toISOString().slice(0, 19);
  return fraction === 0 ? seconds : `${seconds}.${String(fraction).padStart(6, '0')}`;
}

/** `2024-01-31T12:00:00Z` → `2024-01-31T12:00:00`; throws `CommCareConfigError` on a bad value. */
export function toNaiveUtc(text: string, what: string): string {
  return formatNaiveUtc(requireTimestamp(text, what));
}

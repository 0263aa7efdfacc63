/**
 * HQ timestamps as the client needs them: parsed to an exact instant (microseconds since the epoch, so
 * values can be compared without string tricks) and formatted back as naive UTC. HQ's v1 resources answer
 * 400 to a real UTC offset in `indexed_on_start`/`_end`, and DET sends `isoformat()` of a naive datetime:
 * seconds always, microseconds only when non-zero (`2024-01-01T00:09:00`, `2017-09-02T20:05:35.459547`).
 */
import { digitAt, digitsAt, hasDateTimeShape } from '../common/timestamp-text';
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
  const fast = parseCanonical(text);
  if (fast !== null) return fast;
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

const MONTH_DAYS = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
/** Multiplier turning the first (up to six) fraction digits into microseconds, by digit count. */
const TO_MICROS = [0, 100_000, 10_000, 1000, 100, 10, 1, 1, 1, 1];

/**
 * Days in `month` of a Gregorian `year`. Every operation runs for every date: an operation that only
 * some dates reach (a leap year, a 30-day month) would make V8 drop its optimized code of the caller
 * the first time such a date came.
 */
function daysInMonth(year: number, month: number): number {
  const leap = (year % 4 === 0 ? 1 : 0) - (year % 100 === 0 ? 1 : 0) + (year % 400 === 0 ? 1 : 0);
  return MONTH_DAYS[month]! + (month === 2 ? leap : 0);
}

/**
 * The shape HQ writes every `indexed_on` in, `YYYY-MM-DDTHH:MM:SS[.f{1,9}][Z]`, read without a regular
 * expression or a Date (the pull reads one per record). Null for anything else, including values the
 * general path reads in its own way (years before 1000, which `Date.UTC` takes as 19xx; fields that
 * roll over, such as hour 24), so that both paths always agree.
 */
function parseCanonical(text: string): Micros | null {
  if (!hasDateTimeShape(text)) return null;
  const n = text.length;
  const year = digitsAt(text, 0, 4);
  const month = digitsAt(text, 5, 2);
  const day = digitsAt(text, 8, 2);
  const hour = digitsAt(text, 11, 2);
  const minute = digitsAt(text, 14, 2);
  const second = digitsAt(text, 17, 2);
  if (year < 1000 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23) return null;
  if (minute < 0 || minute > 59 || second < 0 || second > 59 || day > daysInMonth(year, month)) return null;
  // Where the text ends before a Z or z (read at the last character, so that no read is out of bounds).
  const end = (text.charCodeAt(n - 1) | 0x20) === 0x7a ? n - 1 : n;
  let at = 19;
  let micros = 0;
  const sep = at < end ? text.charCodeAt(at) : 0;
  if (sep === 0x2e || sep === 0x2c) {
    // Up to nine digits; the first six are the microseconds.
    at += 1;
    let digits = 0;
    while (at < end && digits < 9) {
      const d = digitAt(text, at);
      if (d < 0) break;
      if (digits < 6) micros = micros * 10 + d;
      digits += 1;
      at += 1;
    }
    if (digits === 0) return null;
    micros *= TO_MICROS[digits]!;
  }
  if (at !== end) return null;
  return Date.UTC(year, month - 1, day, hour, minute, second) * 1000 + micros;
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

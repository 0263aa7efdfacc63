/**
 * Month names for keys, and when a rotation runs. Pure functions over instants and IANA time zones.
 *
 * A key is named `<prefix>-YYYY-MM` after the month it serves. The monthly rotation runs on the
 * "rotation day" of the month before, in the credential's time zone: day `29 - leadDays`, which is
 * exactly `leadDays` days before the 1st after a 28-day February and a little more before longer months
 * (a fixed day of month is what a monthly cron can express).
 */
import { utcOffsetMinutes, wallClock, zoneFormat } from '../common/time-zone';
import { KeyError } from './errors';

export interface YearMonth {
  readonly year: number;
  /** 1..12 */
  readonly month: number;
}

export interface LocalDateTime extends YearMonth {
  readonly day: number;
  readonly hour: number;
  readonly minute: number;
}

export class TimeZoneError extends KeyError {}

/** Runs `read` with a time zone, turning ICU's RangeError for an unknown zone into a `TimeZoneError`. */
function inZone<T>(timeZone: string, read: () => T): T {
  try {
    return read();
  } catch (cause) {
    if (!(cause instanceof RangeError)) throw cause;
    throw new TimeZoneError(`time zone "${timeZone}" is not an IANA time zone (e.g. "Africa/Nairobi")`, {
      cause,
    });
  }
}

export function isTimeZone(timeZone: string): boolean {
  try {
    zoneFormat(timeZone);
    return true;
  } catch {
    return false;
  }
}

/** Wall-clock date and time of an instant in a time zone. */
export function localDateTime(instant: Date, timeZone: string): LocalDateTime {
  const { year, month, day, hour, minute } = inZone(timeZone, () => wallClock(instant, timeZone));
  return { year, month, day, hour, minute };
}

/** Offset of the zone from UTC at an instant, in minutes (east positive). */
export function offsetMinutes(instant: Date, timeZone: string): number {
  return inZone(timeZone, () => utcOffsetMinutes(instant, timeZone));
}

/** The instant at which the wall clock in `timeZone` shows the given date and time. */
export function zonedInstant(
  year: number,
  month: number,
  day: number,
  timeZone: string,
  hour = 0,
  minute = 0,
): Date {
  const wall = Date.UTC(year, month - 1, day, hour, minute);
  // Two passes settle the offset on either side of a DST change.
  let guess = wall - offsetMinutes(new Date(wall), timeZone) * 60_000;
  guess = wall - offsetMinutes(new Date(guess), timeZone) * 60_000;
  return new Date(guess);
}

export function addMonths(ym: YearMonth, n: number): YearMonth {
  const index = ym.year * 12 + (ym.month - 1) + n;
  return { year: Math.floor(index / 12), month: (index % 12) + 1 };
}

export function compareMonths(a: YearMonth, b: YearMonth): number {
  return a.year * 12 + a.month - (b.year * 12 + b.month);
}

export function formatMonth(ym: YearMonth): string {
  return `${String(ym.year).padStart(4, '0')}-${String(ym.month).padStart(2, '0')}`;
}

export function monthOf(instant: Date, timeZone: string): YearMonth {
  const l = localDateTime(instant, timeZone);
  return { year: l.year, month: l.month };
}

/** `<prefix>-YYYY-MM`. */
export function keyNameFor(prefix: string, ym: YearMonth): string {
  return `${prefix}-${formatMonth(ym)}`;
}

/**
 * The month a key name serves, or undefined when the name is not `<prefix>-YYYY-MM`, optionally with
 * a letter for a replacement key of the same month (`det-2026-12-b`, from an emergency rotation).
 */
export function monthOfKeyName(prefix: string, name: string): YearMonth | undefined {
  if (!name.startsWith(`${prefix}-`)) return undefined;
  const m = /^(\d{4})-(\d{2})(?:-[b-z])?$/.exec(name.slice(prefix.length + 1));
  if (!m) return undefined;
  const month = Number(m[2]);
  if (month < 1 || month > 12) return undefined;
  return { year: Number(m[1]), month };
}

/**
 * A name for a replacement key in the month of `name`: `det-2026-12` → `det-2026-12-b` → `-c` …
 * (HQ refuses a name it has seen, deleted keys included, so a name is never used twice).
 */
export function replacementKeyName(prefix: string, name: string, month: YearMonth): string {
  const base = keyNameFor(prefix, month);
  const m = /-([b-z])$/.exec(name.slice(base.length));
  if (!name.startsWith(base)) return `${base}-b`;
  const letter = m?.[1] ? String.fromCharCode(m[1].charCodeAt(0) + 1) : 'b';
  return `${base}-${letter > 'z' ? 'z' : letter}`;
}

/** First instant of a month in a time zone. */
export function monthStart(ym: YearMonth, timeZone: string): Date {
  return zonedInstant(ym.year, ym.month, 1, timeZone);
}

/**
 * When a key for `ym` should expire: the end of the following month (so a late rotation still has a
 * whole month of overlap, and a forgotten key dies on its own).
 */
export function keyExpiry(ym: YearMonth, timeZone: string): Date {
  return monthStart(addMonths(ym, 2), timeZone);
}

/** Day of month (local) on which the rotation for the next month runs. */
export function rotationDay(leadDays: number): number {
  return Math.min(28, Math.max(1, 29 - Math.trunc(leadDays)));
}

export interface MonthPolicy {
  readonly timeZone: string;
  /** Rotate at least this many days before the month starts. */
  readonly leadDays: number;
}

/**
 * The month a key rotated at `now` serves: the next month once the local date has reached the rotation
 * day, else the current month. A retry later on the same day (or a day later) still yields the same month.
 */
export function targetMonth(now: Date, policy: MonthPolicy): YearMonth {
  const l = localDateTime(now, policy.timeZone);
  const current = { year: l.year, month: l.month };
  return l.day >= rotationDay(policy.leadDays) ? addMonths(current, 1) : current;
}

/** The instant of the next scheduled rotation after `now` (local noon on the rotation day). */
export function nextRotationAt(now: Date, policy: MonthPolicy): Date {
  const here = monthOf(now, policy.timeZone);
  const day = rotationDay(policy.leadDays);
  for (let i = 0; i < 2; i += 1) {
    const ym = addMonths(here, i);
    const at = zonedInstant(ym.year, ym.month, day, policy.timeZone, 12);
    if (at.getTime() > now.getTime()) return at;
  }
  const ym = addMonths(here, 2);
  return zonedInstant(ym.year, ym.month, day, policy.timeZone, 12);
}

/**
 * Secrets Manager `cron()` (UTC only) that fires on the rotation day at local noon. The offset is taken
 * at `reference`; a DST change moves the run by an hour, which keeps it on the same local day.
 */
export function rotationCron(policy: MonthPolicy, reference: Date): string {
  const ref = monthOf(reference, policy.timeZone);
  const at = zonedInstant(ref.year, ref.month, rotationDay(policy.leadDays), policy.timeZone, 12);
  return `cron(${at.getUTCMinutes()} ${at.getUTCHours()} ${at.getUTCDate()} * ? *)`;
}

/** Whole days from `from` to `to`, rounded down (negative when `to` is earlier). */
export function daysBetween(from: Date, to: Date): number {
  return Math.floor((to.getTime() - from.getTime()) / 86_400_000);
}

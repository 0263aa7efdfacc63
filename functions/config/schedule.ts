/**
 * EventBridge Scheduler cron expressions: validation with messages a user can act on, and the longest
 * gap between two runs (used for the "no successful run lately" alarm).
 *
 * Scheduler's cron has six fields, `minutes hours day-of-month month day-of-week year`, and exactly one
 * of day-of-month and day-of-week must be `?` (EventBridge "Cron expressions reference").
 */

import { utcOffsetMinutes } from '../common/time-zone';

const FIELD_NAMES = ['minutes', 'hours', 'day-of-month', 'month', 'day-of-week', 'year'] as const;
const FIELD_PATTERNS: readonly RegExp[] = [
  /^(\*|[0-5]?\d(-[0-5]?\d)?)(\/\d+)?(,(\*|[0-5]?\d(-[0-5]?\d)?)(\/\d+)?)*$/,
  /^(\*|[01]?\d|2[0-3])(-([01]?\d|2[0-3]))?(\/\d+)?(,([01]?\d|2[0-3])(-([01]?\d|2[0-3]))?(\/\d+)?)*$/,
  /^(\?|\*|L|LW|\d{1,2}W|[0-9,\-/*]+)$/,
  /^(\*|[0-9A-Za-z,\-/*]+)$/,
  /^(\?|\*|[1-7A-Za-z,\-/*#L]+)$/,
  /^(\*|[0-9,\-/*]+)$/,
];

/** Strips an optional `cron(...)` wrapper. */
export function cronFields(expression: string): string {
  const m = /^cron\((.*)\)$/.exec(expression.trim());
  return (m ? (m[1] as string) : expression).trim();
}

/** Why `expression` is not a Scheduler cron expression, or null when it is one. */
export function cronProblem(expression: string): string | null {
  const fields = cronFields(expression).split(/\s+/);
  const shown = JSON.stringify(expression);
  if (fields.length !== 6) {
    return `${shown} has ${fields.length} fields; expected 6 (minutes hours day-of-month month day-of-week year), e.g. "0 2 * * ? *"`;
  }
  for (let i = 0; i < 6; i++) {
    if (!(FIELD_PATTERNS[i] as RegExp).test(fields[i] as string)) {
      return `${shown}: ${JSON.stringify(fields[i])} is not a valid ${FIELD_NAMES[i]} field`;
    }
  }
  const dom = fields[2];
  const dow = fields[4];
  if ((dom === '?') === (dow === '?')) {
    return `${shown}: exactly one of day-of-month (${dom}) and day-of-week (${dow}) must be "?"`;
  }
  return null;
}

/** Expands a numeric cron field (`*`, `a`, `a-b`, `*\/n`, `a-b/n`, lists) to sorted values in [min, max]. */
function expand(field: string, min: number, max: number): number[] {
  const values = new Set<number>();
  for (const part of field.split(',')) {
    const [range, stepText] = part.split('/') as [string, string | undefined];
    const step = stepText ? Number(stepText) : 1;
    let from = min;
    let to = max;
    if (range !== '*') {
      const [a, b] = range.split('-');
      from = Number(a);
      to = b === undefined ? (stepText ? max : from) : Number(b);
    }
    for (let v = from; v <= to; v += Math.max(step, 1)) values.add(v);
  }
  return [...values].sort((x, y) => x - y);
}

/** Longest distance between consecutive values on a circle of `size` (a single value gives `size`). */
function maxCircularGap(values: readonly number[], size: number): number {
  if (values.length === 0) return size;
  let gap = 0;
  for (let i = 0; i < values.length; i++) {
    const here = values[i] as number;
    const next = i + 1 < values.length ? (values[i + 1] as number) : (values[0] as number) + size;
    gap = Math.max(gap, next - here);
  }
  return gap;
}

const DAY_NAMES: Record<string, number> = { SUN: 1, MON: 2, TUE: 3, WED: 4, THU: 5, FRI: 6, SAT: 7 };

/**
 * An upper bound of the time between two runs, in seconds, for schedules that run at least weekly;
 * null for rarer schedules (monthly, specific days of the month or months), whose gaps CloudWatch alarms
 * cannot watch (an alarm looks back at most 7 days). Assumes `cronProblem(expression) === null`.
 */
export function maxRunGapSeconds(expression: string): number | null {
  const [minutes, hours, dom, month, dow, year] = cronFields(expression).split(/\s+/) as string[];
  if (year !== '*' || month !== '*' || (dom !== '?' && dom !== '*')) return null;
  if (dow !== '?' && dow !== '*') {
    if (/[L#]/.test(dow as string)) return null;
    const numeric = (dow as string).toUpperCase().replace(/[A-Z]{3}/g, (d) => String(DAY_NAMES[d] ?? d));
    const days = expand(numeric, 1, 7);
    return maxCircularGap(days, 7) * 86_400;
  }
  const hourValues = expand(hours as string, 0, 23);
  if (hourValues.length < 24) return maxCircularGap(hourValues, 24) * 3_600;
  return maxCircularGap(expand(minutes as string, 0, 59), 60) * 60;
}

/** A Secrets Manager rotation schedule: a UTC `cron()` and the window length (`RotationRules`). */
export interface RotationRules {
  /** `cron(0 H D * ? *)`: minute 0, hour H (UTC), day of month D. */
  readonly scheduleExpression: string;
  /** Window length, `"<n>h"`. */
  readonly duration: string;
}

/** The longest rotation window we ask for: a rotation needs minutes, the window only spreads load. */
const ROTATION_WINDOW_HOURS = 4;

/**
 * Why Secrets Manager would refuse these rotation rules, or null. Secrets Manager's cron rules for a
 * rotation window: it starts on the hour (minute 0), lasts 1 to 24 hours, and "must not extend into
 * the next UTC day" (RotationRulesType, Duration), so start hour + duration <= 24.
 */
export function rotationRulesProblem(rules: RotationRules): string | null {
  const m = /^cron\((\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\)$/.exec(rules.scheduleExpression);
  const shown = JSON.stringify(rules.scheduleExpression);
  if (!m) return `${shown} is not a six-field cron() expression`;
  const [, minute, hour] = m as unknown as [string, string, string];
  if (minute !== '0')
    return `${shown}: a rotation window starts on the hour (minute 0), not minute ${minute}`;
  if (!/^\d{1,2}$/.test(hour) || Number(hour) > 23) {
    return `${shown}: expected one start hour (0-23), received ${JSON.stringify(hour)}`;
  }
  const d = /^(\d{1,2})h$/.exec(rules.duration);
  const hours = d ? Number(d[1]) : Number.NaN;
  if (!(hours >= 1 && hours <= 24)) {
    return `rotation window ${JSON.stringify(rules.duration)}: expected 1h to 24h`;
  }
  if (Number(hour) + hours > 24) {
    return `${shown} with a ${rules.duration} window ends after midnight UTC (hour ${hour} + ${hours} > 24); Secrets Manager refuses a window that extends into the next UTC day`;
  }
  return null;
}

/**
 * Secrets Manager rules for a monthly rotation on local day `day` (1-28) of `timeZone`, as close to
 * `localHour` as the rules allow. Secrets Manager schedules in UTC only, so the window is placed on UTC
 * date `day` (which every month has) at whole UTC hours where that UTC date and the local day overlap
 * in every month of the year (DST included): the local day of the rotation never changes, even where
 * local noon falls on the previous UTC date (east of UTC+12) or the next (UTC-12). The window is cut
 * to fit, never below one hour. Throws when Secrets Manager would still refuse the result.
 */
export function monthlyRotationRules(
  timeZone: string,
  day: number,
  localHour = 12,
  windowHours: number = ROTATION_WINDOW_HOURS,
): RotationRules {
  if (!Number.isInteger(day) || day < 1 || day > 28) {
    throw new Error(`monthlyRotationRules: day ${day} is not 1-28 (a day every month has)`);
  }
  // Offsets (hours, local = UTC + offset) in every month of a year.
  const offsets = Array.from({ length: 12 }, (_, month) =>
    utcOffsetHours(new Date(Date.UTC(2026, month, day, 12)), timeZone),
  );
  // The local day spans UTC hours [-offset, 24 - offset) of UTC date `day`; keep what every month shares.
  const from = Math.ceil(Math.max(0, ...offsets.map((o) => -o)));
  const to = Math.floor(Math.min(24, ...offsets.map((o) => 24 - o)));
  const hours = Math.max(1, Math.min(windowHours, to - from));
  const preferred = Math.floor(localHour - (offsets[0] as number));
  const hour = Math.min(Math.max(preferred, from), Math.max(from, to - hours));
  const rules = { scheduleExpression: `cron(0 ${hour} ${day} * ? *)`, duration: `${hours}h` };
  const problem = rotationRulesProblem(rules);
  if (problem) throw new Error(`monthlyRotationRules(${timeZone}, day ${day}): ${problem}`);
  return rules;
}

/** Hours `timeZone` is ahead of UTC at `instant` (negative west of Greenwich; may be fractional). */
function utcOffsetHours(instant: Date, timeZone: string): number {
  return utcOffsetMinutes(instant, timeZone) / 60;
}

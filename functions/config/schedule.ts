/**
 * EventBridge Scheduler cron expressions: validation with messages a user can act on, and the longest
 * gap between two runs (used for the "no successful run lately" alarm).
 *
 * Scheduler's cron has six fields, `minutes hours day-of-month month day-of-week year`, and exactly one
 * of day-of-month and day-of-week must be `?` (EventBridge "Cron expressions reference").
 */

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

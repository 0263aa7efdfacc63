/**
 * Wall-clock time in IANA time zones, read with `Intl.DateTimeFormat` (the one source of zone rules in
 * Node: the ICU data it ships). A formatter per zone is made once and kept: making one costs far more
 * than using it, and schedules and key months ask for the same few zones over and over.
 */

/** The date and time a clock in a time zone shows at an instant. */
export interface WallClock {
  readonly year: number;
  /** 1..12 */
  readonly month: number;
  readonly day: number;
  /** 0..23 */
  readonly hour: number;
  readonly minute: number;
  readonly second: number;
}

const formats = new Map<string, Intl.DateTimeFormat>();

/**
 * The formatter of a time zone's wall clock, made on first use.
 * @throws RangeError when `timeZone` is not an IANA time zone ICU knows
 */
export function zoneFormat(timeZone: string): Intl.DateTimeFormat {
  let format = formats.get(timeZone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formats.set(timeZone, format);
  }
  return format;
}

/** The wall clock of `timeZone` at `instant`. @throws RangeError for an unknown time zone */
export function wallClock(instant: Date, timeZone: string): WallClock {
  const parts: Record<string, number> = {};
  for (const p of zoneFormat(timeZone).formatToParts(instant)) {
    if (p.type !== 'literal') parts[p.type] = Number(p.value);
  }
  return {
    year: parts.year ?? 0,
    month: parts.month ?? 0,
    day: parts.day ?? 0,
    hour: parts.hour ?? 0,
    minute: parts.minute ?? 0,
    second: parts.second ?? 0,
  };
}

/**
 * Minutes `timeZone` is ahead of UTC at `instant` (negative west of Greenwich; zones such as
 * Asia/Kolkata are not whole hours). @throws RangeError for an unknown time zone
 */
export function utcOffsetMinutes(instant: Date, timeZone: string): number {
  const l = wallClock(instant, timeZone);
  const asUtc = Date.UTC(l.year, l.month - 1, l.day, l.hour, l.minute);
  const truncated = Math.floor(instant.getTime() / 60_000) * 60_000;
  return Math.round((asUtc - truncated) / 60_000);
}

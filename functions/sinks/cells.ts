import { createHash } from 'node:crypto';
import type { Cell } from '../query/types';

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

const PAD2 = Array.from({ length: 100 }, (_, i) => (i < 10 ? `0${i}` : `${i}`));
const PAD3 = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));
/** Epoch milliseconds of 1000-01-01 and 10000-01-01: the years with four digits. */
export const FOUR_DIGIT_YEARS_FROM = -30_610_224_000_000;
export const FOUR_DIGIT_YEARS_UNTIL = 253_402_300_800_000;

/** A civil date (proleptic Gregorian, month 1–12). */
export interface CivilDate {
  readonly year: number;
  readonly month: number;
  readonly day: number;
}

/** Days since 1970-01-01 to year, month and day: H. Hinnant's `civil_from_days`, integers only. */
export function civilFromDays(days: number): CivilDate {
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const dayOfEra = z - era * 146_097;
  const yearOfEra = Math.floor(
    (dayOfEra -
      Math.floor(dayOfEra / 1460) +
      Math.floor(dayOfEra / 36_524) -
      Math.floor(dayOfEra / 146_096)) /
      365,
  );
  const dayOfYear = dayOfEra - (365 * yearOfEra + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100));
  const mp = Math.floor((5 * dayOfYear + 2) / 153);
  const day = dayOfYear - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  return { year: yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day };
}

/**
 * `YYYY-MM-DD HH:MM:SS` (plus `.mmm` when `millis` and the milliseconds are not zero), in UTC, from
 * epoch milliseconds. Done with integer arithmetic (days to civil date, H. Hinnant's algorithm)
 * because it runs once per date cell and is several times faster than `Date.toISOString`.
 */
export function formatUtcDateTime(ms: number, millis = false): string {
  if (!(ms >= FOUR_DIGIT_YEARS_FROM && ms < FOUR_DIGIT_YEARS_UNTIL)) {
    const d = new Date(ms);
    const text =
      `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
    return millis && d.getUTCMilliseconds() !== 0 ? `${text}.${pad(d.getUTCMilliseconds(), 3)}` : text;
  }
  const days = Math.floor(ms / 86_400_000);
  let rest = ms - days * 86_400_000;
  const { year, month, day } = civilFromDays(days);
  const hours = Math.floor(rest / 3_600_000);
  rest -= hours * 3_600_000;
  const minutes = Math.floor(rest / 60_000);
  rest -= minutes * 60_000;
  const seconds = Math.floor(rest / 1000);
  rest -= seconds * 1000;
  const text = `${year}-${PAD2[month]}-${PAD2[day]} ${PAD2[hours]}:${PAD2[minutes]}:${PAD2[seconds]}`;
  return millis && rest !== 0 ? `${text}.${PAD3[rest]}` : text;
}

/** DET's csv rendering of a datetime (`str(datetime)` without microseconds), in UTC. */
export function formatDetDateTime(d: Date): string {
  return formatUtcDateTime(d.getTime());
}

/** `YYYY-MM-DD` in UTC. */
export function formatIsoDate(d: Date): string {
  return `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}

/** JSON for a cell; Dates (also nested ones) become DET date strings rather than ISO with `Z`. */
export function cellToJson(cell: Cell): string {
  // The replacer reads the raw value from its holder because Date.toJSON runs before the replacer.
  return JSON.stringify(cell, function (this: Record<string, unknown>, key: string, value: unknown) {
    const raw = key === '' ? cell : this[key];
    return raw instanceof Date ? formatDetDateTime(raw) : value;
  });
}

/**
 * A cell as text, the way DET's csv writer renders it: null → empty, booleans `True`/`False`
 * (Python's `str`), dates `YYYY-MM-DD HH:MM:SS`; objects and lists as JSON (DET writes Python `repr`,
 * which nothing can parse back).
 */
export function cellToText(cell: Cell): string {
  if (cell === null) return '';
  if (typeof cell === 'string') return cell;
  if (typeof cell === 'number') return String(cell);
  if (typeof cell === 'boolean') return cell ? 'True' : 'False';
  if (cell instanceof Date) return formatDetDateTime(cell);
  return cellToJson(cell);
}

/** Short, stable hex hash for names (not a security boundary). */
export function shortHash(text: string, length = 8): string {
  return createHash('sha256').update(text, 'utf8').digest('hex').slice(0, length);
}

/**
 * A table name or checkpoint key as one path segment of an object key: characters outside a safe set
 * become `_`, and a hash of the original is appended whenever anything changed, so two distinct names
 * never share an object prefix.
 */
export function safeKeySegment(name: string): string {
  let safe = name.replace(/[^\p{L}\p{N}._ -]/gu, '_').trim();
  if (safe === '' || safe === '.' || safe === '..') safe = '_';
  if (Buffer.byteLength(safe, 'utf8') > 200) safe = truncateUtf8(safe, 200);
  return safe === name ? safe : `${safe}-${shortHash(name)}`;
}

/** Cut a string to at most `maxBytes` UTF-8 bytes without splitting a character. */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
  let out = '';
  let bytes = 0;
  for (const ch of text) {
    const size = Buffer.byteLength(ch, 'utf8');
    if (bytes + size > maxBytes) break;
    out += ch;
    bytes += size;
  }
  return out;
}

/**
 * A value as an error message names it: its kind and its first 40 characters (`the string "n/a"`),
 * enough to find the form without copying a long answer into logs.
 */
export function describeValue(cell: Exclude<Cell, null>): string {
  if (cell instanceof Date) return `the date ${cell.toISOString()}`;
  if (typeof cell === 'object') return 'a JSON value';
  const text = String(cell);
  return `the ${typeof cell} "${text.length > 40 ? `${text.slice(0, 40)}…` : text}"`;
}

/**
 * Reading timestamps in the shape HQ writes them, `YYYY-MM-DDTHH:MM:SS...`, by character codes: the
 * client reads one per record (`indexed_on`) and a date column one per row, where regular expressions
 * and Date parsing cost more than the rest of the record. Each reader (commcare/dates.ts for instants,
 * query/functions.ts for DET's `str2date`) decides what may follow the seconds and what the fields mean.
 */

const ZERO = 0x30;

/** The digit at `at`, or -1. */
export function digitAt(text: string, at: number): number {
  const d = text.charCodeAt(at) - ZERO;
  return d >= 0 && d <= 9 ? d : -1;
}

/** The number the `count` digits at `at` make, or -1 when one of them is not a digit. */
export function digitsAt(text: string, at: number, count: number): number {
  let value = 0;
  for (let k = 0; k < count; k += 1) {
    const d = digitAt(text, at + k);
    if (d < 0) return -1;
    value = value * 10 + d;
  }
  return value;
}

/**
 * True when `text` has the separators of `YYYY-MM-DD?HH:MM:SS` in their places (`?` a `T`, `t` or space)
 * and at least its 19 characters; the digits are the caller's to read (`digitsAt`).
 */
export function hasDateTimeShape(text: string): boolean {
  if (text.length < 19 || text.charCodeAt(4) !== 0x2d || text.charCodeAt(7) !== 0x2d) return false;
  const t = text.charCodeAt(10);
  if (t !== 0x54 && t !== 0x74 && t !== 0x20) return false; // T, t or a space
  return text.charCodeAt(13) === 0x3a && text.charCodeAt(16) === 0x3a;
}

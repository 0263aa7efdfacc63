/** Texts near the shape HQ writes timestamps in, for checking the character-code readers against the general rules. */
import fc from 'fast-check';

/** `n` written with `width` digits, zeros in front. */
export function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

/**
 * `YYYY-MM-DD?HH:MM:SS` texts with fields just past their ranges (month 13, hour 25, ...), any of the
 * separators the readers accept or refuse at the `?`, then a fraction matching `fraction` and one of
 * `zones`.
 */
export function timestampTexts(options: {
  readonly fraction: RegExp;
  readonly zones: readonly string[];
}): fc.Arbitrary<string> {
  return fc
    .record({
      year: fc.integer({ min: 0, max: 9999 }),
      month: fc.integer({ min: 0, max: 13 }),
      day: fc.integer({ min: 0, max: 32 }),
      hour: fc.integer({ min: 0, max: 25 }),
      minute: fc.integer({ min: 0, max: 61 }),
      second: fc.integer({ min: 0, max: 61 }),
      fraction: fc.stringMatching(options.fraction),
      sep: fc.constantFrom('T', 't', ' ', 'x'),
      zone: fc.constantFrom(...options.zones),
    })
    .map(
      (v) =>
        `${pad(v.year, 4)}-${pad(v.month, 2)}-${pad(v.day, 2)}${v.sep}${pad(v.hour, 2)}:` +
        `${pad(v.minute, 2)}:${pad(v.second, 2)}${v.fraction}${v.zone}`,
    );
}

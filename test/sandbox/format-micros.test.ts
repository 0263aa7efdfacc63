import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatMicros } from '../../functions/sandbox/records';

/** HQ's timestamp text the plain way: `Date` to the millisecond (without its `Z`), then the microseconds. */
function throughDate(micros: number, zone: 'Z' | 'naive'): string {
  const ms = Math.floor(micros / 1000);
  const iso = new Date(ms).toISOString();
  const extra = String(Math.floor(micros - ms * 1000)).padStart(3, '0');
  return `${iso.slice(0, -1)}${extra}${zone === 'Z' ? 'Z' : ''}`;
}

describe('formatMicros', () => {
  it('writes what Date writes, with the microseconds after its milliseconds', () => {
    // Whole microseconds, as the sandbox's clocks count them: any a double holds exactly (years 1685 to
    // 2255), and many in the years HQ's records come from.
    const instant = fc.oneof(
      fc.maxSafeInteger(),
      fc.bigInt({ min: 1_500_000_000_000_000n, max: 1_800_000_000_000_000n }).map(Number),
    );
    fc.assert(
      fc.property(instant, fc.constantFrom('Z' as const, 'naive' as const), (micros, zone) => {
        expect(formatMicros(micros, zone)).toBe(throughDate(micros, zone));
      }),
      { numRuns: 20_000 },
    );
  });

  it('formats day boundaries, years before 1970 and before year 0', () => {
    for (const micros of [
      0,
      -1,
      -86_400_000_000,
      86_400_000_000 - 1,
      1_704_067_200_000_000,
      -62_198_755_200_000_000,
    ])
      expect(formatMicros(micros, 'naive')).toBe(throughDate(micros, 'naive'));
    expect(formatMicros(1_704_067_200_000_001, 'Z')).toBe('2024-01-01T00:00:00.000001Z');
  });

  it('refuses an instant Date cannot show, as Date does', () => {
    expect(() => formatMicros(Number.NaN, 'Z')).toThrow(RangeError);
    expect(() => formatMicros(Number.POSITIVE_INFINITY, 'naive')).toThrow(RangeError);
  });
});

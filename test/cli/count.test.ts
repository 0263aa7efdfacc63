import { describe, expect, it } from 'vitest';
import { formatCount } from '../../functions/cli/count';

describe('formatCount', () => {
  it("writes counts as toLocaleString('en-US') does", () => {
    const counts = [
      0,
      1,
      12,
      999,
      1000,
      1001,
      60_877,
      999_999,
      1_000_000,
      1_049_417,
      123_456_789,
      2 ** 53 - 1,
    ];
    for (let n = 1; n < 2 ** 53; n = n * 7 + 3) counts.push(n);
    for (const n of counts) expect(formatCount(n)).toBe(n.toLocaleString('en-US'));
  });
});

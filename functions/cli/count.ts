/**
 * Counts in the CLI's summaries, grouped by thousands as `toLocaleString('en-US')` writes them
 * ("60,877"), without it: the first locale-aware call of a process loads and initialises ICU's number
 * formatting data, ~20–30 ms of CPU, which at the end of a short export was a tenth of the run's CPU.
 */

/** `n` (a count: an integer ≥ 0) with a comma every three digits from the right, e.g. 1234567 → "1,234,567". */
export function formatCount(n: number): string {
  const digits = String(n);
  if (!Number.isSafeInteger(n) || n < 0) return digits;
  let grouped = '';
  let end = digits.length;
  for (let start = end - 3; start > 0; start -= 3) {
    grouped = `,${digits.slice(start, end)}${grouped}`;
    end = start;
  }
  return digits.slice(0, end) + grouped;
}

/**
 * What every sandbox resource answers with when a request is wrong (400, 404) and how filter dates are
 * read, shared by the tastypie resources (serve.ts) and the cursor views (cursor-resources.ts).
 */

/** A 400 answer: `{"error": message}` (tastypie BadRequest and the case v2 view both answer so). */
export class SandboxBadRequest extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SandboxBadRequest';
  }
}

/** A 404 answer with `{"error": message}` (for example a UCR data source that does not exist). */
export class SandboxNotFound extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SandboxNotFound';
  }
}

const DATE_RE =
  /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?(Z|[+-]\d{2}:?\d{2})?$/;

/**
 * Parses a filter date to microseconds since the epoch. v1 (tastypie) accepts naive values and the
 * legacy `YYYY-MM-DDTHH:MMZ` only: "A real UTC offset such as +00:00 gives 400" (ref §2.3), and the
 * client must "remove the Z before sending the value back (v1 rejects offsets)" (ref §8).
 * v2 accepts `Z` and offsets (ref §2.6).
 */
export function parseFilterDate(name: string, value: string, style: 'v1' | 'v2'): number {
  const m = DATE_RE.exec(value.trim());
  const expected =
    style === 'v1'
      ? 'a naive UTC date or datetime (YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS or YYYY-MM-DDTHH:MM:SS.ffffff)'
      : 'an ISO 8601 date or datetime';
  if (!m) throw new SandboxBadRequest(`'${name}' must be ${expected}; got '${value}'`);
  const [, y, mo, d, h, mi, s, frac, zone] = m;
  if (style === 'v1' && zone !== undefined && !(zone === 'Z' && s === undefined && h !== undefined))
    throw new SandboxBadRequest(
      `'${name}' must be ${expected}; got '${value}' (time zone offsets are not accepted)`,
    );
  const fields = [
    Number(y),
    Number(mo) - 1,
    Number(d),
    Number(h ?? 0),
    Number(mi ?? 0),
    Number(s ?? 0),
  ] as const;
  let ms = Date.UTC(...fields);
  // Python's strptime refuses 2024-02-30, month 13 or 25:61; Date.UTC would roll them over silently.
  const back = new Date(ms);
  const rolledOver =
    back.getUTCFullYear() !== fields[0] ||
    back.getUTCMonth() !== fields[1] ||
    back.getUTCDate() !== fields[2] ||
    back.getUTCHours() !== fields[3] ||
    back.getUTCMinutes() !== fields[4] ||
    back.getUTCSeconds() !== fields[5];
  if (Number.isNaN(ms) || rolledOver)
    throw new SandboxBadRequest(
      style === 'v1'
        ? `Bad query parameter: Unknown date format: ${value}`
        : `'${name}' must be ${expected}; got '${value}'`,
    );
  if (zone && zone !== 'Z') {
    const sign = zone.startsWith('-') ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    ms -= sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2, 4))) * 60_000;
  }
  return ms * 1000 + (frac ? Number(frac.padEnd(6, '0')) : 0);
}

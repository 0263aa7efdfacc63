/**
 * DET's built-in functions (`commcare_export/env.py::BuiltInEnv`) with its results on the same inputs.
 * Values arrive as the evaluator produces them (matches, lists, scalars); functions DET decorates with
 * `@unwrap('val')` unwrap their first argument the same way.
 */
import { createHash } from 'node:crypto';
import { digitAt, digitsAt, hasDateTimeShape } from '../common/timestamp-text';
import { QueryRuntimeError } from './errors';
import { Datum, formatPyDatetime, isDict, pyRepr, pyStr, pyTruthy } from './jsonpath';
import { Matches, notVal, unwrapVal } from './values';

/** What a function may need beyond its arguments. */
export interface FnContext {
  /** `--commcare-hq` base URL, no trailing slash. */
  readonly baseUrl: string;
  /** Looks a path up in the current row's environment (`$.domain`, `$.id`). */
  lookup(path: string): unknown;
}

export type Builtin = (ctx: FnContext, args: unknown[]) => unknown;

const u = unwrapVal;

function toUnicode(v: unknown): string {
  return typeof v === 'string' ? v : pyStr(v);
}

/** Python's `str.split()` with no separator. */
// Python's str.isspace set: Unicode whitespace plus U+001C..U+001F and U+0085.
const PY_SPACE = new RegExp(`[\\s${String.fromCharCode(0x1c, 0x1d, 0x1e, 0x1f, 0x85)}]+`, 'u');
export function pySplit(s: string): string[] {
  return s.split(PY_SPACE).filter((x) => x.length > 0);
}

/** Python `int(x)` for str/number/bool; undefined when Python raises ValueError. */
function pyInt(v: unknown): number | undefined {
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v === 'number') return Number.isFinite(v) ? Math.trunc(v) : undefined;
  if (typeof v === 'string') {
    const t = v.trim();
    if (!/^[+-]?\d+(?:_\d+)*$/.test(t)) return undefined;
    return Number.parseInt(t.replace(/_/g, ''), 10);
  }
  return undefined;
}

/** Python `float(x)` for a string; undefined on ValueError. */
function pyFloat(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v !== 'string') return undefined;
  const t = v.trim().replace(/(?<=\d)_(?=\d)/g, '');
  if (/^[+-]?(?:inf|infinity)$/i.test(t)) return t.startsWith('-') ? -Infinity : Infinity;
  if (/^[+-]?nan$/i.test(t)) return Number.NaN;
  if (!/^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/.test(t)) return undefined;
  return Number.parseFloat(t);
}

export function str2bool(v: unknown): boolean {
  v = u(v);
  if (notVal(v)) return false;
  if (typeof v === 'boolean') return v;
  const s = toUnicode(v);
  return s.length > 0 && ['true', 't', '1'].includes(s.toLowerCase());
}

export function str2num(v: unknown): number | null {
  v = u(v);
  if (notVal(v)) return null;
  const i = pyInt(v);
  if (i !== undefined) return i;
  const f = pyFloat(v);
  return f === undefined ? null : f;
}

const MONTHS: Record<string, number> = {
  jan: 1,
  feb: 2,
  mar: 3,
  apr: 4,
  may: 5,
  jun: 6,
  jul: 7,
  aug: 8,
  sep: 9,
  sept: 9,
  oct: 10,
  nov: 11,
  dec: 12,
  january: 1,
  february: 2,
  march: 3,
  april: 4,
  june: 6,
  july: 7,
  august: 8,
  september: 9,
  october: 10,
  november: 11,
  december: 12,
};

/** Days in `month` (1–12) of `year`, as `Date.UTC` counts them (it takes years 0–99 as 1900–1999). */
function daysInMonth(year: number, month: number): number {
  const y = year >= 0 && year < 100 ? year + 1900 : year;
  // Every operation runs for every date (see commcare/dates.ts `daysInMonth`).
  const leap = (y % 4 === 0 ? 1 : 0) - (y % 100 === 0 ? 1 : 0) + (y % 400 === 0 ? 1 : 0);
  return MONTH_DAYS[month]! + (month === 2 ? leap : 0);
}

const MONTH_DAYS = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function mkDate(y: number, mo: number, d: number, h = 0, mi = 0, s = 0, offsetMin = 0): Date | null {
  if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59) return null;
  if (d > daysInMonth(y, mo)) return null;
  const t = Date.UTC(y, mo - 1, d, h, mi, s) - offsetMin * 60_000;
  const out = new Date(t);
  if (y < 100) out.setUTCFullYear(y);
  return out;
}

function tzOffset(tz: string | undefined): number | null {
  if (!tz) return 0;
  if (tz === 'Z' || tz.toUpperCase() === 'UTC' || tz.toUpperCase() === 'GMT') return 0;
  const m = /^([+-])(\d{2}):?(\d{2})?$/.exec(tz);
  if (!m) return null;
  const mins = Number(m[2]) * 60 + Number(m[3] ?? 0);
  return m[1] === '-' ? -mins : mins;
}

/**
 * `str2date`: dateutil's parser for the shapes HQ and spreadsheets produce (ISO 8601 with or without
 * time/zone, `YYYYMMDD`, `M/D/Y` month-first unless the first number cannot be a month, `1 Jan 2020`,
 * `Jan 1, 2020`). Zone-aware values are converted to UTC; microseconds dropped; the result is a naive
 * datetime held as a `Date` whose UTC fields are the wall-clock fields.
 */
export function str2date(v: unknown): Date | null {
  v = u(v);
  if (!pyTruthy(v)) return null;
  if (v instanceof Date) return new Date(Math.floor(v.getTime() / 1000) * 1000);
  const s = toUnicode(v).trim();
  const iso = isoDateTime(s);
  if (iso !== undefined) return iso;
  let m =
    /^(\d{4})-?(\d{2})-?(\d{2})(?:[T ](\d{1,2}):?(\d{2})(?::?(\d{2})(?:[.,]\d+)?)?\s*(Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?)?$/i.exec(
      s,
    );
  if (m && (s.includes('-') || s.length === 8 || s.includes('T'))) {
    const off = tzOffset(m[7]);
    if (off === null) return null;
    return mkDate(+m[1]!, +m[2]!, +m[3]!, +(m[4] ?? 0), +(m[5] ?? 0), +(m[6] ?? 0), off);
  }
  m = /^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4}|\d{2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$/.exec(s);
  if (m) {
    let a = +m[1]!;
    let b = +m[2]!;
    let y = +m[3]!;
    if (m[3]!.length === 2) y += y < 69 ? 2000 : 1900;
    if (a > 12 && b <= 12) [a, b] = [b, a];
    return mkDate(y, a, b, +(m[4] ?? 0), +(m[5] ?? 0), +(m[6] ?? 0));
  }
  m = /^(\d{4})[/.](\d{1,2})[/.](\d{1,2})$/.exec(s);
  if (m) return mkDate(+m[1]!, +m[2]!, +m[3]!);
  m = /^(\d{1,2})(?:st|nd|rd|th)?[ -]([A-Za-z]+)\.?,?[ -](\d{4})$/.exec(s);
  if (m && MONTHS[m[2]!.toLowerCase()]) return mkDate(+m[3]!, MONTHS[m[2]!.toLowerCase()]!, +m[1]!);
  m = /^([A-Za-z]+)\.? (\d{1,2})(?:st|nd|rd|th)?,? (\d{4})$/.exec(s);
  if (m && MONTHS[m[1]!.toLowerCase()]) return mkDate(+m[3]!, MONTHS[m[1]!.toLowerCase()]!, +m[2]!);
  return null;
}

/**
 * `str2date` of the shape HQ writes its timestamps in, `YYYY-MM-DDTHH:MM:SS[.f+][Z]`, read without the
 * regular expressions (a date column reads one per row); undefined for any other text, which the
 * general rules read.
 */
function isoDateTime(s: string): Date | null | undefined {
  if (!hasDateTimeShape(s)) return undefined;
  const n = s.length;
  // Where the text ends before a Z (a lower-case z is no zone to DET's rules); read at the last
  // character, so that no read is out of bounds.
  const end = s.charCodeAt(n - 1) === 0x5a ? n - 1 : n;
  let at = 19;
  const sep = at < end ? s.charCodeAt(at) : 0;
  if (sep === 0x2e || sep === 0x2c) {
    const from = at + 1;
    at = from;
    while (at < end && digitAt(s, at) >= 0) at += 1;
    if (at === from) return undefined;
  }
  if (at !== end) return undefined;
  const year = digitsAt(s, 0, 4);
  const month = digitsAt(s, 5, 2);
  const day = digitsAt(s, 8, 2);
  const hour = digitsAt(s, 11, 2);
  const minute = digitsAt(s, 14, 2);
  const second = digitsAt(s, 17, 2);
  if (year < 0 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0) return undefined;
  return mkDate(year, month, day, hour, minute, second);
}

export function bool2int(v: unknown): number {
  return str2bool(v) ? 1 : 0;
}

export function sha1(v: unknown): string | null {
  v = u(v);
  if (notVal(v)) return null;
  return createHash('sha1').update(pyStr(v), 'utf8').digest('hex');
}

export function selectedAt(v: unknown, index: unknown): string | null {
  v = u(v);
  if (!pyTruthy(v)) return null;
  const i = pyInt(index);
  if (i === undefined) return 'Error: index must be an integer';
  const parts = pySplit(toUnicode(v));
  const k = i < 0 ? parts.length + i : i;
  return k >= 0 && k < parts.length ? parts[k]! : null;
}

export function selected(v: unknown, ref: unknown): boolean | null {
  v = u(v);
  if (!pyTruthy(v)) return null;
  return pySplit(toUnicode(v)).includes(ref as string);
}

export function countSelected(v: unknown): number | null {
  v = u(v);
  if (!pyTruthy(v)) return null;
  return pySplit(toUnicode(v)).length;
}

/** Python's `json.dumps` with default settings (`ensure_ascii`, `', '` and `': '` separators). */
export function pyJsonDumps(v: unknown): string | undefined {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return 'NaN';
    if (!Number.isFinite(v)) return v > 0 ? 'Infinity' : '-Infinity';
    return String(v);
  }
  if (typeof v === 'string') {
    return JSON.stringify(v).replace(/[\u007f-\uffff]/g, (c) =>
      c === '\u007f' ? c : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
    );
  }
  if (Array.isArray(v)) {
    const items = v.map(pyJsonDumps);
    return items.includes(undefined) ? undefined : `[${items.join(', ')}]`;
  }
  if (isDict(v)) {
    const parts: string[] = [];
    for (const [k, x] of Object.entries(v)) {
      const s = pyJsonDumps(x);
      if (s === undefined) return undefined;
      parts.push(`${pyJsonDumps(k)}: ${s}`);
    }
    return `{${parts.join(', ')}}`;
  }
  return undefined;
}

export function json2str(v: unknown): string | null {
  v = u(v);
  if (typeof v === 'string') return v;
  const s = pyJsonDumps(v);
  if (s === undefined)
    throw new QueryRuntimeError(`json2str: Object of type ${typeName(v)} is not JSON serializable`);
  return s;
}

function typeName(v: unknown): string {
  if (v instanceof Date) return 'datetime';
  if (typeof v === 'function') return 'function';
  return typeof v;
}

export function formatUuid(v: unknown): string | null {
  v = u(v);
  if (!pyTruthy(v)) return null;
  let s: string;
  if (typeof v === 'number' && Number.isInteger(v)) s = `${v < 0 ? '-' : ''}0x${Math.abs(v).toString(16)}`;
  else if (typeof v === 'string') s = v;
  else return null;
  // uuid.UUID(hex): drop 'urn:', 'uuid:', surrounding braces and hyphens; 32 chars; int(hex, 16).
  s = s.replace(/urn:/g, '').replace(/uuid:/g, '');
  s = s.replace(/^[{}]+|[{}]+$/g, '').replace(/-/g, '');
  if (s.length !== 32) return null;
  const t = s.trim();
  const m = /^([+-]?)(?:0[xX]_?)?([0-9a-fA-F]+(?:_[0-9a-fA-F]+)*)$/.exec(t);
  if (!m || m[1] === '-') return null;
  const hex = BigInt(`0x${m[2]!.replace(/_/g, '')}`).toString(16);
  if (hex.length > 32) return null;
  const h = hex.padStart(32, '0');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function substr(v: unknown, start: unknown, end: unknown): string | null {
  v = u(v);
  if (!pyTruthy(v)) return null;
  if (typeof start !== 'number' || typeof end !== 'number' || start < 0 || end < 0) return null;
  return Array.from(toUnicode(v)).slice(start, end).join('');
}

export function unique(v: unknown): unknown {
  v = u(v);
  if (!Array.isArray(v)) return v;
  const seen = new Set<string>();
  const out: unknown[] = [];
  for (const x of v) {
    const k = typeof x === 'string' ? `s${x}` : `j${JSON.stringify(x)}`;
    if (!seen.has(k)) {
      seen.add(k);
      out.push(x);
    }
  }
  return out;
}

/** Python `str.format` with positional `{}` / `{0}` fields, `{{`/`}}` escapes and `!r`/`!s`. */
export function pyFormat(fmt: string, args: unknown[]): string {
  let auto = 0;
  return fmt.replace(/\{\{|\}\}|\{([^{}]*)\}/g, (whole, field: string | undefined) => {
    if (whole === '{{') return '{';
    if (whole === '}}') return '}';
    const [head = '', conv] = (field ?? '').split(':')[0]!.split('!');
    let idx: number;
    if (head === '') idx = auto++;
    else if (/^\d+$/.test(head)) idx = Number(head);
    else throw new QueryRuntimeError(`template: named field {${head}} has no value (KeyError: '${head}')`);
    if (idx >= args.length)
      throw new QueryRuntimeError(
        `template: Replacement index ${idx} out of range for positional args tuple (format ${JSON.stringify(fmt)})`,
      );
    const a = args[idx];
    return conv === 'r' ? pyRepr(a) : pyStr(a);
  });
}

export function template(fmt: unknown, ...args: unknown[]): string {
  return pyFormat(String(fmt), args.map(u));
}

function pyAdd(a: unknown, b: unknown): unknown {
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  if (typeof a === 'string' && typeof b === 'string') return a + b;
  if (Array.isArray(a) && Array.isArray(b)) return [...a, ...b];
  throw new QueryRuntimeError(`unsupported operand types for +: ${pyRepr(a)} and ${pyRepr(b)}`);
}

function num(op: string, a: unknown, b: unknown): [number, number] {
  const na = typeof a === 'boolean' ? Number(a) : a;
  const nb = typeof b === 'boolean' ? Number(b) : b;
  if (typeof na !== 'number' || typeof nb !== 'number')
    throw new QueryRuntimeError(`unsupported operand types for ${op}: ${pyRepr(a)} and ${pyRepr(b)}`);
  return [na, nb];
}

function cmp(op: string, a: unknown, b: unknown): boolean {
  let x: unknown = a;
  let y: unknown = b;
  if (!(typeof x === 'string' && typeof y === 'string')) [x, y] = num(op, a, b);
  switch (op) {
    case '>':
      return (x as number) > (y as number);
    case '>=':
      return (x as number) >= (y as number);
    case '<':
      return (x as number) < (y as number);
    default:
      return (x as number) <= (y as number);
  }
}

function docUrl(ctx: FnContext, kind: string): string {
  return pyFormat(`{}/a/{}/reports/${kind}/{}/`, [
    ctx.baseUrl,
    u(ctx.lookup('$.domain')),
    u(ctx.lookup('$.id')),
  ]);
}

function pyLen(v: unknown): number {
  if (typeof v === 'string') return Array.from(v).length;
  if (Array.isArray(v)) return v.length;
  if (isDict(v)) return Object.keys(v).length;
  throw new QueryRuntimeError(`len: object of type ${typeName(v)} has no len()`);
}

function orImpl(unwrap: (x: unknown) => unknown, args: unknown[]): unknown {
  for (const a of args) {
    const v = unwrap(a);
    if (!notVal(v)) return v;
  }
  return null;
}

/** Every name DET's `BuiltInEnv` binds, with our implementation. */
export const BUILTINS: Readonly<Record<string, Builtin>> = {
  '+': (_c, [a, b]) => pyAdd(u(a), u(b)),
  '-': (_c, [a, b]) => {
    const [x, y] = num('-', u(a), u(b));
    return x - y;
  },
  '*': (_c, [a, b]) => {
    const [x, y] = num('*', u(a), u(b));
    return x * y;
  },
  '//': (_c, [a, b]) => {
    const [x, y] = num('//', u(a), u(b));
    if (y === 0) throw new QueryRuntimeError('integer division or modulo by zero');
    return Math.floor(x / y);
  },
  '/': (_c, [a, b]) => {
    const [x, y] = num('/', u(a), u(b));
    if (y === 0) throw new QueryRuntimeError('division by zero');
    return x / y;
  },
  '>': (_c, [a, b]) => cmp('>', u(a), u(b)),
  '>=': (_c, [a, b]) => cmp('>=', u(a), u(b)),
  '<': (_c, [a, b]) => cmp('<', u(a), u(b)),
  '<=': (_c, [a, b]) => cmp('<=', u(a), u(b)),
  // DET passes `len` the raw match iterator and crashes; we measure the unwrapped value instead.
  len: (_c, [a]) => pyLen(u(a)),
  // Python `bool()` of the raw argument: a match list is true when it has a match.
  bool: (_c, [a]) => (a instanceof Matches ? a.items.length > 0 : pyTruthy(a instanceof Datum ? a.value : a)),
  str2bool: (_c, [a]) => str2bool(a),
  bool2int: (_c, [a]) => bool2int(a),
  str2num: (_c, [a]) => str2num(a),
  str2date: (_c, [a]) => str2date(a),
  json2str: (_c, [a]) => json2str(a),
  'format-uuid': (_c, [a]) => formatUuid(a),
  selected: (_c, [a, r]) => selected(a, r),
  'selected-at': (_c, [a, i]) => selectedAt(a, i),
  'count-selected': (_c, [a]) => countSelected(a),
  join: (_c, args) => {
    const vals = args.map(u);
    const [sep, ...rest] = vals;
    if (typeof sep !== 'string' || rest.some((x) => typeof x !== 'string')) return '""';
    return rest.join(sep);
  },
  default: (_c, [a, d]) => {
    const v = u(a);
    return pyTruthy(v) ? v : d;
  },
  template: (_c, [fmt, ...args]) => template(fmt, ...args),
  form_url: (c) => docUrl(c, 'form_data'),
  case_url: (c) => docUrl(c, 'case_data'),
  attachment_url: (c, [a]) => {
    const v = u(a);
    if (!pyTruthy(v)) return null;
    return pyFormat('{}/a/{}/api/form/attachment/{}/{}', [
      c.baseUrl,
      u(c.lookup('$.domain')),
      u(c.lookup('$.id')),
      v,
    ]);
  },
  filter_empty: (_c, [a]) => a === null || a === undefined || (Array.isArray(a) && a.length === 0),
  or: (_c, args) => orImpl(u, args),
  _or_raw: (_c, args) => orImpl((x) => (x instanceof Matches ? [...x.items] : x), args),
  sha1: (_c, [a]) => sha1(a),
  substr: (_c, [a, s, e]) => substr(a, s, e),
  unique: (_c, [a]) => unique(a),
};

/** Names a `Map Via` / `Format Via` cell may use (DET's documented set plus the other callable builtins). */
export const MAP_VIA_FUNCTIONS: readonly string[] = [
  'str2bool',
  'str2num',
  'str2date',
  'bool2int',
  'selected',
  'selected-at',
  'count-selected',
  'json2str',
  'template',
  'substr',
  'format-uuid',
  'sha1',
  'unique',
  'attachment_url',
  'form_url',
  'case_url',
  'len',
  'bool',
];

/** Renders a cell value the way DET's CSV writer would (used by tests and validation output). */
export function pyCellText(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (v instanceof Date) return formatPyDatetime(v);
  return pyStr(v);
}

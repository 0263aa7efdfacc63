/**
 * The JSONPath dialect of jsonpath-ng 1.6.x as DET uses it (`JsonPathEnv` with `auto_id_field = "id"`).
 *
 * Paths are parsed once into an AST and evaluated against `Datum`s (a value with the path segment that
 * led to it and its parent), because DET's child-row ids are rendered from that chain.
 */
import { JsonPathSyntaxError } from './errors';

export type PathNode =
  | { readonly t: 'fields'; readonly names: readonly string[] }
  | { readonly t: 'index'; readonly i: number }
  | {
      readonly t: 'slice';
      readonly start: number | null;
      readonly end: number | null;
      readonly step: number | null;
    }
  | { readonly t: 'root' }
  | { readonly t: 'this' }
  | { readonly t: 'parent' }
  | { readonly t: 'child'; readonly left: PathNode; readonly right: PathNode }
  | { readonly t: 'desc'; readonly left: PathNode; readonly right: PathNode }
  | { readonly t: 'where'; readonly left: PathNode; readonly right: PathNode }
  | { readonly t: 'union'; readonly left: PathNode; readonly right: PathNode }
  | { readonly t: 'intersect'; readonly left: PathNode; readonly right: PathNode };

// ---------------------------------------------------------------- lexer (jsonpath_ng/lexer.py)

type Tok =
  | { k: 'id'; v: string; pos: number }
  | { k: 'num'; v: number; pos: number }
  | { k: 'op'; v: string; pos: number }
  | { k: 'named'; v: string; pos: number };

const LITERALS = new Set(['*', '.', '[', ']', '(', ')', '$', ',', ':', '|', '&', '~']);
const ID_START = /[a-zA-Z_@]/;
const ID_CHAR = /[a-zA-Z0-9_@-]/;

function lex(src: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    if (c === ' ' || c === '\t' || c === '\n') {
      i++;
      continue;
    }
    if (c === '.' && src[i + 1] === '.') {
      out.push({ k: 'op', v: '..', pos: i });
      i += 2;
      continue;
    }
    if (ID_START.test(c)) {
      const s = i;
      while (i < src.length && ID_CHAR.test(src[i]!)) i++;
      const v = src.slice(s, i);
      out.push(v === 'where' ? { k: 'op', v: 'where', pos: s } : { k: 'id', v, pos: s });
      continue;
    }
    if (/[0-9]/.test(c) || (c === '-' && /[0-9]/.test(src[i + 1] ?? ''))) {
      const s = i;
      i++;
      while (i < src.length && /[0-9]/.test(src[i]!)) i++;
      out.push({ k: 'num', v: Number.parseInt(src.slice(s, i), 10), pos: s });
      continue;
    }
    if (c === "'" || c === '"' || c === '`') {
      const s = i;
      i++;
      let v = '';
      let closed = false;
      while (i < src.length) {
        const d = src[i]!;
        if (d === '\\' && i + 1 < src.length) {
          v += src[i + 1];
          i += 2;
          continue;
        }
        if (d === c) {
          closed = true;
          i++;
          break;
        }
        v += d;
        i++;
      }
      if (!closed) throw new JsonPathSyntaxError(src, `unterminated quote starting at column ${s}`);
      out.push(c === '`' ? { k: 'named', v, pos: s } : { k: 'id', v, pos: s });
      continue;
    }
    if (LITERALS.has(c)) {
      out.push({ k: 'op', v: c, pos: i });
      i++;
      continue;
    }
    throw new JsonPathSyntaxError(src, `unexpected character ${JSON.stringify(c)} at column ${i}`);
  }
  return out;
}

// ---------------------------------------------------------------- parser (jsonpath_ng/parser.py grammar)

// PLY precedence, lowest first: ',' DOUBLEDOT '.' '|' '&' WHERE
const BINOP_PREC: Record<string, number> = { '..': 1, '.': 2, '|': 3, '&': 4, where: 5 };

class Parser {
  private p = 0;
  constructor(
    private readonly src: string,
    private readonly toks: Tok[],
  ) {}

  parse(): PathNode {
    if (this.toks.length === 0) throw new JsonPathSyntaxError(this.src, 'empty path');
    const node = this.expr(0);
    const t = this.toks[this.p];
    if (t) throw this.err(t);
    return node;
  }

  private err(t: Tok | undefined): JsonPathSyntaxError {
    if (!t) return new JsonPathSyntaxError(this.src, 'unexpected end of path');
    return new JsonPathSyntaxError(this.src, `unexpected ${JSON.stringify(String(t.v))} at column ${t.pos}`);
  }

  private peekOp(v: string): boolean {
    const t = this.toks[this.p];
    return t !== undefined && t.k === 'op' && t.v === v;
  }

  private expect(v: string): void {
    if (!this.peekOp(v)) throw this.err(this.toks[this.p]);
    this.p++;
  }

  private expr(minPrec: number): PathNode {
    let left = this.postfix();
    for (;;) {
      const t = this.toks[this.p];
      if (t?.k !== 'op') break;
      const prec = BINOP_PREC[t.v];
      if (prec === undefined || prec <= minPrec) break;
      this.p++;
      const right = this.expr(prec);
      left = binop(t.v, left, right);
    }
    return left;
  }

  private postfix(): PathNode {
    let node = this.primary();
    while (this.peekOp('[')) {
      this.p++;
      node = { t: 'child', left: node, right: this.bracket() };
    }
    return node;
  }

  /** After '[': idx | slice | fields, then ']'. */
  private bracket(): PathNode {
    const t = this.toks[this.p];
    if (!t) throw this.err(t);
    if (t.k === 'op' && t.v === '*') {
      this.p++;
      this.expect(']');
      return { t: 'slice', start: null, end: null, step: null };
    }
    if (t.k === 'id') {
      const names = this.fieldList();
      this.expect(']');
      return { t: 'fields', names };
    }
    // idx or slice: maybe_int (':' maybe_int (':' maybe_int)?)?
    const ints: (number | null)[] = [];
    let colons = 0;
    let cur: number | null = null;
    for (;;) {
      const u = this.toks[this.p];
      if (u && u.k === 'num' && cur === null) {
        cur = u.v;
        this.p++;
        continue;
      }
      if (u && u.k === 'op' && u.v === ':' && colons < 2) {
        ints.push(cur);
        cur = null;
        colons++;
        this.p++;
        continue;
      }
      break;
    }
    ints.push(cur);
    this.expect(']');
    if (colons === 0) {
      if (cur === null) throw this.err(this.toks[this.p - 1]);
      return { t: 'index', i: cur };
    }
    return { t: 'slice', start: ints[0] ?? null, end: ints[1] ?? null, step: ints[2] ?? null };
  }

  private fieldList(): string[] {
    const names: string[] = [];
    for (;;) {
      const t = this.toks[this.p];
      if (t?.k !== 'id') throw this.err(t);
      names.push(t.v);
      this.p++;
      // `fields ',' fields` is shifted greedily (PLY's default on the shift/reduce conflict).
      if (this.peekOp(',') && this.toks[this.p + 1]?.k === 'id') {
        this.p++;
        continue;
      }
      return names;
    }
  }

  private primary(): PathNode {
    const t = this.toks[this.p];
    if (!t) throw this.err(t);
    if (t.k === 'id') return { t: 'fields', names: this.fieldList() };
    if (t.k === 'named') {
      this.p++;
      if (t.v === 'this') return { t: 'this' };
      if (t.v === 'parent') return { t: 'parent' };
      throw new JsonPathSyntaxError(this.src, `unknown named operator \`${t.v}\``);
    }
    if (t.k === 'op') {
      if (t.v === '*') {
        this.p++;
        return { t: 'fields', names: ['*'] };
      }
      if (t.v === '$') {
        this.p++;
        return { t: 'root' };
      }
      if (t.v === '[') {
        this.p++;
        return this.bracket();
      }
      if (t.v === '(') {
        this.p++;
        const inner = this.expr(0);
        this.expect(')');
        return inner;
      }
    }
    throw this.err(t);
  }
}

function binop(op: string, left: PathNode, right: PathNode): PathNode {
  switch (op) {
    case '.':
      return { t: 'child', left, right };
    case '..':
      return { t: 'desc', left, right };
    case 'where':
      return { t: 'where', left, right };
    case '|':
      return { t: 'union', left, right };
    default:
      return { t: 'intersect', left, right };
  }
}

const PARSE_CACHE = new Map<string, PathNode>();

/** Parses a path as jsonpath-ng 1.6 does; throws `JsonPathSyntaxError` and nothing else. */
export function parsePath(src: string): PathNode {
  const hit = PARSE_CACHE.get(src);
  if (hit) return hit;
  if (typeof src !== 'string') throw new JsonPathSyntaxError(String(src), 'a path must be text');
  const node = new Parser(src, lex(src)).parse();
  if (PARSE_CACHE.size < 10_000) PARSE_CACHE.set(src, node);
  return node;
}

/** jsonpath-ng's `JSONPath.child` canonicalisation. */
export function childOf(left: PathNode, right: PathNode): PathNode {
  if (left.t === 'this' || left.t === 'root') return right;
  if (right.t === 'this') return left;
  if (right.t === 'root') return right;
  return { t: 'child', left, right };
}

/** `commcare_export/jsonpath_utils.py::split_leftmost`. */
export function splitLeftmost(node: PathNode): [PathNode, PathNode] {
  if (node.t === 'child') {
    const [lm, rest] = splitLeftmost(node.left);
    return [lm, childOf(rest, node.right)];
  }
  if (node.t === 'desc') {
    const [lm, rest] = splitLeftmost(node.left);
    return [lm, { t: 'desc', left: rest, right: node.right }];
  }
  return [node, { t: 'this' }];
}

/** jsonpath-ng's `str()` of a path (used for error messages and `id` rendering). */
export function pathToString(n: PathNode): string {
  switch (n.t) {
    case 'fields':
      return n.names.map(quoteField).join(',');
    case 'index':
      return `[${n.i}]`;
    case 'slice':
      if (n.start === null && n.end === null && n.step === null) return '[*]';
      return `[${n.start || ''}${n.end ? `:${n.end}` : ''}${n.step ? `:${n.step}` : ''}]`;
    case 'root':
      return '$';
    case 'this':
      return '`this`';
    case 'parent':
      return '`parent`';
    case 'child':
      return `${pathToString(n.left)}.${pathToString(n.right)}`;
    case 'desc':
      return `${pathToString(n.left)}..${pathToString(n.right)}`;
    case 'where':
      return `${pathToString(n.left)} where ${pathToString(n.right)}`;
    case 'union':
      return `${pathToString(n.left)}|${pathToString(n.right)}`;
    case 'intersect':
      return `${pathToString(n.left)}&${pathToString(n.right)}`;
  }
}

const NEEDS_QUOTES = /[*.[\]()$,:|&~]/;
function quoteField(f: string): string {
  return NEEDS_QUOTES.test(f) ? `'${f}'` : f;
}

/**
 * DET's `_get_safe_source_field`: a path that fails to parse is split on `.` and every segment that
 * fails on its own is double-quoted (`foo.#baz` -> `foo."#baz"`); a trailing `.` is an error.
 */
export function safeSourceField(src: string): string {
  try {
    parsePath(src);
    return src;
  } catch {
    const quoted = src
      .split('.')
      .map((node) => {
        if (!node) return node;
        try {
          parsePath(node);
          return node;
        } catch {
          return `"${node}"`;
        }
      })
      .join('.');
    if (quoted.endsWith('.')) throw new JsonPathSyntaxError(src, `blank segment at the end (${quoted})`);
    return quoted;
  }
}

// ---------------------------------------------------------------- evaluation

/** Path segment that led to a datum (jsonpath-ng `DatumInContext.path`). */
export type Seg =
  | { readonly t: 'this' }
  | { readonly t: 'root' }
  | { readonly t: 'field'; readonly name: string }
  | { readonly t: 'index'; readonly i: number };

const THIS_SEG: Seg = { t: 'this' };
const ROOT_SEG: Seg = { t: 'root' };
const ID_SEG: Seg = { t: 'field', name: 'id' };

/**
 * Segments are immutable, so the ones a query's paths name are made once: a lookup makes a datum per
 * match per record, and each would otherwise carry a fresh segment. Names met by `*` come from the
 * records and are not kept past a bound.
 */
const FIELD_SEGS = new Map<string, Seg>();
const INDEX_SEGS: Seg[] = Array.from({ length: 64 }, (_, i) => ({ t: 'index', i }));

function fieldSeg(name: string): Seg {
  let seg = FIELD_SEGS.get(name);
  if (seg === undefined) {
    seg = { t: 'field', name };
    if (FIELD_SEGS.size < 10_000) FIELD_SEGS.set(name, seg);
  }
  return seg;
}

function indexSeg(i: number): Seg {
  return i >= 0 && i < INDEX_SEGS.length ? INDEX_SEGS[i]! : { t: 'index', i };
}

/** A value with where it came from (jsonpath-ng `DatumInContext`, plus `AutoIdForDatum` via `autoIdOf`). */
export class Datum {
  constructor(
    readonly value: unknown,
    readonly seg: Seg,
    readonly parent: Datum | null,
    /** For an `AutoIdForDatum`: the datum whose id this is (such matches have no children). */
    readonly autoIdOf: Datum | null = null,
  ) {}
}

export function isDict(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Date);
}

/** Python's `str()` for the values that occur in HQ documents. */
export function pyStr(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (typeof v === 'string') return v;
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number') return pyNum(v);
  if (v instanceof Date) return formatPyDatetime(v);
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(', ')}]`;
  if (isDict(v))
    return `{${Object.entries(v)
      .map(([k, x]) => `${pyRepr(k)}: ${pyRepr(x)}`)
      .join(', ')}}`;
  return String(v);
}

function pyNum(n: number): string {
  if (Number.isNaN(n)) return 'nan';
  if (!Number.isFinite(n)) return n > 0 ? 'inf' : '-inf';
  return String(n);
}

export function pyRepr(v: unknown): string {
  if (typeof v === 'string') {
    const q = v.includes("'") && !v.includes('"') ? '"' : "'";
    const body = v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t');
    return q + (q === "'" ? body.replace(/'/g, "\\'") : body) + q;
  }
  return pyStr(v);
}

/** `datetime.__str__` of a naive datetime held as UTC components. */
export function formatPyDatetime(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getUTCFullYear(), 4)}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}`;
}

/**
 * Renders jsonpath-ng's `id_pseudopath` (ids stuck in where a dict has one) as `str()` would: each datum
 * from the top down contributes its own part (`ownText`), folded with `JSONPath.child`'s
 * canonicalisation (`childOf`). Written as text directly, without building the path's nodes: it runs
 * for every `id` cell of every row.
 */
export function idPseudopath(d: Datum): string {
  return pseudoText(d, true);
}

/**
 * DET's `JsonPathEnv.lookup` writes `id = <AutoIdForDatum value>` into every dict a lookup returns that
 * has no `id`, mutating the document, and later ids and `json2str` output see it. We keep those ids
 * beside the document, keyed by the dict object, so the caller's record is never modified while every
 * table fed the same record object sees what DET's tables would (in table order).
 */
const INJECTED = new WeakMap<object, string | Datum>();

/** The injected id of a dict; rendered on first use (ancestors rarely change in between). */
function injectedGet(dict: object): string | undefined {
  const v = INJECTED.get(dict);
  if (v === undefined || typeof v === 'string') return v;
  const s = pseudoText(v, false);
  INJECTED.set(dict, s);
  return s;
}

export function injectedIdOf(dict: object): string | undefined {
  return injectedGet(dict);
}

/** Marks a lookup's matches the way DET's `JsonPathEnv.lookup` mutates them. */
export function injectIds(matches: readonly Datum[]): void {
  for (const m of matches) {
    const v = m.value;
    if (m.autoIdOf === null && isDict(v) && !Object.hasOwn(v, 'id') && !INJECTED.has(v)) INJECTED.set(v, m);
  }
}

/** What the last part rendered by `ownText`/`segText` (or folded by `pseudoText`) is, for `childOf`'s rules. */
const PART_PATH = 0;
const PART_THIS = 1;
const PART_ROOT = 2;
let partKind = PART_PATH;

/**
 * `str()` of `d`'s id pseudopath (`own` true: jsonpath-ng's `id_pseudopath`, each datum's own id where it
 * has one) or of its path to its parent's pseudopath (`own` false: the `AutoIdForDatum` of an injected id).
 * Sets `partKind` to the kind of the result.
 */
function pseudoText(d: Datum, own: boolean): string {
  const right = own ? ownText(d) : segText(d.seg);
  if (d.parent === null) return right;
  const rightKind = partKind;
  const left = pseudoText(d.parent, true);
  const leftKind = partKind;
  // `childOf(left, right)`, then `str()` of the child: `left.right`.
  if (leftKind !== PART_PATH) {
    partKind = rightKind;
    return right;
  }
  if (rightKind === PART_THIS) {
    partKind = leftKind;
    return left;
  }
  if (rightKind === PART_ROOT) {
    partKind = PART_ROOT;
    return right;
  }
  partKind = PART_PATH;
  return `${left}.${right}`;
}

/** `str()` of `ownPseudo(d)`: the dict's id (its own, else the injected one) as a field, else its segment. */
function ownText(d: Datum): string {
  const v = d.value;
  if (isDict(v)) {
    if (Object.hasOwn(v, 'id')) {
      const text = quoteField(pyStr(v.id));
      partKind = PART_PATH;
      return text;
    }
    const injected = injectedGet(v);
    if (injected !== undefined) {
      partKind = PART_PATH;
      return quoteField(injected);
    }
  }
  return segText(d.seg);
}

/** `str()` of a segment as a path node. */
function segText(s: Seg): string {
  switch (s.t) {
    case 'this':
      partKind = PART_THIS;
      return '`this`';
    case 'root':
      partKind = PART_ROOT;
      return '$';
    case 'field':
      partKind = PART_PATH;
      return quoteField(s.name);
    case 'index':
      partKind = PART_PATH;
      return `[${s.i}]`;
  }
}

/** The value of a match as DET sees it after `JsonPathEnv.lookup` (auto ids resolved, `id` injected). */
export function datumValue(d: Datum): unknown {
  if (d.autoIdOf) return idPseudopath(d.autoIdOf);
  return withInjectedIds(d.value);
}

/** A dict as DET's mutated document would show it: injected `id` keys added (last), recursively. */
export function withInjectedIds(v: unknown): unknown {
  if (Array.isArray(v)) {
    let changed = false;
    const out = v.map((x) => {
      const y = withInjectedIds(x);
      if (y !== x) changed = true;
      return y;
    });
    return changed ? out : v;
  }
  if (!isDict(v)) return v;
  let out: Record<string, unknown> | null = null;
  for (const k of Object.keys(v)) {
    const x = v[k];
    const y = withInjectedIds(x);
    if (y !== x) {
      out ??= { ...v };
      out[k] = y;
    }
  }
  const id = INJECTED.has(v) ? injectedGet(v) : undefined;
  if (id !== undefined && !Object.hasOwn(v, 'id')) {
    out ??= { ...v };
    out.id = id;
  }
  return out ?? v;
}

export function wrap(v: unknown): Datum {
  return v instanceof Datum ? v : new Datum(v, THIS_SEG, null);
}

function rootOf(d: Datum): Datum {
  let cur = d;
  while (cur.parent) cur = cur.parent;
  return new Datum(cur.value, ROOT_SEG, null);
}

/** Evaluates a path against a datum, returning jsonpath-ng's matches in its order. */
export function find(node: PathNode, d: Datum): Datum[] {
  switch (node.t) {
    case 'root':
      return [rootOf(d)];
    case 'this':
      return [d];
    case 'parent':
      return d.parent ? [d.parent] : [];
    case 'fields': {
      const v = d.value;
      const names = node.names.includes('*') ? (isDict(v) ? [...Object.keys(v), 'id'] : []) : node.names;
      const out: Datum[] = [];
      for (const name of names) {
        if (name === 'id') {
          out.push(new Datum(null, ID_SEG, d, d));
          continue;
        }
        if (isDict(v) && Object.hasOwn(v, name)) out.push(new Datum(v[name], fieldSeg(name), d));
      }
      return out;
    }
    case 'index': {
      const v = d.value;
      // jsonpath-ng: `if datum.value and len(datum.value) > index: value[index]` (lists and strings).
      if (Array.isArray(v) || (typeof v === 'string' && v.length > 0)) {
        const len = v.length;
        const i = node.i < 0 ? len + node.i : node.i;
        if (i < 0 || i >= len) return [];
        return [new Datum(v[i], indexSeg(node.i), d)];
      }
      return [];
    }
    case 'slice': {
      let v = d.value;
      // jsonpath-ng 1.6 `Slice.find`: falsy -> nothing; a dict/number/string is treated as a one-item list
      // (HQ serialises a repeat with one entry as an object).
      if (!pyTruthy(v)) return [];
      let holder = d;
      if (!Array.isArray(v)) {
        v = [v];
        holder = new Datum(v, d.seg, d.parent);
      }
      const arr = v as unknown[];
      const idx = pySliceIndices(arr.length, node.start, node.end, node.step);
      return idx.map((i) => new Datum(arr[i], indexSeg(i), holder));
    }
    case 'child': {
      const out: Datum[] = [];
      for (const l of find(node.left, d)) {
        if (l.autoIdOf) continue; // auto ids have no children
        for (const r of find(node.right, l)) out.push(r);
      }
      return out;
    }
    case 'desc': {
      const out: Datum[] = [];
      const rec = (x: Datum) => {
        for (const r of find(node.right, x)) out.push(r);
        const v = x.value;
        if (Array.isArray(v)) for (let i = 0; i < v.length; i++) rec(new Datum(v[i], indexSeg(i), x));
        else if (isDict(v)) for (const k of Object.keys(v)) rec(new Datum(v[k], fieldSeg(k), x));
      };
      for (const l of find(node.left, d)) rec(l);
      return out;
    }
    case 'where':
      return find(node.left, d).filter((x) => find(node.right, x).length > 0);
    case 'union':
      return [...find(node.left, d), ...find(node.right, d)];
    case 'intersect':
      throw new JsonPathSyntaxError(pathToString(node), 'jsonpath-ng does not implement `&`');
  }
}

export function pyTruthy(v: unknown): boolean {
  if (v === null || v === undefined || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (v instanceof Date) return true;
  if (isDict(v)) return Object.keys(v).length > 0;
  return true;
}

function pySliceIndices(
  len: number,
  start: number | null,
  end: number | null,
  step: number | null,
): number[] {
  const st = step ?? 1;
  const out: number[] = [];
  if (st === 0) return out;
  const norm = (x: number | null, dflt: number, lo: number, hi: number) => {
    if (x === null) return dflt;
    const y = x < 0 ? x + len : x;
    return Math.min(Math.max(y, lo), hi);
  };
  if (st > 0) {
    const s = norm(start, 0, 0, len);
    const e = norm(end, len, 0, len);
    for (let i = s; i < e; i += st) out.push(i);
  } else {
    const s = norm(start, len - 1, -1, len - 1);
    const e = norm(end, -1, -1, len - 1);
    for (let i = s; i > e; i += st) out.push(i);
  }
  return out;
}

/** True when `node` uses nothing that a plain property walk cannot answer (fields, no `id`, no `*`). */
export function plainFieldChain(node: PathNode): { fromRoot: boolean; names: string[] } | null {
  const names: string[] = [];
  let fromRoot = false;
  const walk = (n: PathNode, first: boolean): boolean => {
    if (n.t === 'child') return walk(n.left, first) && walk(n.right, false);
    if (n.t === 'root' && first) {
      fromRoot = true;
      return true;
    }
    if (n.t === 'this' && first) return true;
    if (n.t === 'fields' && n.names.length === 1) {
      const name = n.names[0]!;
      if (name === 'id' || name === '*') return false;
      names.push(name);
      return true;
    }
    return false;
  };
  return walk(node, true) ? { fromRoot, names } : null;
}

/** A path compiled once: `find` for full jsonpath-ng matches. */
export interface CompiledPath {
  readonly source: string;
  readonly node: PathNode;
  /** Full match list (with contexts); dicts among them get DET's injected ids. */
  find(data: unknown): Datum[];
  /**
   * Fast answer for the common case of one plain field chain: the value, `NO_MATCH`, or `SLOW`
   * when only the full evaluation can answer (dict results need DET's injected ids).
   */
  quick: ((data: unknown) => unknown) | null;
}

export const NO_MATCH: unique symbol = Symbol('no match');
export const SLOW: unique symbol = Symbol('slow');

/**
 * For `id` or `$.id`: whether the path is one of those two (`'this'` or `'root'`), else null. jsonpath-ng
 * answers them with an auto id (`AutoIdForDatum`), which for a dict at the top of its document that has
 * an `id` is that id as a field (`Fields(id)`), rendered as `str()` does.
 */
function topIdPath(node: PathNode): 'this' | 'root' | null {
  if (node.t === 'fields') return node.names.length === 1 && node.names[0] === 'id' ? 'this' : null;
  if (node.t === 'child' && node.left.t === 'root') return topIdPath(node.right) === 'this' ? 'root' : null;
  return null;
}

/** `quick` for `id` and `$.id` (`topIdPath`): a record's own id without building its matches. */
function quickTopId(from: 'this' | 'root'): (data: unknown) => unknown {
  return (data: unknown) => {
    let top: unknown = data;
    if (data instanceof Datum) {
      if (data.autoIdOf) return SLOW;
      let cur = data;
      if (from === 'root') while (cur.parent) cur = cur.parent;
      else if (cur.parent) return SLOW; // nested: its pseudopath starts with its parents'
      top = cur.value;
    }
    if (!isDict(top) || !Object.hasOwn(top, 'id')) return SLOW;
    return quoteField(pyStr(top.id));
  };
}

export function compilePath(source: string): CompiledPath {
  const node = parsePath(source);
  const chain = plainFieldChain(node);
  const topId = topIdPath(node);
  let quick: ((data: unknown) => unknown) | null = topId === null ? null : quickTopId(topId);
  if (chain) {
    const { names, fromRoot } = chain;
    quick = (data: unknown) => {
      let v: unknown;
      if (data instanceof Datum) {
        if (data.autoIdOf) return SLOW;
        if (fromRoot) {
          let cur = data;
          while (cur.parent) cur = cur.parent;
          v = cur.value;
        } else v = data.value;
      } else v = data;
      // Records are parsed JSON: an object that is not an array is a dict here.
      for (let i = 0; i < names.length; i++) {
        if (typeof v !== 'object' || v === null || Array.isArray(v)) return NO_MATCH;
        const name = names[i]!;
        if (!Object.hasOwn(v, name)) return NO_MATCH;
        v = (v as Record<string, unknown>)[name];
      }
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) return SLOW;
      return v;
    };
  }
  return {
    source,
    node,
    quick,
    find(data: unknown) {
      const res = find(node, wrap(data));
      injectIds(res);
      return res;
    },
  };
}

/**
 * MiniLinq (`commcare_export/minilinq.py`): the JSON node types, and a compiler that turns an expression
 * into a closure over an environment once, so evaluating a record does no parsing.
 */
import { JsonPathSyntaxError, QueryRuntimeError } from './errors';
import { BUILTINS, type FnContext } from './functions';
import {
  compilePath,
  Datum,
  datumValue,
  isDict,
  NO_MATCH,
  pathToString,
  pyTruthy,
  SLOW,
  splitLeftmost,
} from './jsonpath';
import { Matches, unwrapVal } from './values';

export type MLNode =
  | { readonly t: 'Lit'; readonly v: unknown }
  | { readonly t: 'Ref'; readonly ref: string | MLNode }
  | { readonly t: 'List'; readonly items: readonly MLNode[] }
  | {
      readonly t: 'Map' | 'FlatMap';
      readonly source: MLNode;
      readonly body: MLNode;
      readonly name: string | null;
    }
  | {
      readonly t: 'Filter';
      readonly source: MLNode;
      readonly predicate: MLNode;
      readonly name: string | null;
    }
  | { readonly t: 'Bind'; readonly name: string; readonly value: MLNode; readonly body: MLNode }
  | { readonly t: 'Apply'; readonly fn: MLNode; readonly args: readonly MLNode[] }
  | {
      readonly t: 'Emit';
      readonly table: string;
      readonly headings: readonly MLNode[];
      readonly source: MLNode;
      readonly missingValue: string | null | undefined;
      readonly dataTypes: readonly unknown[];
    };

export const Lit = (v: unknown): MLNode => ({ t: 'Lit', v });
export const Ref = (ref: string | MLNode): MLNode => ({ t: 'Ref', ref });
export const Apply = (fn: MLNode, ...args: MLNode[]): MLNode => ({ t: 'Apply', fn, args });

/** A MiniLinq JSON value that does not describe a query. */
export class MiniLinqSyntaxError extends Error {
  override readonly name = 'MiniLinqSyntaxError';
  constructor(
    readonly where: string,
    message: string,
  ) {
    super(`${where}: ${message}`);
  }
}

function obj(v: unknown, where: string, slug: string): Record<string, unknown> {
  if (!isDict(v))
    throw new MiniLinqSyntaxError(where, `"${slug}" expects an object, got ${JSON.stringify(v)}`);
  return v;
}

/** `MiniLinq.from_jvalue`: every node is an object with exactly one key naming its type. */
export function fromJValue(j: unknown, where = '$'): MLNode {
  if (!isDict(j))
    throw new MiniLinqSyntaxError(where, `expected a MiniLinq node object, got ${JSON.stringify(j)}`);
  const keys = Object.keys(j);
  if (keys.length !== 1)
    throw new MiniLinqSyntaxError(
      where,
      `a node must have exactly one key naming its type, got ${JSON.stringify(keys)}`,
    );
  const slug = keys[0]!;
  const body = j[slug];
  const at = `${where}.${slug}`;
  const nameOf = (f: Record<string, unknown>) => {
    const n = f.name;
    if (n === undefined || n === null) return null;
    if (typeof n !== 'string') throw new MiniLinqSyntaxError(`${at}.name`, 'name must be a string or null');
    return n;
  };
  switch (slug) {
    case 'Lit':
      return { t: 'Lit', v: body };
    case 'Ref':
      return { t: 'Ref', ref: typeof body === 'string' ? body : fromJValue(body, at) };
    case 'List': {
      if (!Array.isArray(body)) throw new MiniLinqSyntaxError(at, 'List expects an array');
      return { t: 'List', items: body.map((x, i) => fromJValue(x, `${at}[${i}]`)) };
    }
    case 'Map':
    case 'FlatMap': {
      const f = obj(body, at, slug);
      return {
        t: slug,
        source: fromJValue(f.source, `${at}.source`),
        body: fromJValue(f.body, `${at}.body`),
        name: nameOf(f),
      };
    }
    case 'Filter': {
      const f = obj(body, at, slug);
      // DET's code reads `predicate`; its documentation says `body`. Accept both.
      const pred = f.predicate ?? f.body;
      if (pred === undefined) throw new MiniLinqSyntaxError(at, 'Filter needs "predicate" (or "body")');
      return {
        t: 'Filter',
        source: fromJValue(f.source, `${at}.source`),
        predicate: fromJValue(pred, `${at}.predicate`),
        name: nameOf(f),
      };
    }
    case 'Bind': {
      const f = obj(body, at, slug);
      if (typeof f.name !== 'string') throw new MiniLinqSyntaxError(`${at}.name`, 'Bind needs a string name');
      return {
        t: 'Bind',
        name: f.name,
        value: fromJValue(f.value, `${at}.value`),
        body: fromJValue(f.body, `${at}.body`),
      };
    }
    case 'Apply': {
      const f = obj(body, at, slug);
      const args = f.args ?? [];
      if (!Array.isArray(args)) throw new MiniLinqSyntaxError(`${at}.args`, 'args must be an array');
      return {
        t: 'Apply',
        fn: fromJValue(f.fn, `${at}.fn`),
        args: args.map((a, i) => fromJValue(a, `${at}.args[${i}]`)),
      };
    }
    case 'Emit': {
      const f = obj(body, at, slug);
      if (typeof f.table !== 'string')
        throw new MiniLinqSyntaxError(`${at}.table`, 'Emit needs a string table name');
      const headings = f.headings ?? [];
      if (!Array.isArray(headings))
        throw new MiniLinqSyntaxError(`${at}.headings`, 'headings must be an array');
      const mv = f.missing_value;
      if (mv !== undefined && mv !== null && typeof mv !== 'string')
        throw new MiniLinqSyntaxError(`${at}.missing_value`, 'missing_value must be a string or null');
      const dt = f.data_types ?? [];
      return {
        t: 'Emit',
        table: f.table,
        headings: headings.map((h, i) => fromJValue(h, `${at}.headings[${i}]`)),
        source: fromJValue(f.source, `${at}.source`),
        missingValue: mv as string | null | undefined,
        dataTypes: Array.isArray(dt) ? dt : [],
      };
    }
    default:
      throw new MiniLinqSyntaxError(where, `unknown node type "${slug}"`);
  }
}

// ---------------------------------------------------------------- environment and compilation

/** The chained environment of DET (`BuiltInEnv | CommCareHqEnv | JsonPathEnv`), reduced to its data. */
export interface Env {
  /** JsonPathEnv bindings: the current document (a plain value or a match with its context). */
  readonly data: unknown;
  /** `__root_only` is bound: only `$`-rooted paths and `id` resolve (export-root-if-no-subdocument). */
  readonly rootOnly: boolean;
  /** The record `api_data` yields while a plan runs. */
  readonly record: unknown;
}

export function makeEnv(data: unknown, record: unknown): Env {
  const v = data instanceof Datum ? data.value : data;
  return { data, record, rootOnly: isDict(v) && Object.hasOwn(v, '__root_only') };
}

export type Compiled = (env: Env) => unknown;

export interface CompileContext {
  readonly baseUrl: string;
  /** Called for every problem found while compiling; compilation continues. */
  readonly report: (message: string) => void;
}

const EMPTY = new Matches([]);

/** No match, as an already-unwrapped value (DET's empty match list unwraps to `[]`). */
export const NONE: readonly unknown[] = Object.freeze([]);

/**
 * Compiles a path reference into a lookup closure (builtins and `api_data` first, as DET's env chain).
 * With `raw`, a single scalar match is returned as the bare value (what unwrapping would give) to save
 * allocations; callers that unwrap anyway use it.
 */
function compileRef(source: string, cc: CompileContext, raw = false): Compiled {
  if (Object.hasOwn(BUILTINS, source)) {
    // DET would hand the cell a Python function object; nothing useful can come of it.
    cc.report(
      `"${source}" names a built-in function, not a field; DET would put the function itself in the cell`,
    );
    return () => null;
  }
  let path: ReturnType<typeof compilePath>;
  try {
    path = compilePath(source);
  } catch (e) {
    cc.report(e instanceof JsonPathSyntaxError ? e.message : String(e));
    return () => EMPTY;
  }
  const isId = pathToString(path.node) === 'id';
  const [leftmost] = splitLeftmost(path.node);
  const rootOnlyAllowed = isId || leftmost.t === 'root';
  const quick = path.quick;
  return (env) => {
    if (env.rootOnly && !rootOnlyAllowed) return EMPTY;
    if (quick) {
      const q = quick(env.data);
      if (q === NO_MATCH) return raw ? NONE : EMPTY;
      if (q !== SLOW) {
        if (raw && !Array.isArray(q)) return q;
        return new Matches([new Datum(q, { t: 'this' }, null)]);
      }
    }
    return new Matches(path.find(env.data));
  };
}

function dynamicLookup(name: unknown, env: Env): unknown {
  const n = unwrapVal(name);
  if (typeof n !== 'string')
    throw new QueryRuntimeError(`cannot look up a non-text name ${JSON.stringify(n)}`);
  let path: ReturnType<typeof compilePath>;
  try {
    path = compilePath(n);
  } catch (e) {
    throw new QueryRuntimeError(`computed reference ${JSON.stringify(n)} is not a valid path`, { cause: e });
  }
  if (env.rootOnly && pathToString(path.node) !== 'id' && splitLeftmost(path.node)[0].t !== 'root')
    return EMPTY;
  return new Matches(path.find(env.data));
}

/** Iterates a value the way a Python `for` over it would (lists, match iterators; a dict yields its keys). */
export function iterate(v: unknown): unknown[] {
  if (v instanceof Matches) return v.items as unknown[];
  if (Array.isArray(v)) return v;
  if (typeof v === 'string') return Array.from(v);
  if (isDict(v)) return Object.keys(v);
  if (v instanceof Datum) return iterate(v.value);
  throw new QueryRuntimeError(`${JSON.stringify(v)} is not iterable`);
}

function bindingsWith(env: Env, name: string, value: unknown): Env {
  const base = env.data instanceof Datum ? env.data.value : env.data;
  const stored = value instanceof Matches || value instanceof Datum ? unwrapVal(value) : value;
  return makeEnv({ ...(isDict(base) ? base : {}), [name]: stored }, env.record);
}

/** Builtins that unwrap their first argument (`@unwrap('val')`) or every argument. */
const UNWRAP_FIRST = new Set([
  'str2bool',
  'str2num',
  'str2date',
  'bool2int',
  'sha1',
  'selected-at',
  'selected',
  'count-selected',
  'json2str',
  'format-uuid',
  'default',
  'attachment_url',
  'form_url',
  'case_url',
  'substr',
  'unique',
  'len',
]);
const UNWRAP_ALL = new Set(['template', 'join', 'or', '+', '-', '*', '//', '/', '>', '>=', '<', '<=']);

/**
 * Compiles an expression whose result will be unwrapped by the consumer (a cell, or an unwrapping
 * function's argument): plain scalar lookups skip the match wrappers.
 */
export function compileValue(node: MLNode, cc: CompileContext): Compiled {
  if (node.t === 'Ref' && typeof node.ref === 'string') return compileRef(node.ref, cc, true);
  return compileExpr(node, cc);
}

export function compileExpr(node: MLNode, cc: CompileContext): Compiled {
  switch (node.t) {
    case 'Lit': {
      const v = node.v;
      return () => v;
    }
    case 'Ref': {
      if (typeof node.ref === 'string') return compileRef(node.ref, cc);
      const inner = compileExpr(node.ref, cc);
      return (env) => dynamicLookup(inner(env), env);
    }
    case 'List': {
      const items = node.items.map((n) => compileExpr(n, cc));
      return (env) => items.map((f) => f(env));
    }
    case 'Map':
    case 'FlatMap':
    case 'Filter': {
      const source = compileExpr(node.source, cc);
      const body = compileExpr(node.t === 'Filter' ? node.predicate : node.body, cc);
      const name = node.name;
      const kind = node.t;
      return (env) => {
        const out: unknown[] = [];
        for (const item of iterate(source(env))) {
          const inner = name ? bindingsWith(env, name, item) : makeEnv(item, env.record);
          const r = body(inner);
          if (kind === 'Map') out.push(r);
          else if (kind === 'FlatMap') for (const x of iterate(r)) out.push(x);
          else if (r instanceof Matches ? r.items.length > 0 : pyTruthy(r)) out.push(item);
        }
        return out;
      };
    }
    case 'Bind': {
      const value = compileExpr(node.value, cc);
      const body = compileExpr(node.body, cc);
      const name = node.name;
      return (env) => body(bindingsWith(env, name, value(env)));
    }
    case 'Apply':
      return compileApply(node.fn, node.args, cc);
    case 'Emit':
      cc.report(`Emit of table "${node.table}" is nested where only a value can be computed`);
      return () => null;
  }
}

class Ctx implements FnContext {
  constructor(
    readonly baseUrl: string,
    private readonly env: Env,
  ) {}
  lookup(p: string): unknown {
    return dynamicLookup(p, this.env);
  }
}

function compileApply(fnNode: MLNode, argNodes: readonly MLNode[], cc: CompileContext): Compiled {
  const fnName = fnNode.t === 'Ref' && typeof fnNode.ref === 'string' ? fnNode.ref : '';
  const args = argNodes.map((a, i) =>
    UNWRAP_ALL.has(fnName) || (i === 0 && UNWRAP_FIRST.has(fnName))
      ? compileValue(a, cc)
      : compileExpr(a, cc),
  );
  if (fnNode.t !== 'Ref' || typeof fnNode.ref !== 'string') {
    cc.report('Apply needs a function name ({"Ref": "<name>"}) as "fn"');
    return () => null;
  }
  const name = fnNode.ref;
  if (name === 'api_data') return (env) => [env.record];
  if (name === 'get_checkpoint_manager') return () => null;
  const fn = BUILTINS[name];
  if (!fn || !Object.hasOwn(BUILTINS, name)) {
    cc.report(`unknown function "${name}"`);
    return () => null;
  }
  const baseUrl = cc.baseUrl;
  if (args.length === 1) {
    const a0 = args[0]!;
    return (env) => fn(new Ctx(baseUrl, env), [a0(env)]);
  }
  return (env) =>
    fn(
      new Ctx(baseUrl, env),
      args.map((a) => a(env)),
    );
}

/** True when `node` (or anything inside it) calls `api_data`. */
export function callsApiData(node: MLNode): boolean {
  switch (node.t) {
    case 'Apply':
      return (
        (node.fn.t === 'Ref' && node.fn.ref === 'api_data') ||
        node.args.some(callsApiData) ||
        callsApiData(node.fn)
      );
    case 'Ref':
      return typeof node.ref !== 'string' && callsApiData(node.ref);
    case 'List':
      return node.items.some(callsApiData);
    case 'Map':
    case 'FlatMap':
      return callsApiData(node.source) || callsApiData(node.body);
    case 'Filter':
      return callsApiData(node.source) || callsApiData(node.predicate);
    case 'Bind':
      return callsApiData(node.value) || callsApiData(node.body);
    case 'Emit':
      return callsApiData(node.source);
    case 'Lit':
      return false;
  }
}

/** Finds the `api_data(...)` call in an expression. */
export function findApiData(node: MLNode): Extract<MLNode, { t: 'Apply' }> | null {
  switch (node.t) {
    case 'Apply':
      if (node.fn.t === 'Ref' && node.fn.ref === 'api_data') return node;
      for (const a of node.args) {
        const r = findApiData(a);
        if (r) return r;
      }
      return null;
    case 'Map':
    case 'FlatMap':
      return findApiData(node.source) ?? findApiData(node.body);
    case 'Filter':
      return findApiData(node.source) ?? findApiData(node.predicate);
    case 'Bind':
      return findApiData(node.value) ?? findApiData(node.body);
    case 'List':
      for (const i of node.items) {
        const r = findApiData(i);
        if (r) return r;
      }
      return null;
    case 'Emit':
      return findApiData(node.source);
    default:
      return null;
  }
}

/** The value of a match or literal as a plain JS value (for headings, table names). */
export function plain(v: unknown): unknown {
  return v instanceof Datum ? datumValue(v) : unwrapVal(v);
}

/** DET's node → JSON (`to_jvalue`), for `--dump-query`-style output and tests. */
export function toJValue(n: MLNode): unknown {
  switch (n.t) {
    case 'Lit':
      return { Lit: n.v };
    case 'Ref':
      return { Ref: typeof n.ref === 'string' ? n.ref : toJValue(n.ref) };
    case 'List':
      return { List: n.items.map(toJValue) };
    case 'Map':
    case 'FlatMap':
      return { [n.t]: { body: toJValue(n.body), source: toJValue(n.source), name: n.name } };
    case 'Filter':
      return { Filter: { predicate: toJValue(n.predicate), source: toJValue(n.source), name: n.name } };
    case 'Bind':
      return { Bind: { name: n.name, value: toJValue(n.value), body: toJValue(n.body) } };
    case 'Apply':
      return { Apply: { fn: toJValue(n.fn), args: n.args.map(toJValue) } };
    case 'Emit':
      return {
        Emit: {
          table: n.table,
          headings: n.headings.map(toJValue),
          source: toJValue(n.source),
          missing_value: n.missingValue ?? null,
          data_types: n.dataTypes,
        },
      };
  }
}

/**
 * The pure core of the sandbox: (dataset, project, resource, query) -> JSON page. No sockets here.
 * Each quirk copied from HQ says where it comes from ("ref §x", a section of our notes on commcare-hq):
 * §1 API-key auth (`corehq/apps/domain/auth.py`), §2.1 URLs (`corehq/apps/api/urls.py`), §2.2 tastypie
 * paging (`corehq/apps/api/resources/pagination.py`), §2.3–2.5 form and case v1 lists and filters
 * (`corehq/apps/api/resources/v0_4.py`, `corehq/apps/api/es.py`), §2.6 case v2
 * (`corehq/apps/hqcase/api/get_list.py`), §3 other resources (`v0_5.py`), §4 throttling
 * (`corehq/apps/api/resources/meta.py`, `corehq/apps/api/decorators.py`), §5 error responses, §8 what
 * DET does with `indexed_on` (commcare-export `commcare_export/commcare_minilinq.py`).
 */
import type { JsonObject, JsonValue } from '../common/json';
import { parseFilterDate, SandboxBadRequest, SandboxNotFound } from './answers';
import type { SandboxDataset, SandboxResource } from './dataset';
import { caseFieldFilter, isFieldFilterParam } from './field-filters';
import { FORM_TYPES, formatMicros, type ProjectModel } from './records';
import type { Timeline } from './timeline';

export type SandboxParams = Readonly<Record<string, readonly string[]>>;

export { parseFilterDate, SandboxBadRequest, SandboxNotFound };

export interface ServeRequest {
  readonly project: string;
  readonly resource: SandboxResource;
  readonly params: SandboxParams;
  /** Request path, used for tastypie's relative `next`/`previous` links (ref §2.2). */
  readonly path?: string;
  /** `http://host:port`, used for case v2's absolute `next` (ref §2.6). */
  readonly origin?: string;
  /** Whether live re-index events are visible yet. @default true */
  readonly liveVisible?: boolean;
  /** Parameter order as received (for links); defaults to the order of `params`. */
  readonly paramOrder?: readonly [string, string][];
  /** Hostile or coarse behaviours of other HQ-like servers (see `SandboxQuirks`). @default none */
  readonly quirks?: SandboxQuirks;
}

/**
 * Ways a server that claims to be HQ may still answer differently; each is a fault flag of the sandbox
 * (functions/sandbox/README.md), so clients are tested against them.
 */
export interface SandboxQuirks {
  /**
   * Precision at which v1 date filters (`indexed_on_start`/`_end`, ...) are compared: both the filter
   * and the record's value are cut to whole milliseconds (HQ's Elasticsearch keeps milliseconds) or
   * whole seconds before comparing. @default exact (microseconds)
   */
  readonly dateFilterPrecision?: 'ms' | 's';
  /** Forms and cases v1 ignore `indexed_on_start` (always answer from the beginning). */
  readonly ignoreIndexedOnStart?: boolean;
  /** tastypie `next` links bounce: the page at offset > 0 links back to offset 0. */
  readonly bouncingNext?: boolean;
  /**
   * The form list never ends: whatever the request, a full page of new forms one second apart from
   * `indexed_on_start` on (ids `endless-<second>`), with a `next` link and no count. Every page is valid
   * and advances; only a budget stops a client.
   */
  readonly endlessForms?: boolean;
  /**
   * tastypie lists of the small resources (users, groups, locations, ...) ignore `offset`: every page is
   * the first one, and its `next` link always moves on to the next offset, so the pages never advance.
   */
  readonly stuckNext?: boolean;
}

const CHUNK = 1024;

/** Per-dataset caches: the per-filter chunk counts that make filtered counts O(N/1024) after the first. */
class Engine {
  private readonly chunks = new Map<string, Int32Array>();
  private readonly ownerIndex = new Map<string, Map<string, number>>();
  /** Matches sorted by a field other than indexed_on, per query (see orderedPage). */
  readonly sorted = new Map<string, number[]>();
  constructor(readonly dataset: SandboxDataset) {}

  chunkCounts(key: string, total: number): Int32Array {
    let counts = this.chunks.get(key);
    if (!counts) {
      counts = new Int32Array(Math.ceil(total / CHUNK) + 1).fill(-1);
      if (this.chunks.size > 256) this.chunks.clear();
      this.chunks.set(key, counts);
    }
    return counts;
  }

  owners(m: ProjectModel): Map<string, number> {
    let map = this.ownerIndex.get(m.name);
    if (!map) {
      map = new Map();
      for (let u = 0; u < m.mobileUsers; u++) map.set(m.userId(u), u);
      this.ownerIndex.set(m.name, map);
    }
    return map;
  }
}

const engines = new WeakMap<SandboxDataset, Engine>();
function engineFor(dataset: SandboxDataset): Engine {
  let engine = engines.get(dataset);
  if (!engine) {
    engine = new Engine(dataset);
    engines.set(dataset, engine);
  }
  return engine;
}

// ---- parameter helpers -----------------------------------------------------------------------------

function first(params: SandboxParams, name: string): string | undefined {
  return params[name]?.[0];
}

/** tastypie's Paginator.get_limit: non-integers and negatives are 400, 0 or > max clamps to max. */
function tastypieLimit(params: SandboxParams, max: number): number {
  const raw = first(params, 'limit');
  if (raw === undefined) return Math.min(20, max);
  if (!/^-?\d+$/.test(raw.trim()))
    throw new SandboxBadRequest(`Invalid limit '${raw}' provided. Please provide a positive integer.`);
  const limit = Number.parseInt(raw, 10);
  if (limit < 0)
    throw new SandboxBadRequest(`Invalid limit '${raw}' provided. Please provide a positive integer >= 0.`);
  return limit === 0 || limit > max ? max : limit;
}

function tastypieOffset(params: SandboxParams): number {
  const raw = first(params, 'offset');
  if (raw === undefined) return 0;
  if (!/^-?\d+$/.test(raw.trim()))
    throw new SandboxBadRequest(`Invalid offset '${raw}' provided. Please provide an integer.`);
  const offset = Number.parseInt(raw, 10);
  if (offset < 0)
    throw new SandboxBadRequest(`Invalid offset '${raw}' provided. Please provide a positive integer >= 0.`);
  return offset;
}

// ---- range + predicate scanning over a timeline -----------------------------------------------------

interface EventQuery {
  lo: number;
  hi: number;
  /** null = every event in [lo, hi) matches. */
  predicate: ((j: number) => boolean) | null;
  /** Cache key of the predicate (per project/resource); null = do not cache. */
  key: string | null;
}

class Scanner {
  constructor(
    private readonly engine: Engine,
    private readonly t: Timeline,
    private readonly q: EventQuery,
  ) {}

  private chunkCount(k: number): number {
    const pred = this.q.predicate!;
    const counts = this.engine.chunkCounts(this.q.key!, this.t.totalLength);
    let n = counts[k]!;
    if (n < 0) {
      n = 0;
      const end = Math.min((k + 1) * CHUNK, this.t.totalLength);
      for (let j = k * CHUNK; j < end; j++) if (pred(j)) n++;
      counts[k] = n;
    }
    return n;
  }

  private usesChunks(): boolean {
    return this.q.key !== null && this.q.hi - this.q.lo >= 2 * CHUNK;
  }

  count(): number {
    const { lo, hi, predicate } = this.q;
    if (hi <= lo) return 0;
    if (!predicate) return hi - lo;
    let n = 0;
    let j = lo;
    if (this.usesChunks()) {
      const firstFull = Math.ceil(lo / CHUNK) * CHUNK;
      for (; j < firstFull; j++) if (predicate(j)) n++;
      for (; j + CHUNK <= hi; j += CHUNK) n += this.chunkCount(j / CHUNK);
    }
    for (; j < hi; j++) if (predicate(j)) n++;
    return n;
  }

  /** Event indexes of matches number skip..skip+take-1, in ascending or descending order. */
  collect(skip: number, take: number, descending: boolean): number[] {
    const { lo, hi, predicate } = this.q;
    const out: number[] = [];
    if (take <= 0 || hi <= lo) return out;
    if (!predicate) {
      for (let k = skip; k < skip + take && k < hi - lo; k++) out.push(descending ? hi - 1 - k : lo + k);
      return out;
    }
    let remaining = skip;
    if (!descending) {
      let j = lo;
      if (this.usesChunks() && remaining > 0) {
        const firstFull = Math.ceil(lo / CHUNK) * CHUNK;
        for (; j < firstFull && remaining > 0; j++) if (predicate(j)) remaining--;
        if (j === firstFull)
          for (; j + CHUNK <= hi; j += CHUNK) {
            const c = this.chunkCount(j / CHUNK);
            if (c > remaining) break;
            remaining -= c;
          }
      }
      for (; j < hi && out.length < take; j++) {
        if (!predicate(j)) continue;
        if (remaining > 0) remaining--;
        else out.push(j);
      }
    } else {
      let j = hi - 1;
      if (this.usesChunks() && remaining > 0) {
        const lastFull = Math.floor(hi / CHUNK) * CHUNK; // events [lastFull, hi) are a partial chunk
        for (; j >= lastFull && remaining > 0; j--) if (predicate(j)) remaining--;
        if (j === lastFull - 1)
          for (; j + 1 - CHUNK >= lo; j -= CHUNK) {
            const c = this.chunkCount((j + 1 - CHUNK) / CHUNK);
            if (c > remaining) break;
            remaining -= c;
          }
      }
      for (; j >= lo && out.length < take; j--) {
        if (!predicate(j)) continue;
        if (remaining > 0) remaining--;
        else out.push(j);
      }
    }
    return out;
  }
}

// ---- tastypie envelope --------------------------------------------------------------------------------

function pageLink(path: string, order: readonly [string, string][], limit: number, offset: number): string {
  // tastypie's Paginator._generate_uri: the request's query with limit/offset replaced, appended last.
  const qs = new URLSearchParams();
  for (const [k, v] of order) if (k !== 'limit' && k !== 'offset') qs.append(k, v);
  qs.append('limit', String(limit));
  qs.append('offset', String(offset));
  return `${path}?${qs.toString()}`;
}

function envelope(
  req: ServeRequest,
  order: readonly [string, string][],
  limit: number,
  offset: number,
  total: number,
  objects: JsonValue[],
): string {
  const path = req.path ?? `/a/${req.project}/api/${req.resource}/v1/`;
  const nextOffset = req.quirks?.bouncingNext && offset > 0 ? 0 : offset + limit;
  const meta = {
    limit,
    next: offset + limit < total || req.quirks?.stuckNext ? pageLink(path, order, limit, nextOffset) : null,
    offset,
    previous: offset - limit >= 0 ? pageLink(path, order, limit, offset - limit) : null,
    total_count: total,
  };
  return JSON.stringify({ meta, objects });
}

function paramOrder(req: ServeRequest): readonly [string, string][] {
  if (req.paramOrder) return req.paramOrder;
  const out: [string, string][] = [];
  for (const [k, values] of Object.entries(req.params)) for (const v of values) out.push([k, v]);
  return out;
}

// ---- forms and cases v1 ---------------------------------------------------------------------------------

interface RangeSpec {
  readonly start: string;
  readonly end: string;
  readonly which: 'indexed' | 'received';
}

function applyRanges(
  t: Timeline,
  params: SandboxParams,
  ranges: readonly RangeSpec[],
  visible: number,
  quirks: SandboxQuirks = {},
) {
  // At a coarser precision a record matches `start` when floor(record) >= floor(start), i.e. record >=
  // floor(start), and matches `end` when floor(record) <= floor(end), i.e. record < floor(end) + unit.
  const unit =
    quirks.dateFilterPrecision === 's' ? 1_000_000 : quirks.dateFilterPrecision === 'ms' ? 1000 : 1;
  const floor = (micros: number) => Math.floor(micros / unit) * unit;
  let lo = 0;
  let hi = visible;
  for (const r of ranges) {
    const starts =
      quirks.ignoreIndexedOnStart && r.start === 'indexed_on_start' ? undefined : params[r.start];
    if (starts?.length) {
      // Repeated values are OR in HQ: the loosest bound wins.
      const micros = Math.min(...starts.map((v) => parseFilterDate(r.start, v, 'v1')));
      lo = Math.max(lo, Math.min(visible, t.lowerBound(floor(micros), r.which)));
    }
    const ends = params[r.end];
    if (ends?.length) {
      const micros = Math.max(...ends.map((v) => parseFilterDate(r.end, v, 'v1')));
      hi = Math.min(hi, t.lowerBound(floor(micros) + unit, r.which));
    }
  }
  return { lo, hi };
}

/**
 * `<name>_start` / `<name>_end` on a field that does not follow indexed_on (received_on,
 * server_modified_on, server_date_modified): a predicate per bound, inclusive as HQ's ES `gte`/`lte`.
 */
function addTimeFilter(
  params: SandboxParams,
  name: string,
  valueAt: (j: number) => number,
  preds: ((j: number) => boolean)[],
  keyParts: string[],
): void {
  const starts = params[`${name}_start`];
  if (starts?.length) {
    const bound = Math.min(...starts.map((v) => parseFilterDate(`${name}_start`, v, 'v1')));
    preds.push((j) => valueAt(j) >= bound);
    keyParts.push(`${name}>=${bound}`);
  }
  const ends = params[`${name}_end`];
  if (ends?.length) {
    const bound = Math.max(...ends.map((v) => parseFilterDate(`${name}_end`, v, 'v1')));
    preds.push((j) => valueAt(j) <= bound);
    keyParts.push(`${name}<=${bound}`);
  }
}

/**
 * One page of matches in `order_by` order. indexed_on is the event order; any other field is a time line
 * of its own, so its order is a sort of every match (by value, then event order), kept per query.
 */
function orderedPage(
  engine: Engine,
  scanner: Scanner,
  total: number,
  sort: { readonly valueAt: (j: number) => number; readonly key: string | null } | null,
  descending: boolean,
  offset: number,
  limit: number,
): number[] {
  if (!sort) return scanner.collect(offset, limit, descending);
  let sorted = sort.key === null ? undefined : engine.sorted.get(sort.key);
  if (!sorted) {
    const all = scanner.collect(0, total, false);
    const values = new Map(all.map((j) => [j, sort.valueAt(j)]));
    sorted = all.sort((a, b) => values.get(a)! - values.get(b)! || a - b);
    if (sort.key !== null) {
      if (engine.sorted.size > 16) engine.sorted.clear();
      engine.sorted.set(sort.key, sorted);
    }
  }
  const start = descending ? Math.max(0, sorted.length - offset - limit) : offset;
  const end = descending ? sorted.length - offset : offset + limit;
  const page = sorted.slice(start, Math.max(start, end));
  return descending ? page.reverse() : page;
}

function combine(preds: ((j: number) => boolean)[]): ((j: number) => boolean) | null {
  if (preds.length === 0) return null;
  if (preds.length === 1) return preds[0]!;
  return (j) => {
    for (const p of preds) if (!p(j)) return false;
    return true;
  };
}

/** tastypie HQ resources turn unknown parameters into raw, lower-cased ES term filters (ref §2.3, §2.5). */
function termPredicate(name: string, values: readonly string[], build: (j: number) => JsonObject) {
  const wanted = new Set(values.map((v) => v.toLowerCase()));
  return (j: number) => {
    const record = build(j);
    const props = record.properties;
    const value =
      name in record
        ? record[name]
        : props && typeof props === 'object' && !Array.isArray(props)
          ? (props as JsonObject)[name]
          : undefined;
    return value !== undefined && value !== null && wanted.has(String(value));
  };
}

const UNSUPPORTED_V1 = new Set([
  'case_id',
  'date_modified_start',
  'date_modified_end',
  'xforms_by_name__full',
  'xforms_by_xmlns__full',
  'child_cases__full',
  'parent_cases__full',
]);

/**
 * Adds a raw term filter for every parameter of a tastypie v1 request the resource does not know (as HQ
 * does), after refusing the ones the sandbox does not implement. Returns whether any was added, since a
 * raw filter makes the page's counts uncacheable.
 */
function addRawTermFilters(
  params: SandboxParams,
  known: ReadonlySet<string>,
  preds: ((j: number) => boolean)[],
  build: (j: number) => JsonObject,
): boolean {
  let added = false;
  for (const [name, values] of Object.entries(params)) {
    if (known.has(name)) continue;
    if (UNSUPPORTED_V1.has(name))
      throw new SandboxBadRequest(`The sandbox does not implement the '${name}' filter`);
    preds.push(termPredicate(name, values, build));
    added = true;
  }
  return added;
}

function serveForms(engine: Engine, m: ProjectModel, req: ServeRequest): string {
  const p = req.params;
  const t = m.forms;
  const visible = t.visibleLength(req.liveVisible ?? true);
  const limit = tastypieLimit(p, 1000);
  const offset = tastypieOffset(p);
  const orderBy = first(p, 'order_by') ?? '-received_on';
  if (!/^-?(indexed_on|server_modified_on|received_on)$/.test(orderBy))
    throw new SandboxBadRequest(
      `Invalid order_by '${orderBy}'; expected indexed_on, server_modified_on or received_on, optionally with '-'`,
    );
  const descending = orderBy.startsWith('-');
  const { lo, hi } = applyRanges(
    t,
    p,
    [{ start: 'indexed_on_start', end: 'indexed_on_end', which: 'indexed' }],
    visible,
    req.quirks,
  );
  const preds: ((j: number) => boolean)[] = [];
  const keyParts: string[] = ['form', m.name];
  // received_on is the first receipt, server_modified_on the last change: neither follows indexed_on.
  const receivedAt = (j: number) => m.formReceived(t.event(j).record);
  const modifiedAt = (j: number) => m.formServerModified(t.event(j).record, j);
  addTimeFilter(p, 'received_on', receivedAt, preds, keyParts);
  addTimeFilter(p, 'server_modified_on', modifiedAt, preds, keyParts);
  const xmlns = [...(p.xmlns ?? []), ...(p['xmlns.exact'] ?? [])];
  if (xmlns.length) {
    const types = new Set(FORM_TYPES.flatMap((ft, k) => (xmlns.includes(ft.xmlns) ? [k] : [])));
    preds.push((j) => types.has(m.formTypeIndex(t.event(j).record)));
    keyParts.push(`x=${[...types].sort().join(',')}`);
  }
  if (p.app_id?.length) {
    const ok = p.app_id.includes(m.appId);
    preds.push(() => ok);
    keyParts.push(`a=${ok}`);
  }
  // HQ's index holds one document per id: a record re-indexed later is listed at its latest position only.
  preds.push((j) => j === t.latest(t.event(j).record, visible));
  keyParts.push(`v=${visible}`);
  if (m.changed) {
    // Deleted forms (and forms of deleted workers) are gone from every list.
    preds.push((j) => m.formVisible(j));
    keyParts.push(`g=${m.generation}`);
  }
  // "include_archived – only its presence counts" (ref §2.3).
  if (!('include_archived' in p)) {
    preds.push((j) => {
      const e = t.event(j);
      return !m.formArchived(e.record, j, e.kind);
    });
    keyParts.push('noarch');
  }
  let cacheable = true;
  const known = new Set([
    'limit',
    'offset',
    'order_by',
    'format',
    'xmlns',
    'xmlns.exact',
    'app_id',
    'indexed_on_start',
    'indexed_on_end',
    'received_on_start',
    'received_on_end',
    'server_modified_on_start',
    'server_modified_on_end',
    'include_archived',
    'cases__full',
  ]);
  const formAt = (j: number) => {
    const e = t.event(j);
    return m.form(e.record, j, e.kind);
  };
  if (addRawTermFilters(p, known, preds, formAt)) cacheable = false;
  const scanner = new Scanner(engine, t, {
    lo,
    hi,
    predicate: combine(preds),
    key: cacheable ? keyParts.join('|') : null,
  });
  const total = scanner.count();
  const casesFull = first(p, 'cases__full') === 'true';
  const field = orderBy.replace(/^-/, '');
  const sort =
    field === 'indexed_on'
      ? null
      : {
          valueAt: field === 'received_on' ? receivedAt : modifiedAt,
          key: cacheable ? `${keyParts.join('|')}|v=${visible}|o=${field}` : null,
        };
  const objects = orderedPage(engine, scanner, total, sort, descending, offset, limit).map((j) => {
    const e = t.event(j);
    return m.form(e.record, j, e.kind, { casesFull });
  });
  return envelope(req, paramOrder(req), limit, offset, total, objects);
}

function parseBool(name: string, value: string): boolean {
  const v = value.toLowerCase();
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new SandboxBadRequest(`'${name}' must be 'true' or 'false'; got '${value}'`);
}

function caseFacetPredicates(
  engine: Engine,
  m: ProjectModel,
  p: SandboxParams,
  typeParam: string,
  visible: number,
) {
  const t = m.cases;
  const preds: ((j: number) => boolean)[] = [];
  // HQ's index holds one document per id: a case re-indexed later is listed at its latest position only.
  preds.push((j) => j === t.latest(t.event(j).record, visible));
  const keyParts: string[] = [`v=${visible}`];
  if (m.changed) {
    // Deleted cases (and cases of deleted workers) are gone from case v1 and v2 alike.
    preds.push((j) => m.caseVisible(j));
    keyParts.push(`g=${m.generation}`);
  }
  const types = p[typeParam];
  if (types?.length) {
    const set = new Set(types);
    preds.push((j) => set.has(m.caseType(t.event(j).record)));
    keyParts.push(`t=${[...set].sort().join(',')}`);
  }
  const owners = p.owner_id;
  if (owners?.length) {
    const index = engine.owners(m);
    const set = new Set(owners.flatMap((o) => (index.has(o) ? [index.get(o)!] : [])));
    preds.push((j) => set.has(m.caseOwner(t.event(j).record)));
    keyParts.push(`o=${[...set].sort().join(',')}`);
  }
  const closed = p.closed;
  if (closed?.length) {
    const set = new Set(closed.map((v) => parseBool('closed', v)));
    preds.push((j) => {
      const e = t.event(j);
      return set.has(m.caseClosed(j, e.kind));
    });
    keyParts.push(`c=${[...set].sort().join(',')}`);
  }
  return { preds, keyParts };
}

function serveCasesV1(engine: Engine, m: ProjectModel, req: ServeRequest): string {
  const p = req.params;
  const t = m.cases;
  const visible = t.visibleLength(req.liveVisible ?? true);
  const limit = tastypieLimit(p, 5000);
  const offset = tastypieOffset(p);
  const orderBy = first(p, 'order_by') ?? 'server_date_modified';
  if (!/^-?(indexed_on|date_modified|server_date_modified)$/.test(orderBy))
    throw new SandboxBadRequest(
      `Invalid order_by '${orderBy}'; expected indexed_on, date_modified or server_date_modified, optionally with '-'`,
    );
  const { lo, hi } = applyRanges(
    t,
    p,
    [{ start: 'indexed_on_start', end: 'indexed_on_end', which: 'indexed' }],
    visible,
    req.quirks,
  );
  const { preds, keyParts } = caseFacetPredicates(engine, m, p, 'type', visible);
  // server_date_modified is the last change, not the last re-index: it does not follow indexed_on.
  const serverModifiedAt = (j: number) => m.caseServerModified(t.event(j).record, j);
  addTimeFilter(p, 'server_date_modified', serverModifiedAt, preds, keyParts);
  let cacheable = true;
  const known = new Set([
    'limit',
    'offset',
    'order_by',
    'format',
    'type',
    'owner_id',
    'closed',
    'indexed_on_start',
    'indexed_on_end',
    'server_date_modified_start',
    'server_date_modified_end',
  ]);
  const caseAt = (j: number) => {
    const e = t.event(j);
    return m.caseV1(e.record, j, e.kind);
  };
  if (addRawTermFilters(p, known, preds, caseAt)) cacheable = false;
  const scanner = new Scanner(engine, t, {
    lo,
    hi,
    predicate: combine(preds),
    key: cacheable ? ['case', m.name, ...keyParts].join('|') : null,
  });
  const total = scanner.count();
  const field = orderBy.replace(/^-/, '');
  const sort =
    field === 'indexed_on'
      ? null
      : {
          valueAt:
            field === 'server_date_modified'
              ? serverModifiedAt
              : (j: number) => m.casePhoneModified(t.event(j).record, j),
          key: cacheable ? ['case', m.name, ...keyParts, `v=${visible}`, `o=${field}`].join('|') : null,
        };
  const objects = orderedPage(engine, scanner, total, sort, orderBy.startsWith('-'), offset, limit).map(
    (j) => {
      const e = t.event(j);
      return m.caseV1(e.record, j, e.kind);
    },
  );
  return envelope(req, paramOrder(req), limit, offset, total, objects);
}

// ---- case v2 (cursor) -----------------------------------------------------------------------------------

const V2_DATE_FIELDS = ['last_modified', 'server_last_modified', 'indexed_on', 'date_opened', 'date_closed'];
const V2_SIMPLE = new Set([
  'limit',
  'cursor',
  'case_type',
  'case_name',
  'external_id',
  'owner_id',
  'closed',
  'include_deprecated',
  'query',
]);

function isV2Param(name: string): boolean {
  if (V2_SIMPLE.has(name) || isFieldFilterParam(name)) return true;
  if (name.startsWith('properties.') || name.startsWith('indices.')) return true;
  const dot = name.lastIndexOf('.');
  return (
    dot > 0 &&
    V2_DATE_FIELDS.includes(name.slice(0, dot)) &&
    ['gt', 'gte', 'lt', 'lte'].includes(name.slice(dot + 1))
  );
}

/** The id of the previous page's last case, inside HQ's cursor beside `indexed_on.gte`. */
const LAST_CASE_ID = 'last_case_id';

/**
 * HQ's case v2 cursor: base64 of the original query with `indexed_on.gte` set to the last case's
 * indexed_on and `last_case_id` to its id (ref §2.6: "The cursor encodes the whole original query").
 * The next page holds cases after (indexed_on, case_id) of that one, in that order.
 */
function encodeCursor(order: readonly [string, string][], lastIndexedOn: string, lastId: string): string {
  const qs = new URLSearchParams();
  for (const [k, v] of order)
    if (k !== 'cursor' && k !== 'indexed_on.gte' && k !== LAST_CASE_ID) qs.append(k, v);
  qs.append('indexed_on.gte', lastIndexedOn);
  qs.append(LAST_CASE_ID, lastId);
  return Buffer.from(qs.toString(), 'utf8').toString('base64');
}

function decodeCursor(cursor: string): { order: [string, string][]; lastId: string | null } {
  const qs = new URLSearchParams(Buffer.from(cursor, 'base64').toString('utf8'));
  const lastId = qs.get(LAST_CASE_ID);
  if (lastId !== null && !qs.has('indexed_on.gte'))
    throw new SandboxBadRequest(`Invalid cursor '${cursor.slice(0, 40)}'`);
  const order: [string, string][] = [];
  for (const [k, v] of qs) if (k !== LAST_CASE_ID) order.push([k, v]);
  return { order, lastId };
}

function toParams(order: readonly [string, string][]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [k, v] of order) {
    const list = out[k] ?? [];
    list.push(v);
    out[k] = list;
  }
  return out;
}

function serveCasesV2(engine: Engine, m: ProjectModel, req: ServeRequest): string {
  let order = paramOrder(req);
  let p = req.params;
  let lastId: string | null = null;
  const cursor = first(p, 'cursor');
  if (cursor !== undefined) {
    // "any other parameters sent alongside it are ignored" (ref §2.6).
    const decoded = decodeCursor(cursor);
    order = decoded.order;
    p = toParams(order);
    lastId = decoded.lastId;
  }
  for (const name of Object.keys(p))
    if (!isV2Param(name)) throw new SandboxBadRequest(`'${name}' is not a valid parameter.`);
  if ('query' in p)
    throw new SandboxBadRequest(`The sandbox does not implement the 'query' (case search) filter`);
  const filterFields = caseFieldFilter(p);
  const rawLimit = first(p, 'limit');
  let limit = 20;
  if (rawLimit !== undefined) {
    if (!/^\d+$/.test(rawLimit))
      throw new SandboxBadRequest(`limit must be a positive integer; got '${rawLimit}'`);
    limit = Number.parseInt(rawLimit, 10);
    if (limit > 5000) throw new SandboxBadRequest('Cannot request more than 5000 cases per request.');
    if (limit < 1) throw new SandboxBadRequest(`limit must be a positive integer; got '${rawLimit}'`);
  }
  const t = m.cases;
  const visible = t.visibleLength(req.liveVisible ?? true);
  let lo = 0;
  let hi = visible;
  const preds: ((j: number) => boolean)[] = [];
  let cacheable = true;
  const build = (j: number) => {
    const e = t.event(j);
    return m.caseV2(e.record, j, e.kind);
  };
  for (const field of V2_DATE_FIELDS) {
    for (const op of ['gt', 'gte', 'lt', 'lte'] as const) {
      const values = p[`${field}.${op}`];
      if (!values?.length) continue;
      const micros = values.map((v) => parseFilterDate(`${field}.${op}`, v, 'v2'));
      if (field === 'indexed_on') {
        const which = 'indexed';
        if (op === 'gt' || op === 'gte') {
          const x = Math.min(...micros) + (op === 'gt' ? 1 : 0);
          lo = Math.max(lo, Math.min(visible, t.lowerBound(x, which)));
        } else {
          const x = Math.max(...micros) + (op === 'lte' ? 1 : 0);
          hi = Math.min(hi, t.lowerBound(x, which));
        }
      } else {
        cacheable = false;
        preds.push((j) => {
          const value = build(j)[field];
          if (typeof value !== 'string') return false;
          const v = parseFilterDate(field, value, 'v2');
          return micros.some((x) =>
            op === 'gt' ? v > x : op === 'gte' ? v >= x : op === 'lt' ? v < x : v <= x,
          );
        });
      }
    }
  }
  const { preds: facetPreds, keyParts } = caseFacetPredicates(engine, m, p, 'case_type', visible);
  preds.push(...facetPreds);
  for (const [name, values] of Object.entries(p)) {
    const wanted = new Set(values);
    if (name === 'case_name' || name === 'external_id') {
      cacheable = false;
      preds.push((j) => wanted.has(String(build(j)[name])));
    } else if (name.startsWith('properties.')) {
      cacheable = false;
      const prop = name.slice('properties.'.length);
      preds.push((j) => wanted.has(String((build(j).properties as JsonObject)[prop])));
    } else if (name.startsWith('indices.')) {
      cacheable = false;
      const index = name.slice('indices.'.length);
      preds.push((j) => {
        const entry = (build(j).indices as JsonObject)[index] as JsonObject | undefined;
        return entry !== undefined && wanted.has(String(entry.case_id));
      });
    }
  }
  const predicate = combine(preds);
  // A cursor's tie group at indexed_on.gte keeps only the cases after last_case_id.
  const head: number[] = [];
  if (lastId !== null) {
    const gte = Math.min(...p['indexed_on.gte']!.map((v) => parseFilterDate('indexed_on.gte', v, 'v2')));
    const tieEnd = Math.max(lo, Math.min(hi, t.lowerBound(gte + 1, 'indexed')));
    for (let j = lo; j < tieEnd; j++)
      if ((!predicate || predicate(j)) && m.caseId(t.event(j).record) > lastId) head.push(j);
    head.sort((a, b) => (m.caseId(t.event(a).record) < m.caseId(t.event(b).record) ? -1 : 1));
    lo = tieEnd;
  }
  const scanner = new Scanner(engine, t, {
    lo,
    hi,
    predicate,
    key: cacheable ? ['case-v2', m.name, ...keyParts].join('|') : null,
  });
  // With the cursor applied, HQ's matching_records counts what is left (its cursor adds indexed_on.gte).
  const matching = head.length + scanner.count();
  // Sorted by (indexed_on, case_id): collect a tie group more than needed, so the last group is whole.
  const need = Math.max(0, limit - head.length);
  const rest = need === 0 ? [] : scanner.collect(0, need + t.tieRun, false);
  const caseKey = (j: number) => `${String(t.time(j)).padStart(20, '0')} ${m.caseId(t.event(j).record)}`;
  rest.sort((a, b) => (caseKey(a) < caseKey(b) ? -1 : caseKey(a) > caseKey(b) ? 1 : 0));
  const events = [...head.slice(0, limit), ...rest.slice(0, need)];
  const cases = events.map((j) => filterFields(build(j)));
  const body: JsonObject = { matching_records: matching, cases };
  if (matching > events.length && events.length > 0) {
    const last = events[events.length - 1]!;
    const next = encodeCursor(order, formatMicros(t.time(last), 'Z'), m.caseId(t.event(last).record));
    const path = req.path ?? `/a/${m.name}/api/case/v2/`;
    body.next = `${req.origin ?? 'http://127.0.0.1'}${path}?cursor=${encodeURIComponent(next)}`;
  }
  return JSON.stringify(body);
}

// ---- small resources ---------------------------------------------------------------------------------

/** `det_export_instance/v1`: tastypie's standard Paginator over the project's DET exports. */
export function serveDetExportList(
  req: Omit<ServeRequest, 'resource'>,
  objects: readonly JsonObject[],
): string {
  const limit = tastypieLimit(req.params, 1000);
  const offset = tastypieOffset(req.params);
  const page = objects.slice(offset, offset + limit);
  return envelope(
    { ...req, resource: 'form' },
    paramOrder({ ...req, resource: 'form' }),
    limit,
    offset,
    objects.length,
    page,
  );
}

function serveSmall(req: ServeRequest, all: () => JsonObject[], max: number): string {
  const limit = tastypieLimit(req.params, max);
  const offset = tastypieOffset(req.params);
  let records = all();
  if (req.resource === 'location-v2') {
    for (const name of ['site_code', 'name', 'location_type_code', 'parent_location_id']) {
      const values = req.params[name];
      if (values?.length) records = records.filter((r) => values.includes(String(r[name])));
    }
  }
  if (req.resource === 'user' && req.params.group?.length) {
    const groups = req.params.group;
    records = records.filter((r) => (r.groups as string[]).some((g) => groups.includes(g)));
  }
  const from = req.quirks?.stuckNext ? 0 : offset;
  return envelope(req, paramOrder(req), limit, offset, records.length, records.slice(from, from + limit));
}

function range<T>(n: number, f: (k: number) => T): T[] {
  const out: T[] = [];
  for (let k = 0; k < n; k++) out.push(f(k));
  return out;
}

/** `endlessForms`: a page of `limit` new forms from `indexed_on_start` on, one a second, always with a next page. */
function serveEndlessForms(req: ServeRequest): string {
  const limit = tastypieLimit(req.params, 1000);
  const startText = first(req.params, 'indexed_on_start');
  const startMicros = startText
    ? parseFilterDate('indexed_on_start', startText, 'v1')
    : Date.UTC(2024, 0, 1) * 1000;
  const firstSecond = Math.ceil(startMicros / 1_000_000);
  const objects: JsonObject[] = [];
  for (let i = 0; i < limit; i++) {
    const second = firstSecond + i;
    const at = new Date(second * 1000).toISOString().replace('Z', '000Z');
    const id = `endless-${second}`;
    objects.push({
      id,
      domain: req.project,
      app_id: 'endless-app',
      archived: false,
      type: 'data',
      indexed_on: at,
      received_on: at,
      server_modified_on: at,
      form: {
        '@xmlns': 'http://openrosa.org/formdesigner/endless',
        '@name': 'Endless',
        meta: { instanceID: id },
      },
      metadata: { instanceID: id, timeStart: at, timeEnd: at },
      resource_uri: '',
    });
  }
  const path = req.path ?? `/a/${req.project}/api/form/v1/`;
  const meta = {
    limit,
    next: pageLink(path, paramOrder(req), limit, 0),
    offset: 0,
    previous: null,
    total_count: null,
  };
  return JSON.stringify({ meta, objects });
}

/** Serves one list request; throws SandboxBadRequest for a 400 and UnknownProjectError for no such project. */
export function serveList(dataset: SandboxDataset, req: ServeRequest): string {
  const engine = engineFor(dataset);
  const m = dataset.model(req.project);
  switch (req.resource) {
    case 'form':
      return req.quirks?.endlessForms ? serveEndlessForms(req) : serveForms(engine, m, req);
    case 'case':
      return serveCasesV1(engine, m, req);
    case 'case-v2':
      return serveCasesV2(engine, m, req);
    case 'user':
      return serveSmall(
        req,
        () => range(m.mobileUsers, (u) => u).flatMap((u) => (m.userVisible(u) ? [m.user(u)] : [])),
        1000,
      );
    case 'web-user':
      return serveSmall(req, () => range(m.webUsers, (u) => m.webUser(u)), 1000);
    case 'group':
      return serveSmall(req, () => range(m.groups, (g) => m.group(g)), 1000);
    case 'location':
      return serveSmall(req, () => range(m.locations, (l) => m.locationV1(l, req.origin)), 1000);
    case 'location-v2':
      return serveSmall(req, () => range(m.locations, (l) => m.locationV2(l)), 5000);
    case 'location_type':
      return serveSmall(req, () => range(m.locationTypeCount, (l) => m.locationType(l, req.origin)), 1000);
    case 'messaging-event':
    case 'ucr':
      return (req.resource === 'ucr' ? m.ucr : m.messagingEvents).serve({
        project: req.project,
        params: req.params,
        origin: req.origin ?? 'http://127.0.0.1',
      });
    case 'application':
      // DoesNothingPaginatorCompat: every app at once, meta.limit null (ref §3).
      return JSON.stringify({
        meta: { limit: null, next: null, offset: 0, previous: null, total_count: 1 },
        objects: [m.application()],
      });
  }
}

/**
 * One page as the server would send it, without HTTP: for benchmarks measuring pure serve cost.
 * `params` may be a record of arrays (repeated names) or URLSearchParams.
 */
export function servePageDirect(
  dataset: SandboxDataset,
  project: string,
  resource: SandboxResource,
  params: SandboxParams | URLSearchParams = {},
): string {
  let record: SandboxParams;
  let order: [string, string][] | undefined;
  if (params instanceof URLSearchParams) {
    order = [...params.entries()];
    record = toParams(order);
  } else record = params;
  return serveList(dataset, { project, resource, params: record, ...(order ? { paramOrder: order } : {}) });
}

/** Helper for tests and clients: HQ's naive form of an indexed_on value (drop the Z, ref §8). */
export function naive(value: string): string {
  return value.endsWith('Z') ? value.slice(0, -1) : value;
}

export { formatMicros };

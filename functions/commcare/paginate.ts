/**
 * The three ways HQ pages a list, each an async generator of pages that holds one page at a time.
 *
 * - keyset (form, case v1): DET's DatePaginator. `order_by=indexed_on`, and each next request sends
 *   `indexed_on_start=<indexed_on of the last record>`; the bound is inclusive, so records at that exact
 *   value that were already emitted are dropped by id. `meta.next` only says whether more may exist.
 * - offset (users, groups, locations, applications, ...): follow tastypie's relative `meta.next`.
 * - cursor (case v2, messaging-event, ucr): follow the `next` link; its `cursor` is the resume point.
 *
 * A page is the last when HQ gives no `next`, or it is empty, or it is shorter than the limit HQ applied
 * (which also covers resources whose `total_count` is null and whose `next` is always present).
 */
import type { JsonObject, JsonValue } from '../common/json';
import { formatNaiveUtc, type Micros, parseTimestamp, requireTimestamp } from './dates';
import { CommCareResponseError, CommCareStuckError } from './errors';
import type { CommCareHttp, RequestHooks } from './http';
import { BodyNotJsonError, ListItems, parseListBody, peekFirstItemField, readListBody } from './page-body';
import {
  type Envelope,
  listKeyOf,
  parseEnvelope,
  type ResourceSpec,
  resolveNext,
  withQuery,
} from './resources';
import type { PageRecords, PullPosition, QueryParams, RecordKeyPath } from './types';

export interface PagingContext {
  readonly http: CommCareHttp;
  readonly baseUrl: string;
  readonly project: string;
  /** The resource's list URL (no query). */
  readonly url: string;
  readonly spec: ResourceSpec;
  readonly hooks?: RequestHooks;
  /** Keep each record's bytes (`rawJsonOf`); see `CommCareClientOptions.keepRawRecords`. */
  readonly keepRaw?: boolean;
  /** The only parts of a record the caller reads (`PullRequest.recordKeys`); unused with `keepRaw`. */
  readonly recordKeys?: readonly RecordKeyPath[];
}

/** A page before numbering. */
export interface RawPage {
  readonly records: PageRecords;
  readonly position: PullPosition | null;
  readonly totalCount: number | null;
  /** Set by the keyset pager: true when this page ends the pull (no request follows it). */
  readonly last?: boolean;
}

export async function fetchEnvelope(ctx: PagingContext, url: string): Promise<Envelope> {
  return await ctx.http.get(url, ctx.project, ctx.hooks ?? {}, (bytes) => readEnvelope(ctx, url, bytes));
}

/** The envelope of a list body that `url` answered. */
export function readEnvelope(ctx: PagingContext, url: string, bytes: Buffer): Envelope {
  const body = parseListBody(bytes, listKeyOf(ctx.spec), ctx.keepRaw ?? false);
  return parseEnvelope(ctx.spec, body, new URL(url).pathname);
}

/**
 * A keyset response: the envelope (its `records` empty when the items stay bytes) and the items, whose
 * `indexed_on` and ids are read without parsing them.
 */
interface KeyedResponse {
  readonly envelope: Envelope;
  readonly items: ListItems;
}

function keyFieldsOf(spec: ResourceSpec): string[] {
  return spec.idField === 'id' ? [KEY_FIELD, 'id'] : [KEY_FIELD, spec.idField, 'id'];
}

/** The keyset response `url` answered, read by `readKeyed`. */
async function fetchKeyed(ctx: PagingContext, url: string): Promise<KeyedResponse> {
  return await ctx.http.get(url, ctx.project, ctx.hooks ?? {}, (bytes) => readKeyed(ctx, url, bytes));
}

function readKeyed(ctx: PagingContext, url: string, bytes: Buffer): KeyedResponse {
  const fields = keyFieldsOf(ctx.spec);
  const origin = new URL(url).pathname;
  const keepRaw = ctx.keepRaw ?? false;
  const { recordKeys } = ctx;
  const { root, items } = readListBody(bytes, listKeyOf(ctx.spec), { fields, keepRaw, origin, recordKeys });
  const envelope = parseEnvelope(ctx.spec, root, origin);
  return { envelope, items: items ?? ListItems.ofRecords(envelope.records, fields) };
}

/** True when a response of `count` records is the last page. */
function isLastPage(envelope: Envelope, requestedLimit: number, count = envelope.records.length): boolean {
  if (count === 0 || envelope.next === null) return true;
  return count < (envelope.limit ?? requestedLimit);
}

function itemKey(items: ListItems, k: number, field: string, spec: ResourceSpec): Micros {
  return keyOf(items.field(k, field), field, spec);
}

function itemId(items: ListItems, k: number, spec: ResourceSpec): string {
  return idOf(items.field(k, spec.idField) ?? items.field(k, 'id'), spec);
}

function recordId(record: JsonObject, spec: ResourceSpec): string {
  return idOf(record[spec.idField] ?? record.id, spec);
}

function idOf(value: JsonValue | undefined, spec: ResourceSpec): string {
  if (typeof value !== 'string' && typeof value !== 'number') {
    throw new CommCareResponseError(
      `a ${spec.name} record has no "${spec.idField}" (string or number) to identify it; received ${JSON.stringify(value ?? null)}`,
    );
  }
  return String(value);
}

function recordKey(record: JsonObject, field: string, spec: ResourceSpec): Micros {
  return keyOf(record[field], field, spec);
}

function keyOf(value: JsonValue | undefined, field: string, spec: ResourceSpec): Micros {
  const key = typeof value === 'string' ? parseTimestamp(value) : null;
  if (key === null) {
    throw new CommCareResponseError(
      `a ${spec.name} record has no readable "${field}" timestamp; received ${JSON.stringify(value ?? null)}`,
    );
  }
  return key;
}

/**
 * The resume point as records are emitted: the last emitted timestamp and the ids emitted at exactly that
 * timestamp (which an inclusive `*_start` bound will send again).
 */
class PositionTracker {
  key: Micros | null;
  ids: string[];
  constructor(start: PullPosition | null) {
    this.key = start?.indexedOn ? requireTimestamp(start.indexedOn, 'from.indexedOn') : null;
    this.ids = this.key === null ? [] : [...(start?.boundaryIds ?? [])];
  }
  add(key: Micros, id: string): void {
    if (key === this.key) {
      this.ids.push(id);
    } else {
      this.key = key;
      this.ids = [id];
    }
  }
  snapshot(cursor?: string | null): PullPosition {
    const base = {
      indexedOn: this.key === null ? null : formatNaiveUtc(this.key),
      boundaryIds: [...this.ids],
    };
    return cursor === undefined ? base : { ...base, cursor };
  }
}

export interface KeysetOptions {
  readonly params: QueryParams;
  /** Where to start: `indexed_on_start` and the ids already emitted there. */
  readonly start: PullPosition | null;
  /** `indexed_on_end` to send (naive UTC), or null. */
  readonly endParam: string | null;
  /**
   * Stop before records at or after this instant (parallel windows: the next window owns them). The
   * window ends as soon as a page reaches it, so a crowd of records at the boundary cannot get it stuck.
   */
  readonly stopBefore: Micros | null;
  readonly pageSize: number;
}

const KEY_FIELD = 'indexed_on';

/** HQ-like servers compare date filters at seconds at the coarsest (HQ's Elasticsearch keeps milliseconds). */
const COARSEST_FILTER_MICROS = 1_000_000;

/**
 * Keyset paging on `indexed_on`. Each window of a parallel pull, and each page of a window, owns the
 * records from its start on: a record before the start was emitted by the page or window before it
 * (or a previous run), however coarsely the server compares `indexed_on_start`, so it is dropped; a
 * record at exactly the start is dropped when its id was emitted there. A server that ignores the
 * filter or the order is caught instead of followed: a record earlier than the start by more than the
 * coarsest precision a server may compare at (one second), or records out of `indexed_on` order, stop
 * the pull with `CommCareStuckError`, and the start never moves backwards.
 */
export async function* keysetPages(ctx: PagingContext, options: KeysetOptions): AsyncGenerator<RawPage> {
  const { spec } = ctx;
  const position = new PositionTracker(options.start);
  let startKey = position.key;
  let boundary = new Set(position.ids);
  let limit = options.pageSize;
  for (;;) {
    const params: Record<string, readonly string[]> = {
      ...options.params,
      order_by: [KEY_FIELD],
      limit: [String(limit)],
    };
    if (startKey !== null) params.indexed_on_start = [formatNaiveUtc(startKey)];
    if (options.endParam !== null) params.indexed_on_end = [options.endParam];
    const { envelope, items } = await fetchKeyed(ctx, withQuery(ctx.url, params));

    const kept: number[] = [];
    let reachedStop = false;
    let lastKey: Micros | null = null;
    for (let k = 0; k < items.length; k += 1) {
      const key = itemKey(items, k, KEY_FIELD, spec);
      if (lastKey !== null && key < lastKey) {
        throw new CommCareStuckError(
          `paging ${spec.name} on project "${ctx.project}" cannot go on: HQ answered order_by=indexed_on with ` +
            `a record indexed at ${formatNaiveUtc(key)} after one indexed at ${formatNaiveUtc(lastKey)}, so ` +
            'it does not sort by indexed_on and no resume point would be safe',
        );
      }
      if (startKey !== null && key < startKey - (startKey % COARSEST_FILTER_MICROS)) {
        throw new CommCareStuckError(
          `paging ${spec.name} on project "${ctx.project}" cannot go on: HQ answered ` +
            `indexed_on_start=${formatNaiveUtc(startKey)} with a record indexed at ${formatNaiveUtc(key)}, ` +
            'earlier than the start, so it ignores indexed_on_start and would serve the same records again',
        );
      }
      if (options.stopBefore !== null && key >= options.stopBefore) {
        reachedStop = true;
        break;
      }
      lastKey = key;
      const id = itemId(items, k, spec);
      if (startKey !== null && (key < startKey || (key === startKey && boundary.has(id)))) continue;
      kept.push(k);
      position.add(key, id);
    }
    const last = reachedStop || isLastPage(envelope, limit, items.length) || lastKey === null;
    const records = items.select(kept);
    yield { records, position: position.snapshot(), totalCount: envelope.totalCount, last };

    if (last || lastKey === null) return;
    if (startKey !== null && lastKey <= startKey) {
      // A full page that ends at the start value (or, on a server comparing whole seconds, before it):
      // the same request would come back unchanged.
      if (limit >= spec.maxLimit) {
        throw new CommCareStuckError(
          `paging ${spec.name} on project "${ctx.project}" is stuck: more than ${limit} records share ` +
            `indexed_on ${formatNaiveUtc(startKey)} (as HQ compares it), and ${spec.maxLimit} is the largest page ` +
            'HQ serves for this resource, so indexed_on_start cannot advance past them',
        );
      }
      const grown = Math.min(spec.maxLimit, limit * 2);
      ctx.http.log('warn', 'more records share one indexed_on than fit in a page; growing the page', {
        resource: spec.name,
        indexedOn: formatNaiveUtc(startKey),
        from: limit,
        to: grown,
      });
      limit = grown;
      // Everything emitted at this value so far must be dropped when the bigger page repeats it.
      boundary = new Set(position.key === startKey ? position.ids : []);
      continue;
    }
    startKey = lastKey;
    boundary = new Set(position.key === startKey ? position.ids : []);
    limit = options.pageSize;
  }
}

/**
 * Remembers the URLs of one offset or cursor pull: a `next` link leading back to a page already read
 * would loop forever (two URLs bouncing, or one repeating).
 */
class VisitedUrls {
  private readonly seen = new Set<string>();
  constructor(private readonly ctx: PagingContext) {}
  visit(url: string): void {
    if (this.seen.has(url)) {
      const u = new URL(url);
      throw new CommCareStuckError(
        `paging ${this.ctx.spec.name} on project "${this.ctx.project}" cannot go on: HQ's next link leads back ` +
          `to a page already read in this pull (${u.pathname}${u.search}), so following it would loop; ` +
          `${this.seen.size} pages were read`,
      );
    }
    this.seen.add(url);
  }
}

/**
 * Catches a `next` link that leads to a new URL whose page holds exactly the records of the page before
 * (an HQ-like server that ignores `offset` or the cursor): the pull would go on forever with the same
 * records. Pages of one record are left to the run's budget (a tie at a cursor boundary may repeat one).
 */
class RepeatedPages {
  private previous: string | null = null;
  constructor(private readonly ctx: PagingContext) {}
  check(records: readonly JsonObject[], pages: number): void {
    if (records.length < 2) {
      this.previous = null;
      return;
    }
    const ids: string[] = [];
    for (const record of records) {
      const value: JsonValue | undefined = record[this.ctx.spec.idField] ?? record.id;
      if (typeof value !== 'string' && typeof value !== 'number') {
        this.previous = null;
        return;
      }
      ids.push(String(value));
    }
    const key = JSON.stringify(ids);
    if (key === this.previous) {
      throw new CommCareStuckError(
        `paging ${this.ctx.spec.name} on project "${this.ctx.project}" cannot go on: HQ answered page ${pages + 1} ` +
          `with exactly the ${ids.length} records of the page before (ids ${ids[0]} … ${ids[ids.length - 1]}), so ` +
          'its next link does not advance and following it would repeat them forever',
      );
    }
    this.previous = key;
  }
}

export interface OffsetOptions {
  readonly params: QueryParams;
  readonly pageSize: number;
}

export async function* offsetPages(ctx: PagingContext, options: OffsetOptions): AsyncGenerator<RawPage> {
  let url = withQuery(ctx.url, { ...options.params, limit: [String(options.pageSize)] });
  const visited = new VisitedUrls(ctx);
  const repeated = new RepeatedPages(ctx);
  for (let pages = 0; ; pages++) {
    visited.visit(url);
    const envelope = await fetchEnvelope(ctx, url);
    repeated.check(envelope.records, pages);
    yield { records: envelope.records, position: null, totalCount: envelope.totalCount };
    if (isLastPage(envelope, options.pageSize) || envelope.next === null) return;
    url = resolveNext(ctx.baseUrl, envelope.next);
  }
}

export interface CursorOptions {
  readonly params: QueryParams;
  readonly start: PullPosition | null;
  readonly since: string | null;
  readonly until: string | null;
  readonly pageSize: number;
}

function cursorOf(baseUrl: string, next: string | null): string | null {
  if (next === null) return null;
  return new URL(next, `${baseUrl}/`).searchParams.get('cursor');
}

export async function* cursorPages(ctx: PagingContext, options: CursorOptions): AsyncGenerator<RawPage> {
  const { spec } = ctx;
  const window = spec.dateWindow;
  const position = new PositionTracker(window ? options.start : null);
  const params: Record<string, readonly string[]> = { ...options.params, limit: [String(options.pageSize)] };
  if (options.start?.cursor) {
    params.cursor = [options.start.cursor];
  } else if (window) {
    const since = options.start?.indexedOn ?? options.since;
    if (since !== null) params[window.sinceParam] = [since];
    if (window.orderBy) params.order_by = [window.orderBy];
  }
  if (window && options.until !== null && !options.start?.cursor) params[window.untilParam] = [options.until];
  let url = withQuery(ctx.url, params);
  let cursor: string | null = options.start?.cursor ?? null;
  const visited = new VisitedUrls(ctx);
  const repeated = new RepeatedPages(ctx);
  for (let pages = 0; ; pages++) {
    visited.visit(url);
    const envelope = await fetchEnvelope(ctx, url);
    repeated.check(envelope.records, pages);
    const records: JsonObject[] = [];
    // HQ's messaging-event cursor restarts at `gte` the last date and skips one id only, so records
    // tied with the last one come back on the next page: drop the ids already emitted at that date.
    const boundaryKey = position.key;
    const boundary = new Set(position.ids);
    for (const record of envelope.records) {
      if (window) {
        const key = recordKey(record, window.field, spec);
        const id = recordId(record, spec);
        if (key === boundaryKey && boundary.has(id)) continue;
        position.add(key, id);
      }
      records.push(record);
    }
    const last = isLastPage(envelope, options.pageSize);
    cursor = last ? null : cursorOf(ctx.baseUrl, envelope.next);
    yield {
      records,
      position: position.snapshot(cursor),
      totalCount: envelope.totalCount,
    };
    if (last || envelope.next === null) return;
    url = resolveNext(ctx.baseUrl, envelope.next);
  }
}

/**
 * The newest page of a keyset pull, read newest first (`order_by=-indexed_on`, from the pull's start):
 * where the range ends, and the pull's last records, fetched in the first round trip of a parallel
 * pull instead of a one-record probe for the range's end.
 *
 * The page owns the records indexed after its oldest one: all of them are on it, as it holds the newest
 * records. Records at exactly its oldest `indexed_on` may go on below the page, so they are left to the
 * windows before it. The page is kept as the body's bytes while the windows run (a page of 1,000 forms
 * is a few MB as bytes, several times that once read); its records are parsed when they are read.
 */
export interface TailPage {
  /** `indexed_on` of the newest record. */
  readonly newest: Micros;
  /** `indexed_on` of the oldest record on the page. */
  readonly oldest: Micros;
  /** Records on the page. */
  readonly size: number;
  /** Records the page owns: those indexed after `oldest`. */
  readonly owned: number;
  /**
   * The owned records, oldest first, with the position after them; the pull's last page. With `from`
   * (after `oldest`), only those indexed at or after it: the windows before the page reached `from`.
   */
  read(from?: Micros): RawPage;
}

/**
 * The answer to the tail request before its page is read: the newest record's `indexed_on`, peeked from
 * the body's first record (`peekFirstItemField`), which is what planning windows needs, and the page
 * itself, read when `read` is called (~40 ms for 1,000 forms while the code is still cold, the time the
 * first round's other answers need the thread for).
 */
export interface TailAnswer {
  /** `indexed_on` of the newest record; null when it could not be peeked (`read` then gives it). */
  readonly newest: Micros | null;
  /**
   * The page, read once (later calls give the same); null when the pull has no records, when the server
   * does not sort by `-indexed_on` (the page is not newest first), or when a body that peeked well turns
   * out not to be JSON further on: its end then cannot be known this way.
   */
  read(): TailPage | null;
}

/** Fetches the tail page (see `TailAnswer`); the body stays bytes until `read`. */
export async function fetchTailAnswer(
  ctx: PagingContext,
  options: { readonly params: QueryParams; readonly start: PullPosition | null; readonly pageSize: number },
): Promise<TailAnswer> {
  const params: Record<string, readonly string[]> = {
    ...options.params,
    order_by: [`-${KEY_FIELD}`],
    limit: [String(options.pageSize)],
  };
  if (options.start?.indexedOn) params.indexed_on_start = [options.start.indexedOn];
  const url = withQuery(ctx.url, params);
  const answer = await ctx.http.get(url, ctx.project, ctx.hooks ?? {}, (bytes) => {
    const text = peekFirstItemField(bytes, listKeyOf(ctx.spec), KEY_FIELD);
    const newest = text === null ? null : parseTimestamp(text);
    // A body that cannot be peeked is read at once, so that one that is not JSON is retried here.
    return newest === null
      ? { newest: null, bytes: null, page: tailOf(ctx, readKeyed(ctx, url, bytes)) }
      : { newest, bytes, page: undefined };
  });
  const held: { bytes: Buffer | null; page: TailPage | null | undefined } = {
    bytes: answer.bytes,
    page: answer.page,
  };
  return {
    newest: answer.newest ?? held.page?.newest ?? null,
    read(): TailPage | null {
      if (held.page === undefined) {
        const bytes = held.bytes!;
        held.bytes = null;
        try {
          held.page = tailOf(ctx, readKeyed(ctx, url, bytes));
        } catch (error) {
          if (!(error instanceof BodyNotJsonError)) throw error;
          held.page = null;
        }
        // The peek read the first record; a page whose first record is not the newest is not newest first.
        if (held.page !== null && held.page.newest !== answer.newest) held.page = null;
      }
      return held.page;
    },
  };
}

/** The tail page of a read answer; null when it has no records or is not newest first. */
function tailOf(ctx: PagingContext, { envelope, items }: KeyedResponse): TailPage | null {
  const { spec } = ctx;
  const keys = Array.from({ length: items.length }, (_, k) => itemKey(items, k, KEY_FIELD, spec));
  if (keys.length === 0 || keys.some((key, i) => i > 0 && key > keys[i - 1]!)) return null;
  const newest = keys[0]!;
  const oldest = keys[keys.length - 1]!;
  let owned = 0;
  for (const key of keys) if (key > oldest) owned += 1;
  return {
    newest,
    oldest,
    size: keys.length,
    owned,
    read(from = oldest + 1): RawPage {
      // Owned records, oldest first: the page is newest first.
      const taken: number[] = [];
      for (let k = keys.length - 1; k >= 0; k -= 1) if (keys[k]! >= from && keys[k]! > oldest) taken.push(k);
      const position = new PositionTracker(null);
      for (const k of taken) position.add(keys[k]!, itemId(items, k, spec));
      return {
        records: items.select(taken),
        position: position.snapshot(),
        totalCount: envelope.totalCount,
        last: true,
      };
    },
  };
}

/**
 * The CommCare HQ client: `pages()` / `records()` for any list resource, incremental on `indexed_on` for
 * forms and cases, optionally in parallel windows, plus `userDomains()` for checking a key.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { JsonObject } from '../common/json';
import { DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, RunBudget, type RunBudgetUsed } from './budget';
import { formatNaiveUtc, type Micros, requireTimestamp, toNaiveUtc } from './dates';
import { type HqExport, parseHqExport, requireWorkbook } from './det-exports';
import { CommCareConfigError, CommCareRequestError } from './errors';
import { CommCareHttp, type CommCareLogger, type CommCareStats, type RequestHooks } from './http';
import {
  cursorPages,
  fetchTailAnswer,
  keysetPages,
  offsetPages,
  type PagingContext,
  type RawPage,
  type TailAnswer,
  type TailPage,
} from './paginate';
import {
  checkTransport,
  parseEnvelope,
  resolveBaseUrl,
  resolveNext,
  resourceSpec,
  resourceUrl,
  type UrlStyle,
  userDomainsUrl,
  withQuery,
} from './resources';
import type { Page, PullPosition, PullRequest, QueryParams } from './types';
import {
  AimdLimiter,
  earlyReleaseHooks,
  type FirstRoundRequest,
  HeldSlot,
  orderedMerge,
  RequestBudget,
  splitRange,
  withinBudget,
} from './windows';

export interface CommCareClientOptions {
  /** `prod` (https://www.commcarehq.org), `local` (http://localhost:8000) or any http(s) base URL. */
  readonly baseUrl: string;
  /**
   * Send the key over plain http to a host that is not loopback. @default false - such a base URL is
   * refused (`CommCareConfigError`), because the key would cross the network in clear
   */
  readonly allowInsecureHttp?: boolean;
  /** The web user's login (email) the key belongs to. */
  readonly username: string;
  /** The API key; sent only in the `Authorization: ApiKey <username>:<key>` header. */
  readonly apiKey: string;
  /** @default 'resource-first' - `/a/<project>/api/form/v1/`; `legacy` is DET's `/a/<project>/api/v0.5/form/` */
  readonly urlStyle?: UrlStyle;
  /** Page size when a request gives none; always capped at the resource's maximum. @default 1000 */
  readonly pageSize?: number;
  /** Whole-request timeout. @default 60000 (DET's 60 s) */
  readonly timeoutMs?: number;
  /** Retries after 5xx, resets, timeouts and unreadable bodies, per request. @default 8 */
  readonly maxRetries?: number;
  /** Time a request may spend failing and retrying before giving up. @default 300000 (DET's 300 s) */
  readonly maxRetryTimeMs?: number;
  /** Total time one request may wait on 429s. @default 1800000 (30 min) */
  readonly maxThrottleWaitMs?: number;
  /** First backoff step; each retry doubles it (full jitter). @default 1000 */
  readonly backoffBaseMs?: number;
  /** Largest backoff step. @default 60000 */
  readonly backoffMaxMs?: number;
  /**
   * Keep each record's bytes as HQ sent them (`rawJsonOf`), for writers of raw JSON lines. A record's
   * bytes are a view of its whole page, so keeping them holds every page until the garbage collector
   * has freed all of its records, tens of MB at a time; only the raw export asks for them. @default false
   */
  readonly keepRawRecords?: boolean;
  /**
   * Windows fetched at once for form and case pulls. 1 is DET's sequential pull with no extra requests.
   * @default 1
   */
  readonly concurrency?: number;
  /** Ceiling the adaptive limit may grow to after successes. @default the value of `concurrency` */
  readonly maxConcurrency?: number;
  /**
   * Successful requests before the adaptive limit grows by one. @default the current limit: one more per
   * round of requests, as TCP grows its window.
   */
  readonly increaseAfter?: number;
  /**
   * Pages one window may hold unread; windows ahead of the head also share a budget of up to
   * (2 × maxConcurrency − 1) × this, counted before a page is fetched (see windows.ts). Each page in
   * flight or held costs about its body's bytes (pages are held as HQ's bytes, see page-body.ts): ~2 MB
   * for 1,000 forms, ~3 MB for 5,000 cases. @default 1
   */
  readonly windowQueuePages?: number;
  /**
   * Pages of records aimed at per parallel window. With one page a window, a window ahead of the head
   * fetches all of it at once, so `limit` requests stay in flight with one page held per window; larger
   * windows need as many pages held to keep them busy. @default 1
   */
  readonly pagesPerWindow?: number;
  /** @default `commcare-export-service` */
  readonly userAgent?: string;
  /**
   * Largest response body accepted, counted after decompression; a larger one fails the pull at once
   * (`CommCareResponseError`). A 1,000-form page is about 2 MB, a 5,000-case page with large properties
   * a few tens of MB. @default 268435456 (256 MiB)
   */
  readonly maxResponseBytes?: number;
  /**
   * Records HQ may send in this run, all data sources together; past it the run stops with
   * `CommCareBudgetError` (an endless page stream). @default 100,000,000 (`DEFAULT_MAX_RECORDS`; see budget.ts)
   */
  readonly maxRecords?: number;
  /**
   * Response bytes (after decompression) HQ may send in this run; past it the run stops with
   * `CommCareBudgetError`, and no single answer may go past what is left. @default 1 TiB (`DEFAULT_MAX_BYTES`)
   */
  readonly maxBytes?: number;
  /** What earlier slices of the same run used of the budget (a Lambda continuation). @default nothing */
  readonly budgetUsed?: RunBudgetUsed;
  /** Progress and warnings; nothing passed to it contains the key. @default no logging */
  readonly logger?: CommCareLogger;
  /** For tests; may take the signal that cancels the wait. @default setTimeout-based, cancellable */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** For tests; must return [0, 1). @default Math.random */
  readonly random?: () => number;
  /** For tests; milliseconds. @default Date.now */
  readonly now?: () => number;
}

/** One project space the key can reach, from `/api/user_domains/v1/`. */
export interface UserDomain {
  readonly domainName: string;
  readonly projectName: string | null;
}

const MAX_WINDOWS = 10_000;
/** Share of `pagesPerWindow` pages a window aims to hold (see `parallelKeyset`). */
const WINDOW_FILL = 0.9;

/**
 * First wait after a 429 without `Retry-After` in a windowed pull (see http.ts): the limiter lowering the
 * requests in flight is the back-off; the throttled request itself retries after 250–500 ms.
 */
const ADAPTIVE_THROTTLE_WAIT_MS = 250;

/** Query parameters the pager sets itself; a caller sending them would silently break paging. */
const RESERVED: Record<'keyset' | 'offset' | 'cursor', readonly string[]> = {
  keyset: ['limit', 'offset', 'order_by', 'indexed_on_start', 'indexed_on_end'],
  offset: ['limit', 'offset'],
  cursor: ['limit', 'cursor'],
};

function positiveInt(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v < 1) {
    throw new CommCareConfigError(`${name} must be a positive integer; received ${String(value)}`);
  }
  return v;
}

function nonNegative(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v < 0) {
    throw new CommCareConfigError(`${name} must be a number ≥ 0; received ${String(value)}`);
  }
  return v;
}

export class CommCareClient {
  readonly baseUrl: string;
  private readonly http: CommCareHttp;
  /** Switches to `legacy` by itself when HQ answers 404 for the resource-first spelling (see `pages`). */
  private urlStyle: UrlStyle;
  private readonly pageSize: number;
  private readonly concurrency: number;
  private readonly maxConcurrency: number;
  private readonly increaseAfter: number | undefined;
  private readonly windowQueuePages: number;
  private readonly pagesPerWindow: number;
  private readonly keepRawRecords: boolean;
  private readonly budgets = new Map<string, RequestBudget>();
  private readonly runBudget: RunBudget;

  constructor(options: CommCareClientOptions) {
    this.baseUrl = resolveBaseUrl(options.baseUrl);
    checkTransport(this.baseUrl, options.allowInsecureHttp ?? false);
    if (!options.username || /[:\s]/.test(options.username)) {
      throw new CommCareConfigError(
        `username must be the web user's login (an email, no ":" or spaces); received "${options.username}"`,
      );
    }
    if (!options.apiKey || /\s/.test(options.apiKey)) {
      // The message must not echo the key.
      throw new CommCareConfigError('apiKey must be a non-empty string without whitespace');
    }
    this.urlStyle = options.urlStyle ?? 'resource-first';
    if (this.urlStyle !== 'resource-first' && this.urlStyle !== 'legacy') {
      throw new CommCareConfigError(
        `urlStyle must be "resource-first" or "legacy"; received "${this.urlStyle}"`,
      );
    }
    this.pageSize = positiveInt(options.pageSize, 1000, 'pageSize');
    this.concurrency = positiveInt(options.concurrency, 1, 'concurrency');
    this.maxConcurrency = positiveInt(options.maxConcurrency, this.concurrency, 'maxConcurrency');
    if (this.maxConcurrency < this.concurrency) {
      throw new CommCareConfigError(
        `maxConcurrency (${this.maxConcurrency}) must be at least concurrency (${this.concurrency})`,
      );
    }
    this.increaseAfter =
      options.increaseAfter === undefined
        ? undefined
        : positiveInt(options.increaseAfter, 1, 'increaseAfter');
    this.windowQueuePages = positiveInt(options.windowQueuePages, 1, 'windowQueuePages');
    this.pagesPerWindow = positiveInt(options.pagesPerWindow, 1, 'pagesPerWindow');
    this.keepRawRecords = options.keepRawRecords ?? false;
    const used = options.budgetUsed;
    if (
      used !== undefined &&
      !(
        Number.isSafeInteger(used.records) &&
        used.records >= 0 &&
        Number.isSafeInteger(used.bytes) &&
        used.bytes >= 0
      )
    )
      throw new CommCareConfigError(
        `budgetUsed must hold whole numbers ≥ 0 (records, bytes); received ${JSON.stringify(used)}`,
      );
    this.runBudget = new RunBudget(
      positiveInt(options.maxRecords, DEFAULT_MAX_RECORDS, 'maxRecords'),
      positiveInt(options.maxBytes, DEFAULT_MAX_BYTES, 'maxBytes'),
      used,
    );
    this.http = new CommCareHttp({
      budget: this.runBudget,
      baseUrl: this.baseUrl,
      username: options.username,
      apiKey: options.apiKey,
      timeoutMs: positiveInt(options.timeoutMs, 60_000, 'timeoutMs'),
      maxRetries: nonNegative(options.maxRetries, 8, 'maxRetries'),
      maxRetryTimeMs: nonNegative(options.maxRetryTimeMs, 300_000, 'maxRetryTimeMs'),
      maxThrottleWaitMs: nonNegative(options.maxThrottleWaitMs, 1_800_000, 'maxThrottleWaitMs'),
      backoffBaseMs: nonNegative(options.backoffBaseMs, 1000, 'backoffBaseMs'),
      backoffMaxMs: nonNegative(options.backoffMaxMs, 60_000, 'backoffMaxMs'),
      userAgent: options.userAgent ?? 'commcare-export-service',
      maxResponseBytes: positiveInt(options.maxResponseBytes, 256 * 2 ** 20, 'maxResponseBytes'),
      sleep: options.sleep ?? ((ms, signal) => delay(ms, undefined, signal ? { signal } : {})),
      random: options.random ?? Math.random,
      now: options.now ?? Date.now,
      logger: options.logger,
    });
  }

  /** What this run used of its budget so far, earlier slices included (for the next slice's `budgetUsed`). */
  get budgetUsed(): RunBudgetUsed {
    return this.runBudget.used;
  }

  /** A copy of the counters so far. */
  get stats(): CommCareStats {
    return { ...this.http.stats };
  }

  /**
   * Pages of `request.resource`, in order, each with the position to resume from after it. Holds one
   * page at a time (plus, with concurrency > 1, a bounded number of pages of windows ahead).
   */
  async *pages(request: PullRequest): AsyncGenerator<Page> {
    // Every request of this pull listens to one signal, aborted when the pull ends for any reason (a
    // failure anywhere, the caller stopping early, or the caller's own signal), so that no probe, window
    // or retry outlives it.
    const stop = new AbortController();
    const signal = request.signal ? AbortSignal.any([stop.signal, request.signal]) : stop.signal;
    let started = false;
    try {
      for await (const page of this.pagesAt(request, this.urlStyle, signal)) {
        started = true;
        yield page;
      }
    } catch (error) {
      // Older and self-hosted HQ servers know only DET's `/api/v0.5/<resource>/` spelling and answer
      // 404 to `/api/<resource>/v1/`: switch to it once, for the rest of the run, and say so.
      const notFound = error instanceof CommCareRequestError && error.status === 404;
      if (started || !notFound || this.urlStyle !== 'resource-first') throw error;
      this.urlStyle = 'legacy';
      this.http.log('info', "HQ has no resource-first API URLs here (404); using DET's /api/v0.5/ URLs", {
        resource: request.resource,
        project: request.project,
      });
      yield* this.pagesAt(request, 'legacy', signal);
    } finally {
      stop.abort();
    }
  }

  private async *pagesAt(
    request: PullRequest,
    urlStyle: UrlStyle,
    signal: AbortSignal,
  ): AsyncGenerator<Page> {
    const spec = resourceSpec(request.resource);
    const ctx: PagingContext = {
      http: this.http,
      baseUrl: this.baseUrl,
      project: request.project,
      url: resourceUrl(this.baseUrl, request.project, spec, urlStyle),
      spec,
      keepRaw: this.keepRawRecords,
      ...(request.recordKeys ? { recordKeys: request.recordKeys } : {}),
      hooks: { signal },
    };
    const params = request.params ?? {};
    for (const name of RESERVED[spec.paging]) {
      if (name in params) {
        throw new CommCareConfigError(
          `params must not set "${name}" for ${spec.name}: the client sets it while paging (use pageSize, since, until or from)`,
        );
      }
    }
    const requested = positiveInt(request.pageSize, this.pageSize, 'pageSize');
    const pageSize = Math.min(requested, spec.maxLimit);
    const since = request.since === undefined ? null : toNaiveUtc(request.since, 'since');
    const until = request.until === undefined ? null : toNaiveUtc(request.until, 'until');
    const start: PullPosition | null =
      request.from ?? (since === null ? null : { indexedOn: since, boundaryIds: [] });

    // With a limit above 1, every pull of the project shares its request budget (the sources of one
    // export are pulled at once); with 1, each pull is DET's sequential one and sends its requests only.
    const shared = this.maxConcurrency > 1;
    const sctx: PagingContext = shared
      ? { ...ctx, hooks: { ...this.adaptiveHooks(this.budgetFor(request.project), false), signal } }
      : ctx;
    let raw: AsyncIterable<RawPage>;
    if (spec.paging === 'keyset') {
      raw = shared
        ? this.parallelKeyset(ctx, params, start, until, pageSize)
        : keysetPages(ctx, { params, start, endParam: until, stopBefore: null, pageSize });
    } else if (spec.paging === 'cursor') {
      raw = cursorPages(sctx, { params, start: request.from ?? null, since, until, pageSize });
    } else {
      if (request.from || since !== null || until !== null) {
        this.http.log('warn', 'since/until/from are ignored: this resource has no incremental paging', {
          resource: spec.name,
        });
      }
      raw = offsetPages(sctx, { params, pageSize });
    }
    if (shared && spec.paging !== 'keyset') raw = withinBudget(raw, this.budgetFor(request.project));

    let pageNumber = 0;
    for await (const page of raw) {
      this.http.stats.pages += 1;
      this.http.stats.records += page.records.length;
      this.runBudget.addRecords(page.records.length, request.project, spec.name);
      this.http.log('debug', 'page', {
        resource: spec.name,
        project: request.project,
        pageNumber,
        records: page.records.length,
        totalCount: page.totalCount,
        indexedOn: page.position?.indexedOn ?? null,
      });
      // One object shape for every page, whichever pager made it (the export loop's code is optimized
      // for the shape it sees; a page of another shape makes V8 discard and recompile it).
      yield { records: page.records, position: page.position, totalCount: page.totalCount, pageNumber };
      pageNumber += 1;
    }
  }

  /** Every record of the pull, one at a time. */
  async *records(request: PullRequest): AsyncGenerator<JsonObject> {
    for await (const page of this.pages(request)) yield* page.records;
  }

  /** The project spaces the key can reach (a cheap, unthrottled key check). */
  async userDomains(): Promise<UserDomain[]> {
    const out: UserDomain[] = [];
    const url = withQuery(userDomainsUrl(this.baseUrl, this.urlStyle), { limit: ['1000'] });
    for (const record of await this.tastypieList(url, null)) {
      const domainName = record.domain_name;
      if (typeof domainName !== 'string') continue;
      const projectName = record.project_name;
      out.push({ domainName, projectName: typeof projectName === 'string' ? projectName : null });
    }
    return out;
  }

  /** The exports of `project` that the Data Export Tool can run (HQ's Export Data screens). */
  async hqExports(project: string): Promise<HqExport[]> {
    const url = withQuery(`${this.baseUrl}/a/${encodeURIComponent(project)}/api/det_export_instance/v1/`, {
      limit: ['1000'],
    });
    return (await this.tastypieList(url, project)).map(parseHqExport);
  }

  /** Every record of a short tastypie list, following `meta.next` until it ends or repeats a page. */
  private async tastypieList(first: string, project: string | null): Promise<JsonObject[]> {
    const out: JsonObject[] = [];
    const seen = new Set<string>();
    let url = first;
    for (;;) {
      seen.add(url);
      const body = await this.http.getJson(url, project);
      const envelope = parseEnvelope({ envelope: 'tastypie' }, body, new URL(url).pathname);
      out.push(...envelope.records);
      if (envelope.next === null || envelope.records.length === 0) return out;
      const next = resolveNext(this.baseUrl, envelope.next);
      if (seen.has(next)) return out;
      url = next;
    }
  }

  /** The DET config workbook of an HQ export, downloaded with the same key; never written to disk here. */
  async hqExportConfig(project: string, hqExport: HqExport): Promise<Buffer> {
    const url = new URL(hqExport.configUrl, `${this.baseUrl}/`).toString();
    if (new URL(url).origin !== new URL(this.baseUrl).origin)
      throw new CommCareConfigError(
        `HQ's det_config_url for export "${hqExport.name}" points to another host (${new URL(url).origin}); the key is only sent to ${new URL(this.baseUrl).origin}`,
      );
    return await this.http.get(url, project, {}, (bytes) => requireWorkbook(bytes, hqExport.name));
  }

  /** The request budget of `project`: one adaptive limit for every pull of the project at once. */
  private budgetFor(project: string): RequestBudget {
    let budget = this.budgets.get(project);
    if (!budget) {
      budget = new RequestBudget(
        new AimdLimiter({
          initial: this.concurrency,
          max: this.maxConcurrency,
          ...(this.increaseAfter === undefined ? {} : { increaseAfter: this.increaseAfter }),
        }),
      );
      this.budgets.set(project, budget);
    }
    return budget;
  }

  /** Hooks that feed the budget's limiter with each request's outcome. */
  private adaptiveHooks(budget: RequestBudget, windowed: boolean): RequestHooks {
    const limiter = budget.limiter;
    return {
      onStart: () => limiter.begin(),
      onThrottle: (ticket) => limiter.onThrottle(ticket),
      onSuccess: (ticket) => limiter.onSuccess(ticket),
      ...(windowed ? { throttleWaitFloorMs: ADAPTIVE_THROTTLE_WAIT_MS } : {}),
    };
  }

  /**
   * Cuts the pull into `indexed_on` windows and runs them within the project's request budget. The first
   * round trip is the sequential pull's own first page (DET's first request) and, unless `until` gives
   * the range's end, the pull's last page, read newest first (see `fetchTailAnswer`). The two pages give
   * where the range starts and ends and `total_count`, so the records between them are split into windows
   * at once, sized to about a page each, and fetched in parallel from the second round trip on; the last
   * page is emitted after them. When the first page is the last, nothing more is sent; anything that
   * cannot be planned (no total, a server ignoring `-indexed_on`, a range too narrow to cut) continues as
   * the sequential pull, and a last page reaching back into the first (a pull of about two pages) only
   * gives the range's end: the last window is then left open.
   *
   * The windows are planned before the last page is read: its newest record (peeked from the body's
   * first record) gives the range's end, and where the page begins (its oldest record) is estimated as
   * if the records between the two pages were spread evenly (the same assumption the cuts make). The
   * last page is read once the first round's other pages are (`FirstRoundReads.idle`); the windows not
   * yet opened are then kept if the final window, from the last of them to where the page really
   * begins, is expected to fit in its pages, and re-cut otherwise, and the page owns only what the
   * windows before it did not reach. Why: the first round's four answers arrive together, and reading
   * a 1,000-form page while the code is cold takes ~40–60 ms, so reading both of a pull's pages before
   * its windows went out kept two requests waiting ~0.1 s, and every later round trip of theirs with
   * them (20,000 forms at 500 ms a page, 10 runs each, interleaved, with the reads' order and timing in
   * `FirstRoundReads`: mean 3.466 → 3.403 s, 6.52 → 6.40 round trips). Only when the pull has at least
   * two pages' worth of records after its first page, so that the last page is full and clear of the
   * first; otherwise both pages are read before the windows are planned.
   */
  private async *parallelKeyset(
    ctx: PagingContext,
    params: QueryParams,
    start: PullPosition | null,
    until: string | null,
    pageSize: number,
  ): AsyncGenerator<RawPage> {
    const budget = this.budgetFor(ctx.project);
    const wctx: PagingContext = { ...ctx, hooks: { ...this.adaptiveHooks(budget, true), ...ctx.hooks } };
    const reads = budget.firstRoundReads;
    // The first round trip's two requests give their slots back once a slow answer is in (see
    // `EARLY_RELEASE_AFTER_MS`); the sequential pull's later requests, if any, keep theirs. The pages are
    // read in `FirstRoundReads`' order: the last page's peek first, then a first page whose pull can plan
    // its windows once it is read.
    const firstRound = { open: true, tailPeeked: until !== null };
    const firstRequest = reads.request();
    const tailRequest = reads.request();
    const inSlot = (slot: HeldSlot, priority: () => number, request: FirstRoundRequest): PagingContext => ({
      ...wctx,
      hooks: { ...wctx.hooks, ...earlyReleaseHooks(slot, () => firstRound.open, priority, request) },
    });
    const firstSlot = new HeldSlot(budget);
    const tailSlot = new HeldSlot(budget);
    const sequential = keysetPages(
      inSlot(firstSlot, () => (firstRound.tailPeeked ? 1 : 0), firstRequest),
      {
        params,
        start,
        endParam: until,
        stopBefore: null,
        pageSize,
      },
    );

    // The first page is held by a mutable field and let go once yielded: a suspended generator keeps its
    // locals (V8 keeps every register of the frame, used or not), so a `const` page here would stay in
    // memory to the end of the pull, ~5 MB for a 5000-case page.
    const opening: { first: RawPage | null } = { first: null };
    let tail: TailAnswer | null;
    try {
      tail = await Promise.all([
        budget
          .run(() => {
            firstRequest.sent();
            return sequential.next();
          }, firstSlot)
          .then((step) => {
            if (!step.done) opening.first = step.value;
          }),
        until === null
          ? budget
              .run(() => {
                tailRequest.sent();
                return fetchTailAnswer(
                  inSlot(tailSlot, () => 2, tailRequest),
                  { params, start, pageSize },
                );
              }, tailSlot)
              .then((answer) => {
                firstRound.tailPeeked = true;
                return answer;
              })
          : null,
      ]).then(([, answer]) => answer);
    } finally {
      firstRound.open = false;
      firstRequest.done();
      tailRequest.done();
    }
    if (opening.first === null) return;
    const { position: firstPosition, last: firstIsLast, totalCount } = opening.first;
    const lo = firstPosition?.indexedOn ? requireTimestamp(firstPosition.indexedOn, 'indexed_on') : null;
    const hi = until === null ? (tail?.newest ?? null) : requireTimestamp(until, 'until');
    if (firstIsLast || lo === null || hi === null || !(hi > lo)) {
      yield opening.first;
      opening.first = null;
      if (!firstIsLast) yield* withinBudget({ [Symbol.asyncIterator]: () => sequential }, budget, firstSlot);
      return;
    }
    // The last page is used when it is whole (a short one would reach back into the first page) and
    // starts after the first page ends; its records at its oldest indexed_on belong to the last window.
    const usable = (page: TailPage | null): TailPage | null =>
      page !== null && page.size >= pageSize && page.owned > 0 && page.oldest > lo ? page : null;
    const between = totalCount === null ? null : totalCount - opening.first.records.length;
    // Windows aim a little under their pages' worth, so one a bit fuller than the average still ends in
    // `pagesPerWindow` requests instead of needing one more for its last few records.
    const windowsFor = (records: number | null): number =>
      Math.min(
        MAX_WINDOWS,
        Math.max(
          1,
          records === null
            ? this.maxConcurrency * 4
            : Math.ceil(records / (pageSize * this.pagesPerWindow * WINDOW_FILL)),
        ),
      );
    // Where the windows end (the last page's oldest record, + 1 µs) and the last page, once it is read:
    // at once unless the plan is estimated.
    const ending: { known: boolean; end: Micros | null; last: TailPage | null } = {
      known: true,
      end: null,
      last: null,
    };
    let ready: Promise<void> = Promise.resolve();
    let cuts: Micros[];
    const estimated = tail !== null && between !== null && between >= 2 * pageSize;
    if (estimated) {
      const answer = tail!;
      // As if the records between the pages were spread evenly: the last page's records take the newest
      // pageSize / between of the time between the first page's end and the newest record.
      const estimatedOldest = Math.max(lo + 1, Math.round(hi - ((hi - lo) * pageSize) / between));
      cuts = splitRange(lo, estimatedOldest, windowsFor(between - pageSize));
      ending.known = false;
      ready = reads.idle().then(() => {
        ending.last = usable(answer.read());
        ending.end = ending.last ? ending.last.oldest + 1 : null;
        ending.known = true;
      });
      ready.catch(() => undefined);
    } else {
      const last = usable(tail?.read() ?? null);
      ending.last = last;
      ending.end = last ? last.oldest + 1 : null;
      const remaining =
        totalCount === null
          ? null
          : Math.max(0, totalCount - opening.first.records.length - (last?.owned ?? 0));
      cuts = splitRange(lo, last ? last.oldest : hi, windowsFor(remaining));
      if (cuts.length === 0 && last === null) {
        this.http.log('info', 'pulling sequentially: the range is too narrow or small to cut', {
          resource: ctx.spec.name,
          total: totalCount,
        });
        yield opening.first;
        opening.first = null;
        yield* withinBudget({ [Symbol.asyncIterator]: () => sequential }, budget, firstSlot);
        return;
      }
    }
    await sequential.return(undefined);
    this.http.log('info', 'pulling in parallel indexed_on windows', {
      resource: ctx.spec.name,
      windows: cuts.length + 1,
      total: totalCount,
      concurrency: this.concurrency,
      maxConcurrency: this.maxConcurrency,
    });
    // Once the last page is read, the windows not opened yet: the planned ones that start before the page
    // does, unless the final window (from the last of them to where the page begins) would then be
    // expected to hold more than its pages' worth, when they are re-cut between `from` (where the last
    // window opened ends) and the page, in proportion to the records expected there.
    const recut = (from: Micros, next: number): void => {
      const end = ending.end;
      if (end === null || between === null || ending.last === null) return;
      const planned = cuts.slice(next).filter((cut) => cut < end);
      cuts.length = next;
      if (from >= end) return;
      const perMicro = (between - ending.last.owned) / (end - lo);
      const finalFrom = planned.at(-1) ?? from;
      if ((end - finalFrom) * perMicro <= pageSize * this.pagesPerWindow) cuts.push(...planned);
      else cuts.push(...splitRange(from, end - 1, windowsFor((end - from) * perMicro)));
    };
    const windows = function* (): Generator<() => AsyncIterable<RawPage>> {
      // The first window goes on from where the first page ended (its boundary ids included).
      let from = lo;
      let windowStart: PullPosition | null = firstPosition;
      let recutDone = ending.known;
      for (let i = 0; ; i += 1) {
        if (!recutDone && ending.known) {
          recutDone = true;
          recut(from, i);
        }
        // Cuts at or past where the last page begins are gone once it is read (`recut`).
        const cut = cuts[i];
        if (cut !== undefined) {
          const start = windowStart;
          yield () =>
            keysetPages(wctx, {
              params,
              start,
              endParam: formatNaiveUtc(cut),
              stopBefore: cut,
              pageSize,
            });
          from = cut;
          windowStart = { indexedOn: formatNaiveUtc(cut), boundaryIds: [] };
          continue;
        }
        // The final window: to where the last page begins (else the caller's `until`, or no end). Opened
        // before the last page is read, it waits for that reading (at most the first round's reads).
        const finalStart = windowStart;
        const finalFrom = from;
        yield async function* () {
          await ready;
          const stop = ending.end;
          if (stop !== null && stop <= finalFrom) return;
          yield* keysetPages(wctx, {
            params,
            start: finalStart,
            endParam: stop === null ? until : formatNaiveUtc(stop),
            stopBefore: stop,
            pageSize,
          });
        };
        break;
      }
      const windowsEnd = from;
      yield async function* () {
        await ready;
        // The last page owns what the windows before it did not reach.
        const last = ending.last;
        if (last) yield last.read(Math.max(last.oldest + 1, windowsEnd));
      };
    };
    const merged = orderedMerge(windows(), { budget, queuePages: this.windowQueuePages });
    // The windows start fetching now, while the caller works on the first page. Every step is awaited at
    // one place in the loop below, so the register V8 keeps for an awaited promise (and, through it, the
    // page it settled with) is overwritten by the next one.
    let ahead: Promise<IteratorResult<RawPage>> | null = merged.next();
    ahead.catch(() => undefined);
    try {
      // The caller's work on the first page waits for the first round's pages still to be read.
      await reads.idle();
      yield opening.first;
      opening.first = null;
      for (;;) {
        const step: IteratorResult<RawPage> = await (ahead ?? merged.next());
        ahead = null;
        if (step.done) return;
        yield step.value;
      }
    } finally {
      await merged.return(undefined);
    }
  }
}

export function createCommCareClient(options: CommCareClientOptions): CommCareClient {
  return new CommCareClient(options);
}

/**
 * The HTTP layer: one GET with HQ's auth header, a request timeout, and the retry policy.
 *
 * - 429: wait `Retry-After` when HQ sends it (case v2, messaging-event, ucr do); tastypie resources send
 *   none, so back off exponentially from 1 s, DET's wait. A request under the adaptive window limiter
 *   (`RequestHooks.throttleWaitFloorMs`) starts lower: the limiter has already lowered the requests in
 *   flight, which is what relieves HQ, so a full second more on top would only stall the ordered stream
 *   (half the throughput lost with a 429 every tenth request). Repeated 429s of one request escalate
 *   the same way either way. 429s do not use up the error retry count; they are bounded by their own
 *   total wait (`maxThrottleWaitMs`), because a busy HQ is not a broken HQ.
 * - 5xx, connection resets, timeouts, truncated or invalid JSON bodies: exponential backoff with full
 *   jitter, bounded by `maxRetries` and `maxRetryTimeMs` (DET gives up after 300 s).
 * - 401/403: `CommCareAuthError` at once. 400 and other 4xx: `CommCareRequestError` with HQ's text.
 * - Cancelling (`RequestHooks.signal`) aborts the request in flight and any wait before a retry, and the
 *   call rejects with `CommCareCancelledError`: once a pull has failed, nothing of it keeps running.
 * - Redirects are not followed: following one would send the Authorization header to wherever it points.
 * - A body larger than `maxResponseBytes` once decompressed (responses are asked for gzipped) is refused
 *   at once, not retried: a small compressed body can inflate a thousandfold (a "gzip bomb"), and the
 *   same answer would come again.
 *
 * The transport (transport.ts: Node's client, or axios behind a proxy) hands over any status with the
 * body as a stream, so every error we raise is built here from status, path and a redacted body, never
 * from a client's error (axios errors keep `config.headers`, which holds the key). The body is read into
 * one buffer (`readBody`): of the answer's `Content-Length` when it is not compressed, so a 2 MB page is
 * not first held as a list of 64 KiB chunks and then copied into a second 2 MB buffer; that halves the
 * memory an answer in flight takes and the malloc heap's growth with it. The bytes go to the caller's
 * `decode` once (list pages are read record by record without a whole-body string, see page-body.ts);
 * a body that is not JSON is a retry.
 */

import type { Readable } from 'node:stream';
import type { RunBudget } from './budget';
import {
  CommCareAuthError,
  CommCareCancelledError,
  CommCareRequestError,
  CommCareResponseError,
  CommCareThrottledError,
  CommCareUnavailableError,
  redact,
} from './errors';
import { BodyNotJsonError, ownBody, parseWhole } from './page-body';
import { axiosTransport, nodeTransport, proxyNamedIn, type Transport } from './transport';

export type CommCareLogLevel = 'debug' | 'info' | 'warn' | 'error';

/** A progress or warning event; fields are plain values (never the key). */
export interface CommCareLogEvent {
  readonly level: CommCareLogLevel;
  readonly message: string;
  readonly [field: string]: unknown;
}

export type CommCareLogger = (event: CommCareLogEvent) => void;

/** Counters over the life of a client. */
export interface CommCareStats {
  /** HTTP requests sent, retries included. */
  requests: number;
  /** Pages handed to the caller. */
  pages: number;
  /** Records handed to the caller. */
  records: number;
  /** Retries after errors (5xx, resets, timeouts, bad bodies); 429s are counted in `throttled`. */
  retries: number;
  /** 429 answers. */
  throttled: number;
  /** Total time waited because of 429s. */
  throttleWaitMs: number;
}

export interface HttpOptions {
  readonly baseUrl: string;
  readonly username: string;
  readonly apiKey: string;
  readonly timeoutMs: number;
  readonly maxRetries: number;
  readonly maxRetryTimeMs: number;
  readonly maxThrottleWaitMs: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  readonly userAgent: string;
  /** Largest body accepted, counted after decompression. */
  readonly maxResponseBytes: number;
  /** The run's budget: every 2xx body's bytes count, and no body may go past what is left of it. */
  readonly budget?: RunBudget;
  /** Waits `ms`; may end early (rejecting) when `signal` aborts, and must then clear its timer. */
  readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly random: () => number;
  readonly now: () => number;
  readonly logger: CommCareLogger | undefined;
  /** How requests are sent. @default Node's client, or axios when the environment names a proxy (transport.ts) */
  readonly transport?: Transport;
}

/** Per-request observers: the window scheduler listens for 429s and successes to adapt its limit. */
export interface RequestHooks {
  /**
   * Each attempt, retries included, just before it is sent; what it returns is handed to that attempt's
   * `onThrottle` / `onSuccess` (the limiter tells 429s of requests sent before its last decrease apart).
   */
  onStart?(): number;
  onThrottle?(started: number | undefined): void;
  onSuccess?(started: number | undefined): void;
  /**
   * First wait after a 429 without `Retry-After`, doubling (jittered) with each further 429 of the same
   * request. @default 1000, DET's wait
   */
  readonly throttleWaitFloorMs?: number;
  /** Aborting it cancels the request in flight and any wait before a retry (`CommCareCancelledError`). */
  readonly signal?: AbortSignal;
  /**
   * A 2xx answer's body is in, before it is decoded; `waitedMs`: from sending the request to the answer's
   * head (the server's time over it). The request budget gives a slow answer's slot back here, and
   * returns when the body is to be decoded (a later turn of the event loop, so that the request waiting
   * for the slot goes out first); undefined: at once.
   */
  answered?(waitedMs: number): Promise<void> | undefined;
  /** Before each retry of the request, after its wait (the budget takes a slot given back again). */
  resending?(): Promise<void>;
}

/** Turns a 2xx body into a value; throws `BodyNotJsonError` for a body to retry. */
export type BodyDecoder<T> = (body: Buffer) => T;

type Attempt<T> =
  | { kind: 'ok'; body: T }
  | { kind: 'retry'; reason: string }
  | { kind: 'throttle'; retryAfterMs: number | null };

const BODY_EXCERPT = 300;

export class CommCareHttp {
  readonly stats: CommCareStats = {
    requests: 0,
    pages: 0,
    records: 0,
    retries: 0,
    throttled: 0,
    throttleWaitMs: 0,
  };
  private readonly transport: Transport;
  private readonly headers: Record<string, string>;
  private readonly secrets: string[];

  constructor(private readonly options: HttpOptions) {
    this.secrets = [options.apiKey, encodeURIComponent(options.apiKey)];
    this.transport =
      options.transport ?? (proxyNamedIn(process.env) ? axiosTransport(options.timeoutMs) : nodeTransport);
    this.headers = {
      authorization: `ApiKey ${options.username}:${options.apiKey}`,
      accept: 'application/json',
      'user-agent': options.userAgent,
    };
  }

  /** Logs through the caller's logger with every string redacted (belt and braces: nothing should carry the key). */
  log(level: CommCareLogLevel, message: string, fields: Record<string, unknown> = {}): void {
    const logger = this.options.logger;
    if (!logger) return;
    const clean: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(fields)) {
      clean[name] = typeof value === 'string' ? this.redact(value) : value;
    }
    try {
      logger({ ...clean, level, message: this.redact(message) });
    } catch {
      // A failing logger must not fail the export.
    }
  }

  redact(text: string): string {
    return redact(text, this.secrets);
  }

  /**
   * GETs `url` (absolute, built by us, never carrying credentials) and returns the parsed JSON body.
   * `project` is only used in error messages.
   */
  async getJson(url: string, project: string | null, hooks: RequestHooks = {}): Promise<unknown> {
    return await this.get(url, project, hooks, parseWhole);
  }

  /** Like `getJson`, with the 2xx body turned into a value by `decode` (retried when it is not JSON). */
  async get<T>(url: string, project: string | null, hooks: RequestHooks, decode: BodyDecoder<T>): Promise<T> {
    const o = this.options;
    const path = pathOf(url);
    const started = o.now();
    let errors = 0;
    let throttles = 0;
    let throttleWaited = 0;
    const signal = hooks.signal;
    for (let attempts = 0; ; attempts++) {
      if (attempts > 0) await hooks.resending?.();
      this.throwIfCancelled(signal, path);
      const ticket = hooks.onStart?.();
      const attempt = await this.attempt(url, path, project, decode, hooks);
      this.throwIfCancelled(signal, path);
      if (attempt.kind === 'ok') {
        hooks.onSuccess?.(ticket);
        return attempt.body;
      }
      if (attempt.kind === 'throttle') {
        this.stats.throttled += 1;
        hooks.onThrottle?.(ticket);
        // DET's 1 s at least, growing from `backoffBaseMs`; under the window limiter, from its floor.
        const floor = hooks.throttleWaitFloorMs;
        const backoff =
          floor === undefined
            ? Math.max(1000, this.jitter(throttles))
            : Math.max(floor, this.jitter(throttles + 1, floor));
        const wait = attempt.retryAfterMs ?? backoff;
        throttles += 1;
        if (throttleWaited + wait > o.maxThrottleWaitMs) {
          throw new CommCareThrottledError(
            `CommCare HQ kept answering 429 (rate limited) for ${path} on project "${project}": ${throttles} times, ` +
              `${Math.round(throttleWaited / 1000)} s waited; the next wait of ${Math.ceil(wait / 1000)} s would pass ` +
              `the limit of ${Math.round(o.maxThrottleWaitMs / 1000)} s (maxThrottleWaitMs)`,
          );
        }
        this.log('info', 'CommCare HQ is rate limiting; waiting', {
          path,
          waitMs: wait,
          retryAfter: attempt.retryAfterMs !== null,
        });
        throttleWaited += wait;
        this.stats.throttleWaitMs += wait;
        await this.sleep(wait, signal, path);
        continue;
      }
      errors += 1;
      const wait = this.jitter(errors - 1);
      const elapsed = o.now() - started;
      if (errors > o.maxRetries || elapsed + wait > o.maxRetryTimeMs) {
        throw new CommCareUnavailableError(
          `CommCare HQ request ${path} on project "${project}" failed ${errors} times over ` +
            `${Math.round(elapsed / 1000)} s (limits: ${o.maxRetries} retries, ${Math.round(o.maxRetryTimeMs / 1000)} s); ` +
            `last failure: ${attempt.reason}`,
          { attempts: errors, cause: new Error(attempt.reason) },
        );
      }
      this.stats.retries += 1;
      this.log('warn', 'CommCare HQ request failed; retrying', {
        path,
        reason: attempt.reason,
        attempt: errors,
        waitMs: Math.round(wait),
      });
      await this.sleep(wait, signal, path);
    }
  }

  private throwIfCancelled(signal: AbortSignal | undefined, path: string): void {
    if (signal?.aborted) {
      throw new CommCareCancelledError(`request ${path} was cancelled: the pull it belongs to has stopped`);
    }
  }

  /** The injected sleep, ended early by `signal` even when the sleep itself ignores it. */
  private async sleep(ms: number, signal: AbortSignal | undefined, path: string): Promise<void> {
    if (!signal) return await this.options.sleep(ms);
    this.throwIfCancelled(signal, path);
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<void>((resolve) => {
      onAbort = resolve;
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      await Promise.race([this.options.sleep(ms, signal).catch(() => undefined), aborted]);
    } finally {
      signal.removeEventListener('abort', onAbort!);
    }
    this.throwIfCancelled(signal, path);
  }

  /** The largest body the next answer may have: `maxResponseBytes`, or less when the run's budget is nearly spent. */
  private maxBodyBytes(): number {
    const budget = this.options.budget;
    return budget
      ? Math.min(this.options.maxResponseBytes, budget.bytesLeft() + 1)
      : this.options.maxResponseBytes;
  }

  /** Full jitter: uniform in [0, min(max, base·2^n)]. */
  private jitter(n: number, baseMs = this.options.backoffBaseMs): number {
    const o = this.options;
    return o.random() * Math.min(o.backoffMaxMs, baseMs * 2 ** Math.min(n, 30));
  }

  private async attempt<T>(
    url: string,
    path: string,
    project: string | null,
    decode: BodyDecoder<T>,
    hooks: RequestHooks,
  ): Promise<Attempt<T>> {
    const cancel = hooks.signal;
    this.stats.requests += 1;
    this.log('debug', 'GET', { path });
    let status: number;
    let bytes: Buffer;
    let headers: Record<string, unknown>;
    let waitedMs: number;
    try {
      // The signal bounds the whole exchange, body included (aborting destroys the body stream).
      const timeout = AbortSignal.timeout(this.options.timeoutMs);
      const sentAt = performance.now();
      const answer = await this.transport(
        url,
        this.headers,
        cancel ? AbortSignal.any([timeout, cancel]) : timeout,
      );
      waitedMs = performance.now() - sentAt;
      status = answer.status;
      headers = answer.headers;
      // An answer that never ends stops where the run's byte budget does, if that comes first.
      bytes = await readBody(answer.body, this.maxBodyBytes(), answer.identitySize);
    } catch (error) {
      if (isOverLength(error)) {
        const budget = this.options.budget;
        if (budget && this.maxBodyBytes() < this.options.maxResponseBytes) {
          budget.bytes += this.maxBodyBytes();
          throw budget.overBytes(project, path);
        }
        throw new CommCareResponseError(
          `CommCare HQ's answer to ${path} on project "${project}" is larger than ` +
            `${formatBytes(this.options.maxResponseBytes)} once decompressed (the limit, maxResponseBytes); ` +
            'a real page is a few MB, so it is refused rather than read (a compressed body that inflates ' +
            'a thousandfold, or a far too large page)',
        );
      }
      return { kind: 'retry', reason: this.describeNetworkError(error) };
    }
    if (status >= 200 && status < 300) {
      this.options.budget?.addBytes(bytes.length, project, path);
      const turn = hooks.answered?.(waitedMs);
      if (turn) await turn;
      try {
        return { kind: 'ok', body: decode(bytes) };
      } catch (error) {
        if (!(error instanceof BodyNotJsonError)) throw error;
        return {
          kind: 'retry',
          reason: `HTTP ${status} with a body that is not complete JSON (${bytes.length} bytes)`,
        };
      }
    }
    const text = bytes.toString('utf8');
    if (status === 429)
      return { kind: 'throttle', retryAfterMs: parseRetryAfter(headers['retry-after'], this.options.now()) };
    if (status >= 500)
      return { kind: 'retry', reason: `HTTP ${status}: ${this.excerpt(text) ?? 'empty body'}` };
    const hqMessage = this.excerpt(text);
    if (status === 401 || status === 403) {
      throw new CommCareAuthError({ status, project, username: this.options.username, path, hqMessage });
    }
    if (status >= 300 && status < 400) {
      const location = typeof headers.location === 'string' ? this.redact(headers.location) : 'nowhere';
      throw new CommCareRequestError(
        `CommCare HQ answered ${status} for ${path} redirecting to ${location}; redirects are not followed ` +
          `(the API key would travel with them), so set the base URL to the final host`,
        { status, hqMessage },
      );
    }
    const hint = status === 404 ? ' (unknown project space or resource at this base URL?)' : '';
    throw new CommCareRequestError(
      `CommCare HQ rejected ${path} on project "${project}" with ${status}${hint}: ${hqMessage ?? 'empty body'}`,
      { status, hqMessage },
    );
  }

  private describeNetworkError(error: unknown): string {
    const e = error as { code?: unknown; message?: unknown; name?: unknown };
    const code = typeof e.code === 'string' ? e.code : typeof e.name === 'string' ? e.name : 'error';
    const message = typeof e.message === 'string' ? e.message : 'request failed';
    // Node's client rejects with an AbortError when the timeout's signal aborts; axios with its codes.
    const timedOut =
      code === 'ABORT_ERR' ||
      code === 'AbortError' ||
      code === 'ECONNABORTED' ||
      code === 'ERR_CANCELED' ||
      code === 'ETIMEDOUT';
    const reason = timedOut
      ? `no complete answer within ${this.options.timeoutMs} ms (${code})`
      : `${code}: ${message}`;
    return this.redact(reason);
  }

  /** HQ's error text: the `error` field of a JSON body, else the text; redacted, then shortened, one line. */
  private excerpt(text: string): string | null {
    let message = text.trim();
    if (!message) return null;
    try {
      const parsed = JSON.parse(message) as unknown;
      if (parsed && typeof parsed === 'object' && typeof (parsed as { error?: unknown }).error === 'string') {
        message = (parsed as { error: string }).error;
      }
    } catch {
      if (/^<(!doctype|html)/i.test(message)) message = `an HTML page (${message.length} characters)`;
    }
    // Redact before shortening: a key crossing the cut would otherwise be printed in part.
    message = this.redact(message.replace(/\s+/g, ' '));
    if (message.length > BODY_EXCERPT) message = `${message.slice(0, BODY_EXCERPT)}…`;
    return message;
  }
}

/** Seconds (DET rounds up) or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value: unknown, now: number): number | null {
  if (typeof value !== 'string' || value.trim() === '') return null;
  const seconds = Number(value.trim());
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds) * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/** `readBody`'s refusal of a body past its limit. */
class BodyOverLimitError extends Error {
  constructor(limit: number) {
    super(`the body is larger than ${limit} bytes`);
    this.name = 'BodyOverLimitError';
  }
}

function isOverLength(error: unknown): boolean {
  return error instanceof BodyOverLimitError;
}

/**
 * Reads a body stream into one buffer, refusing (and closing the connection) once it passes `limit`
 * bytes. With `size`, the buffer is allocated once at that size and the chunks are copied in as they
 * come, so none of them is kept; a body that turns out longer is carried on in chunks. A body that ends
 * early (the connection dropped) rejects like any network error, and is retried.
 */
export function readBody(body: Readable, limit: number, size: number | null): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    let whole = size !== null && size <= limit ? Buffer.allocUnsafe(size) : null;
    let filled = 0;
    const chunks: Buffer[] = [];
    let total = 0;
    let settled = false;
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      body.destroy();
      reject(error);
    };
    // Chunks as they come ('data'), not through the stream's async iterator, which takes a promise and
    // a few turns of the microtask queue for each of a page's ~30 chunks.
    body.on('data', (chunk: Buffer) => {
      if (settled) return;
      total += chunk.length;
      if (total > limit) {
        fail(new BodyOverLimitError(limit));
        return;
      }
      if (whole !== null && filled + chunk.length <= whole.length) {
        whole.set(chunk, filled);
        filled += chunk.length;
        return;
      }
      if (whole !== null) {
        chunks.push(whole.subarray(0, filled));
        whole = null;
      }
      chunks.push(chunk);
    });
    body.on('error', fail);
    body.on('end', () => {
      if (settled) return;
      settled = true;
      if (whole !== null) resolve(filled === whole.length ? ownBody(whole) : whole.subarray(0, filled));
      else resolve(chunks.length === 1 ? chunks[0]! : ownBody(Buffer.concat(chunks, total)));
    });
    // Closed without an end or an error (destroyed from outside): the body is not complete.
    body.on('close', () => fail(new Error('the answer closed before its body ended')));
  });
}

function formatBytes(bytes: number): string {
  return bytes % 2 ** 20 === 0 ? `${bytes / 2 ** 20} MiB` : `${bytes} bytes`;
}

function pathOf(url: string): string {
  const u = new URL(url);
  return `${u.pathname}${u.search}`;
}

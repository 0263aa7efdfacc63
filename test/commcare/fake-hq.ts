/**
 * A tiny HQ look-alike on a loopback port for fault-path tests: forms/cases with tastypie keyset paging
 * (`indexed_on_start` inclusive, naive only, like HQ v1), users with relative offset links, case v2 with
 * absolute cursor links, and a hook to answer any request with a fault instead.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseTimestamp } from '../../functions/commcare/dates';
import type { JsonObject } from '../../functions/common/json';

export interface FakeHqOptions {
  readonly username?: string;
  readonly apiKey?: string;
  readonly forms?: JsonObject[];
  readonly users?: JsonObject[];
  readonly cases?: JsonObject[];
  /** Answer `-indexed_on` like HQ (true) or ignore it (false). */
  readonly supportsDescending?: boolean;
}

/** Returns true when it answered the request itself. */
export type Fault = (req: IncomingMessage, res: ServerResponse, url: URL) => boolean;

export interface FakeHq {
  readonly url: string;
  /** Every request's path and query, in order. */
  readonly requests: string[];
  /** Authorization headers seen. */
  readonly authHeaders: string[];
  /** Faults tried in order on each request; a fault that answers is removed when `once`. */
  addFault(fault: Fault, once?: boolean): void;
  close(): Promise<void>;
}

export const FAKE_USER = 'tester@example.org';
export const FAKE_KEY = 'fake-key-0123456789abcdef';

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(text);
}

function key(record: JsonObject): number {
  return parseTimestamp(String(record.indexed_on)) ?? 0;
}

export async function startFakeHq(options: FakeHqOptions = {}): Promise<FakeHq> {
  const username = options.username ?? FAKE_USER;
  const apiKey = options.apiKey ?? FAKE_KEY;
  const requests: string[] = [];
  const authHeaders: string[] = [];
  const faults: { fault: Fault; once: boolean }[] = [];

  const keyset = (res: ServerResponse, url: URL, all: JsonObject[]) => {
    const q = url.searchParams;
    let rows = [...all].sort((a, b) => key(a) - key(b) || String(a.id).localeCompare(String(b.id)));
    for (const name of ['indexed_on_start', 'indexed_on_end']) {
      const value = q.get(name);
      if (value === null) continue;
      if (/Z|[+-]\d\d:\d\d$/.test(value)) {
        return send(res, 400, { error: `${name}: offset-aware datetimes are not supported: ${value}` });
      }
      const bound = parseTimestamp(value);
      if (bound === null) return send(res, 400, { error: `bad ${name} ${value}` });
      rows = rows.filter((r) => (name === 'indexed_on_start' ? key(r) >= bound : key(r) <= bound));
    }
    if (q.get('order_by') === '-indexed_on' && options.supportsDescending !== false) rows.reverse();
    const limit = Math.min(Number(q.get('limit') ?? 20), 1000);
    const offset = Number(q.get('offset') ?? 0);
    const objects = rows.slice(offset, offset + limit);
    let next: string | null = null;
    if (offset + limit < rows.length) {
      const nq = new URLSearchParams(q);
      nq.set('offset', String(offset + limit));
      nq.set('limit', String(limit));
      next = `${url.pathname}?${nq}`;
    }
    send(res, 200, { meta: { limit, offset, next, previous: null, total_count: rows.length }, objects });
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    requests.push(`${url.pathname}${url.search}`);
    authHeaders.push(String(req.headers.authorization ?? ''));
    for (const entry of [...faults]) {
      if (entry.fault(req, res, url)) {
        if (entry.once) faults.splice(faults.indexOf(entry), 1);
        return;
      }
    }
    if (req.headers.authorization !== `ApiKey ${username}:${apiKey}`) return send(res, 401, '');
    const path = url.pathname;
    if (path === '/a/demo/api/form/v1/') return keyset(res, url, options.forms ?? []);
    if (path === '/a/demo/api/case/v1/') return keyset(res, url, options.cases ?? []);
    if (path === '/a/demo/api/user/v1/') {
      const all = options.users ?? [];
      const limit = Number(url.searchParams.get('limit') ?? 20);
      const offset = Number(url.searchParams.get('offset') ?? 0);
      const next = offset + limit < all.length ? `${path}?limit=${limit}&offset=${offset + limit}` : null;
      return send(res, 200, {
        meta: { limit, offset, next, total_count: all.length },
        objects: all.slice(offset, offset + limit),
      });
    }
    if (path === '/a/demo/api/case/v2/') {
      const all = options.cases ?? [];
      const cursor = url.searchParams.get('cursor');
      const state = cursor
        ? (JSON.parse(Buffer.from(cursor, 'base64').toString()) as { offset: number; limit: number })
        : { offset: 0, limit: Number(url.searchParams.get('limit') ?? 20) };
      const cases = all.slice(state.offset, state.offset + state.limit);
      const body: JsonObject = { matching_records: all.length, cases };
      if (state.offset + state.limit < all.length) {
        const nextCursor = Buffer.from(
          JSON.stringify({ ...state, offset: state.offset + state.limit }),
        ).toString('base64');
        // Absolute, and naming another host: the client must keep its own origin.
        body.next = `https://hq.example.invalid${path}?cursor=${encodeURIComponent(nextCursor)}`;
      }
      return send(res, 200, body);
    }
    if (path === '/api/user_domains/v1/') {
      return send(res, 200, {
        meta: { limit: 1000, next: null, offset: 0, total_count: 1 },
        objects: [{ domain_name: 'demo', project_name: 'Demo' }],
      });
    }
    send(res, 404, 'not found');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    authHeaders,
    addFault(fault, once = true) {
      faults.push({ fault, once });
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Forms with `count` records spread over time, `tie` of them sharing each of a few instants. */
export function makeForms(count: number, options: { tiesEvery?: number } = {}): JsonObject[] {
  const forms: JsonObject[] = [];
  const base = Date.UTC(2024, 0, 1);
  for (let i = 0; i < count; i += 1) {
    const step = options.tiesEvery ? Math.floor(i / options.tiesEvery) : i;
    // Every third instant carries microseconds, to exercise their round trip.
    const micros = step % 3 === 0 ? '.123456' : '.000000';
    const at = new Date(base + step * 60_000).toISOString().slice(0, 19);
    forms.push({ id: `form-${String(i).padStart(5, '0')}`, indexed_on: `${at}${micros}Z`, n: i });
  }
  return forms;
}

/** A fault that answers with this status, body and headers. */
export function reply(status: number, body = '', headers: Record<string, string> = {}): Fault {
  return (_req, res) => {
    res.writeHead(status, headers);
    res.end(body);
    return true;
  };
}

/**
 * The HTTP face of the sandbox (node:http): routing, API-key auth, faults and the request log.
 * Pages come from the pure core in ./serve.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { createDataset, type SandboxDataset, type SandboxResource } from './dataset';
import {
  DET_DOWNLOAD_PATH,
  DET_LIST_PATH,
  defaultDetExports,
  detConfigWorkbook,
  detExportObject,
  type SandboxDetExport,
} from './det-exports';
import { type SandboxChange, SandboxChangeError, type SandboxProject } from './records';
import {
  SandboxBadRequest,
  SandboxNotFound,
  type SandboxQuirks,
  serveDetExportList,
  serveList,
} from './serve';

export interface SandboxCredential {
  username: string;
  apiKey: string;
  /** Scope: the one project this key works on (plus URLs without a domain). @default all projects */
  domain?: string;
  /** IPv4 addresses allowed to use the key (X-Forwarded-For honoured, like HQ's get_ip). @default any */
  ipAllowlist?: string[];
  expired?: boolean;
  /** @default true */
  active?: boolean;
  /** Projects the web user is a member of (sandbox addition). @default every sandbox project */
  projects?: string[];
  /** The View Reports permission, which the DET exports list and config download need. @default true */
  viewReports?: boolean;
}

/** Faults and hostile behaviours; the quirks (`SandboxQuirks`) change what pages hold. */
export interface SandboxFaults extends SandboxQuirks {
  latencyMs?: number;
  /** Every Nth data request answers 429 with an empty body. */
  throttleEvery?: number;
  /**
   * Retry-After on 429. Unset: only case v2 sends it (1 s), as in HQ. A number: every 429 sends it.
   * null: no 429 sends it (tastypie behaviour everywhere).
   */
  retryAfterSeconds?: number | null;
  serverErrorEvery?: number;
  /** Consecutive 5xx per burst. @default 1 */
  serverErrorBurst?: number;
  /** Destroy the socket mid-body every Nth data request. */
  resetEvery?: number;
  /** Send valid headers and half the JSON, then end cleanly, every Nth data request. */
  truncateEvery?: number;
  /**
   * Every Nth data request answers 200 with its whole body, well nested, but the last `true`, `false` or
   * `null` in it (in the last record) spelled without its last letter: JSON that only a parser rejects.
   */
  brokenItemEvery?: number;
  /** Never answer every Nth data request (until the client gives up or the server closes). */
  hangEvery?: number;
  /**
   * Every Nth data request answers 200 with `Content-Encoding: gzip` and a small body that inflates to
   * `gzipBombBytes` of spaces.
   */
  gzipBombEvery?: number;
  /** @default 1 GiB */
  gzipBombBytes?: number;
  /**
   * Every Nth data request that accepts gzip is answered gzip-compressed (`Content-Encoding: gzip`, the
   * compressed length as `Content-Length`), as HQ's web server compresses its JSON answers.
   */
  gzipEvery?: number;
  /**
   * Every data request answers 400 with an error text that repeats the request's Authorization header
   * (`ApiKey user:key`) starting at this character, as a careless proxy or debug page might.
   */
  echoAuthorizationAt?: number;
  /**
   * Every data request answers 200 with a chunked body that never ends (`{"meta": {}, "objects": [` and
   * then spaces), until the client hangs up or the sandbox closes.
   */
  endlessBody?: boolean;
  /** Never answer requests with this `order_by` (`-indexed_on`: the client's probe for the newest record). */
  hangOrderBy?: string;
  /** Answer requests with this `order_by` 400 `{"error": "order refused"}`. */
  rejectOrderBy?: string;
}

export interface SandboxOptions {
  /** @default 1 */
  seed?: number;
  /** @default '127.0.0.1' */
  host?: string;
  /** @default 0 (a free port) */
  port?: number;
  /** @default one 'demo' project: 2,500 forms, 600 cases, 25 mobile users, 4 groups, 12 locations */
  projects?: SandboxProject[];
  /** @default one user 'demo@example.org' with key 'sandbox-demo-key', all projects */
  credentials?: SandboxCredential[];
  faults?: SandboxFaults;
  /** Re-index events that become visible only after this many data requests (records updated during a pull). */
  liveReindexAfterRequests?: number;
}

export interface RequestLogEntry {
  method: string;
  path: string;
  query: Record<string, string[]>;
  /** 0 while unanswered (hang) or when the socket was destroyed before a status was sent. */
  status: number;
  ip: string;
  at: number;
  /** Never the key. */
  username: string | null;
  /** Bytes of the JSON body of a data page answered 200 (before any transfer encoding). */
  bytes?: number;
  /** Set when that body was sent compressed (`gzipEvery`). */
  contentEncoding?: 'gzip';
}

export interface RunningSandbox {
  url: string;
  port: number;
  requestLog: RequestLogEntry[];
  setFaults(f: SandboxFaults): void;
  /** Archives, unarchives or deletes records of a project (`SandboxChange`); `dataset.apply` does the same. */
  apply(project: string, ...changes: SandboxChange[]): void;
  /** The DET exports of a project (as edited in HQ's Export Data screens). */
  detExports(project: string): readonly SandboxDetExport[];
  /** Replaces the DET exports of a project: an edit in HQ between two runs. */
  setDetExports(project: string, exports: readonly SandboxDetExport[]): void;
  close(): Promise<void>;
  dataset: SandboxDataset;
}

/** `POST /a/<project>/sandbox/changes/` with a JSON change or list of changes (sandbox addition, not HQ). */
const CHANGES_PATH = /^\/a\/([^/]+)\/sandbox\/changes\/?$/;

export const DEFAULT_PROJECT: SandboxProject = {
  name: 'demo',
  forms: 2500,
  cases: 600,
  mobileUsers: 25,
  groups: 4,
  locations: 12,
};
export const DEFAULT_USERNAME = 'demo@example.org';
/** Public sandbox data (documented in functions/sandbox/README.md), not a secret. */
export const DEFAULT_API_KEY = 'sandbox-demo-key';

interface Route {
  readonly domain: string | null;
  readonly resource: SandboxResource | 'user_domains';
}

const V05: Record<string, SandboxResource> = {
  form: 'form',
  case: 'case',
  user: 'user',
  'web-user': 'web-user',
  group: 'group',
  location: 'location',
  location_type: 'location_type',
  application: 'application',
  'messaging-event': 'messaging-event',
  ucr: 'ucr',
};

/** HQ's API answers a failed authentication with this body (docs/api/openapi components/responses.yaml). */
const NOT_AUTHORIZED_BODY = JSON.stringify({ error: 'not authorized' });
const NOT_AUTHORIZED_HEADERS = { 'Content-Type': 'application/json' };

/** Plain Django views behind `api_throttle`, which sends `Retry-After` with its 429 (ref §4.1). */
const VIEW_THROTTLED = new Set<SandboxResource>(['case-v2', 'messaging-event', 'ucr']);

/** Both URL spellings (ref §2.1): v0.5 == v1, v0.6 == v2. */
export function route(path: string): Route | null {
  if (/^\/api\/(v0\.5\/user_domains|user_domains\/v1)\/?$/.test(path))
    return { domain: null, resource: 'user_domains' };
  const m = /^\/a\/([^/]+)\/api\/([^/]+)\/([^/]+)\/?$/.exec(path);
  if (!m) return null;
  const domain = decodeURIComponent(m[1]!);
  const [a, b] = [m[2]!, m[3]!];
  if (a === 'v0.5' && V05[b]) return { domain, resource: V05[b] };
  if (a === 'v0.6' && b === 'case') return { domain, resource: 'case-v2' };
  if (a === 'v0.6' && b === 'location') return { domain, resource: 'location-v2' };
  if (b === 'v1' && V05[a]) return { domain, resource: V05[a] };
  if (b === 'v2' && a === 'case') return { domain, resource: 'case-v2' };
  if (b === 'v2' && a === 'location') return { domain, resource: 'location-v2' };
  return null;
}

type AuthResult =
  | { ok: true; credential: SandboxCredential; username: string }
  | { ok: false; status: 400 | 401; username: string | null; challenge: boolean };

/** Mirrors corehq/apps/domain/auth.py (ref §1.1): ApiKey header, or Basic with the key as password. */
function authenticate(
  header: string | undefined,
  credentials: readonly SandboxCredential[],
  ip: string,
): AuthResult {
  if (!header) return { ok: false, status: 401, username: null, challenge: true };
  const space = header.indexOf(' ');
  const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase();
  const data = space < 0 ? '' : header.slice(space + 1).trim();
  let username: string;
  let key: string;
  if (scheme === 'apikey') {
    const colon = data.indexOf(':');
    // tastypie's data.split(':', 1) fails to unpack -> Http400 "Bad HTTP_AUTHORIZATION header".
    if (colon < 0) return { ok: false, status: 400, username: null, challenge: false };
    username = data.slice(0, colon);
    key = data.slice(colon + 1);
  } else if (scheme === 'basic') {
    // PR #36864 (2025): the API key is accepted as the Basic password.
    const decoded = Buffer.from(data, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return { ok: false, status: 401, username: null, challenge: true };
    username = decoded.slice(0, colon);
    key = decoded.slice(colon + 1);
  } else {
    return { ok: false, status: 401, username: null, challenge: true };
  }
  const credential = credentials.find(
    (c) => c.username === username && c.apiKey === key && c.active !== false && c.expired !== true,
  );
  // Every failure is one 401 (ref §5), allow-list included; the body is `{"error": "not authorized"}`.
  if (!credential) return { ok: false, status: 401, username, challenge: false };
  if (credential.ipAllowlist && !credential.ipAllowlist.includes(ip))
    return { ok: false, status: 401, username, challenge: false };
  return { ok: true, credential, username };
}

function clientIp(req: IncomingMessage): string {
  const forwarded = req.headers['x-forwarded-for'];
  const value = Array.isArray(forwarded) ? forwarded[0] : forwarded;
  if (value) return value.split(',')[0]!.trim();
  const remote = req.socket.remoteAddress ?? '';
  return remote.startsWith('::ffff:') ? remote.slice(7) : remote;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** `body` with its last `true`, `false` or `null` value missing its last letter (`brokenItemEvery`). */
function withLastLiteralMisspelt(body: string): string {
  const at = Math.max(body.lastIndexOf(':true'), body.lastIndexOf(':false'), body.lastIndexOf(':null'));
  if (at === -1) return body;
  const end = at + /^:(?:true|false|null)/.exec(body.slice(at))![0].length;
  return body.slice(0, end - 1) + body.slice(end);
}

function every(n: number, k: number | undefined): boolean {
  return k !== undefined && k > 0 && n % k === 0;
}

export async function startSandbox(options: SandboxOptions = {}): Promise<RunningSandbox> {
  const projects = options.projects ?? [DEFAULT_PROJECT];
  const credentials = options.credentials ?? [{ username: DEFAULT_USERNAME, apiKey: DEFAULT_API_KEY }];
  const liveAfter = options.liveReindexAfterRequests;
  const dataset = createDataset(options.seed ?? 1, projects, { liveReindex: liveAfter !== undefined });
  const projectNames = new Set(projects.map((p) => p.name));
  const requestLog: RequestLogEntry[] = [];
  let faults: SandboxFaults = { ...(options.faults ?? {}) };
  /** Data requests since the last setFaults (fault schedule). */
  let faultCounter = 0;
  /** Data requests since start (live re-index visibility). */
  let dataRequests = 0;
  let closing = false;
  const detExportSets = new Map<string, readonly SandboxDetExport[]>();
  const detExportsOf = (project: string): readonly SandboxDetExport[] => {
    let list = detExportSets.get(project);
    if (!list) {
      const defined = projects.find((p) => p.name === project)?.detExports;
      list = defined ?? defaultDetExports(dataset.model(project).salt);
      detExportSets.set(project, list);
    }
    return list;
  };

  async function handle(req: IncomingMessage, res: ServerResponse, entry: RequestLogEntry): Promise<void> {
    const send = (status: number, headers: Record<string, string | number>, body = '') => {
      if (res.destroyed || res.headersSent) return;
      entry.status = status;
      res.writeHead(status, { 'Content-Length': Buffer.byteLength(body), ...headers });
      res.end(body);
    };
    const url = new URL(req.url ?? '/', 'http://sandbox.invalid');
    const changesFor = CHANGES_PATH.exec(url.pathname);
    if (changesFor) return applyChanges(req, decodeURIComponent(changesFor[1]!), entry, send);
    const detList = DET_LIST_PATH.exec(url.pathname);
    const detDownload = DET_DOWNLOAD_PATH.exec(url.pathname);
    if (detList || detDownload) {
      const domain = decodeURIComponent((detList ?? detDownload)![1]!);
      const auth = authenticate(req.headers.authorization, credentials, entry.ip);
      entry.username = auth.username;
      if (!auth.ok)
        return auth.status === 400
          ? send(400, { 'Content-Type': 'text/plain' }, 'Bad HTTP_AUTHORIZATION header')
          : send(401, NOT_AUTHORIZED_HEADERS, NOT_AUTHORIZED_BODY);
      const c = auth.credential;
      if (c.domain && c.domain !== domain) return send(401, NOT_AUTHORIZED_HEADERS, NOT_AUTHORIZED_BODY);
      // RequirePermissionAuthentication(view_reports): not a member or no permission is a bare 403.
      if (
        !projectNames.has(domain) ||
        !(c.projects ?? [...projectNames]).includes(domain) ||
        c.viewReports === false
      )
        return send(403, {});
      const exports = detExportsOf(domain);
      if (detDownload) {
        const found = exports.find((e) => e.id === decodeURIComponent(detDownload[2]!));
        if (!found) return send(404, { 'Content-Type': 'text/html' }, '<h1>Not Found</h1>');
        if (found.broken)
          return send(
            200,
            { 'Content-Type': 'text/html; charset=utf-8' },
            // HQ's words when building the workbook raises DETConfigError (an export with no table selected).
            `Sorry, something went wrong creating that file: No Tables found in Export ${found.name}`,
          );
        const bytes = await detConfigWorkbook(found);
        entry.status = 200;
        res.writeHead(200, {
          'Content-Type': 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
          'Content-Disposition': `attachment; filename="${found.name}-DET.xlsx"`,
          'Content-Length': bytes.length,
        });
        res.end(bytes);
        return;
      }
      const detailId = detList![2];
      if (detailId !== undefined) {
        const found = exports.find((e) => e.id === decodeURIComponent(detailId));
        // obj_get answers a bare HttpNotFound.
        if (!found) return send(404, {});
        return send(
          200,
          { 'Content-Type': 'application/json' },
          JSON.stringify(detExportObject(domain, found)),
        );
      }
      try {
        const params = toRecord(url.searchParams);
        return send(
          200,
          { 'Content-Type': 'application/json' },
          serveDetExportList(
            { project: domain, params, path: url.pathname, paramOrder: [...url.searchParams.entries()] },
            exports.map((e) => detExportObject(domain, e)),
          ),
        );
      } catch (error) {
        if (error instanceof SandboxBadRequest)
          return send(400, { 'Content-Type': 'application/json' }, JSON.stringify({ error: error.message }));
        throw error;
      }
    }
    const r = route(url.pathname);
    if (!r) return send(404, { 'Content-Type': 'text/plain' }, 'Not found');
    if (req.method !== 'GET') return send(405, { Allow: 'GET', 'Content-Type': 'text/plain' }, '');

    const auth = authenticate(req.headers.authorization, credentials, entry.ip);
    entry.username = auth.username;
    if (r.resource === 'user_domains') {
      if (!auth.ok) {
        if (auth.status === 400)
          return send(400, { 'Content-Type': 'text/plain' }, 'Bad HTTP_AUTHORIZATION header');
        // ref §5: user_domains with a bad key.
        return send(
          401,
          { 'Content-Type': 'text/plain' },
          'Username or API Key is incorrect, expired or deactivated',
        );
      }
      const c = auth.credential;
      // Domain-scoped keys may call URLs without a domain and see just their domain (ref §1.1, §6).
      const member = [...projectNames].filter((d) => (c.projects ?? [...projectNames]).includes(d));
      const domains = c.domain ? member.filter((d) => d === c.domain) : member;
      const objects = domains.map((d) => ({ domain_name: d, project_name: d }));
      return send(
        200,
        { 'Content-Type': 'application/json' },
        // DoesNothingPaginator: the whole list, and a meta holding total_count alone.
        JSON.stringify({ meta: { total_count: objects.length }, objects }),
      );
    }

    if (!auth.ok) {
      if (auth.status === 400)
        return send(400, { 'Content-Type': 'text/plain' }, 'Bad HTTP_AUTHORIZATION header');
      return send(
        401,
        auth.challenge
          ? { ...NOT_AUTHORIZED_HEADERS, 'WWW-Authenticate': 'Basic realm="CommCare HQ"' }
          : NOT_AUTHORIZED_HEADERS,
        NOT_AUTHORIZED_BODY,
      );
    }
    const domain = r.domain!;
    // Domain-scoped key on another domain: 401 since PR #34901 (ref §1.1).
    if (auth.credential.domain && auth.credential.domain !== domain)
      return send(401, NOT_AUTHORIZED_HEADERS, NOT_AUTHORIZED_BODY);
    // Authenticated but not a member: bare HttpResponseForbidden() (ref §1.1, §5).
    if (!projectNames.has(domain) || !(auth.credential.projects ?? [...projectNames]).includes(domain))
      return send(403, {});

    faultCounter += 1;
    dataRequests += 1;
    const n = faultCounter;
    const f = faults;
    const liveVisible = liveAfter === undefined || dataRequests > liveAfter;
    if (f.latencyMs && f.latencyMs > 0) await sleep(f.latencyMs);
    if (res.destroyed || closing) return;
    if (every(n, f.hangEvery)) return; // never answer; close() destroys the socket
    const orderBy = url.searchParams.get('order_by');
    if (orderBy !== null && orderBy === f.hangOrderBy) return;
    if (orderBy !== null && orderBy === f.rejectOrderBy)
      return send(400, { 'Content-Type': 'application/json' }, JSON.stringify({ error: 'order refused' }));
    if (f.echoAuthorizationAt !== undefined) {
      const pad = 'x'.repeat(Math.max(0, f.echoAuthorizationAt - 'Bad request: '.length));
      const error = `Bad request: ${pad}${req.headers.authorization ?? ''} was not understood`;
      return send(400, { 'Content-Type': 'application/json' }, JSON.stringify({ error }));
    }
    if (f.endlessBody) {
      entry.status = 200;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      const spaces = Buffer.alloc(64 * 1024, 0x20);
      res.write('{"meta": {}, "objects": [');
      // Writes as fast as the client reads (backpressure), until it hangs up or the sandbox closes.
      while (!res.destroyed && !closing) {
        if (!res.write(spaces))
          await new Promise<void>((resolve) => {
            const done = () => {
              res.off('drain', done);
              res.off('close', done);
              resolve();
            };
            res.on('drain', done);
            res.on('close', done);
          });
      }
      return;
    }
    if (every(n, f.gzipBombEvery)) {
      const bomb = gzipBomb(f.gzipBombBytes ?? 2 ** 30);
      entry.status = 200;
      res.writeHead(200, {
        'Content-Type': 'application/json',
        'Content-Encoding': 'gzip',
        'Content-Length': bomb.length,
      });
      res.end(bomb);
      return;
    }
    if (every(n, f.throttleEvery)) {
      // tastypie throttling sends no Retry-After; case v2's api_throttle does (ref §4.1).
      const retry =
        f.retryAfterSeconds === undefined ? (VIEW_THROTTLED.has(r.resource) ? 1 : null) : f.retryAfterSeconds;
      return send(429, retry === null ? {} : { 'Retry-After': String(retry) });
    }
    if (f.serverErrorEvery && f.serverErrorEvery > 0) {
      const burst = Math.max(1, f.serverErrorBurst ?? 1);
      const k = n - f.serverErrorEvery;
      if (k >= 0 && k % f.serverErrorEvery < burst) {
        const status = [500, 502, 503, 504][(k % f.serverErrorEvery) % 4]!;
        return send(status, { 'Content-Type': 'text/html' }, `<h1>${status} sandbox fault</h1>`);
      }
    }
    let body: string;
    try {
      body = serveList(dataset, {
        project: domain,
        resource: r.resource,
        params: toRecord(url.searchParams),
        paramOrder: [...url.searchParams.entries()],
        path: url.pathname,
        origin: `http://${req.headers.host ?? 'localhost'}`,
        liveVisible,
        quirks: f,
      });
    } catch (error) {
      if (error instanceof SandboxBadRequest)
        return send(400, { 'Content-Type': 'application/json' }, JSON.stringify({ error: error.message }));
      if (error instanceof SandboxNotFound)
        return send(404, { 'Content-Type': 'application/json' }, JSON.stringify({ error: error.message }));
      throw error;
    }
    const bytes = Buffer.from(every(n, f.brokenItemEvery) ? withLastLiteralMisspelt(body) : body, 'utf8');
    if (every(n, f.resetEvery)) {
      entry.status = 200;
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': bytes.length });
      res.write(bytes.subarray(0, Math.floor(bytes.length / 2)), () => res.socket?.destroy());
      return;
    }
    if (every(n, f.truncateEvery)) {
      // Chunked, so the response ends cleanly: the client sees a complete response holding half a JSON.
      entry.status = 200;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(bytes.subarray(0, Math.floor(bytes.length / 2)));
      return;
    }
    entry.status = 200;
    entry.bytes = bytes.length;
    if (every(n, f.gzipEvery) && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))) {
      const packed = gzipSync(bytes);
      entry.contentEncoding = 'gzip';
      res.writeHead(200, {
        'Content-Type': 'application/json',
        'Content-Encoding': 'gzip',
        'Content-Length': packed.length,
      });
      res.end(packed);
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': bytes.length });
    res.end(bytes);
  }

  type Send = (status: number, headers: Record<string, string | number>, body?: string) => void;
  async function applyChanges(req: IncomingMessage, project: string, entry: RequestLogEntry, send: Send) {
    if (req.method !== 'POST') return send(405, { Allow: 'POST', 'Content-Type': 'text/plain' }, '');
    const auth = authenticate(req.headers.authorization, credentials, entry.ip);
    entry.username = auth.username;
    if (!auth.ok) return send(auth.status, {});
    if (!projectNames.has(project)) return send(404, { 'Content-Type': 'text/plain' }, 'Not found');
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const json = { 'Content-Type': 'application/json' };
    try {
      const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as SandboxChange | SandboxChange[];
      const changes = Array.isArray(parsed) ? parsed : [parsed];
      for (const change of changes) dataset.apply(project, change);
      return send(200, json, JSON.stringify({ applied: changes.length }));
    } catch (error) {
      if (error instanceof SandboxChangeError || error instanceof SyntaxError)
        return send(400, json, JSON.stringify({ error: error.message }));
      throw error;
    }
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://sandbox.invalid');
    const entry: RequestLogEntry = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: redact(toRecord(url.searchParams)),
      status: 0,
      ip: clientIp(req),
      at: Date.now(),
      username: null,
    };
    requestLog.push(entry);
    handle(req, res, entry).catch((error: unknown) => {
      if (!res.headersSent && !res.destroyed) {
        entry.status = 500;
        const message = error instanceof Error ? error.message : String(error);
        res.writeHead(500, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: `sandbox internal error: ${message}` }));
      }
    });
  });
  // Idle keep-alive connections stay open a minute, like HQ's front end; with Node's 5 s default a
  // client pausing between pages (e.g. while a database starts) reuses a socket the server just closed
  // and sees a reset it has to retry.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = options.host ?? '127.0.0.1';
  const urlHost = host.includes(':') ? `[${host}]` : host;

  return {
    url: `http://${urlHost}:${address.port}`,
    port: address.port,
    requestLog,
    dataset,
    detExports: detExportsOf,
    setDetExports(project: string, exports: readonly SandboxDetExport[]) {
      dataset.model(project);
      detExportSets.set(project, [...exports]);
    },
    setFaults(f: SandboxFaults) {
      faults = { ...f };
      faultCounter = 0;
    },
    apply(project: string, ...changes: SandboxChange[]) {
      for (const change of changes) dataset.apply(project, change);
    },
    close() {
      closing = true;
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Hanging requests and idle keep-alive sockets would otherwise hold close() open.
        server.closeAllConnections();
      });
    },
  };
}

const BOMB_MEMBER_BYTES = 1 << 20;
let bombMember: Buffer | undefined;

/**
 * A gzip body inflating to about `bytes` spaces: one gzipped MiB repeated (gzip allows concatenated
 * members), so building it costs one small compression whatever the size.
 */
function gzipBomb(bytes: number): Buffer {
  bombMember ??= gzipSync(Buffer.alloc(BOMB_MEMBER_BYTES, 0x20), { level: 9 });
  const members = Math.max(1, Math.ceil(bytes / BOMB_MEMBER_BYTES));
  return Buffer.concat(Array.from({ length: members }, () => bombMember!));
}

function toRecord(search: URLSearchParams): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [k, v] of search) {
    const list = out[k] ?? [];
    list.push(v);
    out[k] = list;
  }
  return out;
}

/** Legacy `?api_key=` credentials are refused, but a caller may still send them: keep them out of the log. */
function redact(query: Record<string, string[]>): Record<string, string[]> {
  for (const name of Object.keys(query))
    if (/^(api_?key|key|password|token)$/i.test(name)) query[name] = query[name]!.map(() => '[redacted]');
  return query;
}

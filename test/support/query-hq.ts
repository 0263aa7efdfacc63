/**
 * A CommCare HQ stand-in on a loopback port that serves given forms and cases to any project, at both
 * URL spellings (`/api/v0.5/form/` as DET sends, `/api/form/v1/` as we do), with HQ's filters that query
 * files use (`xmlns`, `xmlns.exact`, `app_id`, `type`, `owner_id`, `closed`), `indexed_on` keyset
 * paging (`order_by`, inclusive `indexed_on_start`, `limit`, `offset`, relative `meta.next`), and empty
 * lists for the other resources. For running a query file with records of our choosing (see
 * query-data.ts), ours and DET's side by side.
 */
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JsonObject } from '../../functions/common/json';

export interface QueryHq {
  readonly url: string;
  close(): Promise<void>;
}

/** Naive timestamp text to sortable milliseconds (a trailing `Z` or offset is ignored, as DET strips it). */
function millis(text: unknown): number {
  const naive = String(text ?? '')
    .replace(/(Z|[+-]\d\d:?\d\d)$/, '')
    .replace(' ', 'T');
  const [base, fraction = ''] = naive.split('.');
  const ms = Date.parse(`${base}Z`);
  return Number.isNaN(ms) ? 0 : ms + Number(`0.${fraction || '0'}`) * 1000;
}

const FILTER_FIELDS: Readonly<Record<string, string>> = {
  xmlns: 'xmlns',
  'xmlns.exact': 'xmlns',
  app_id: 'app_id',
  type: 'case_type',
  case_type: 'case_type',
  owner_id: 'owner_id',
  closed: 'closed',
};

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

export async function startQueryHq(data: { forms: JsonObject[]; cases: JsonObject[] }): Promise<QueryHq> {
  const list = (res: ServerResponse, url: URL, all: readonly JsonObject[]) => {
    const q = url.searchParams;
    let rows = all.filter((record) =>
      [...q.keys()].every((name) => {
        const field = FILTER_FIELDS[name];
        if (field === undefined) return true;
        const wanted = q.getAll(name).map((v) => v.toLowerCase());
        return wanted.includes(String(record[field] ?? '').toLowerCase());
      }),
    );
    rows = [...rows].sort(
      (a, b) => millis(a.indexed_on) - millis(b.indexed_on) || String(a.id).localeCompare(String(b.id)),
    );
    const start = q.get('indexed_on_start');
    if (start !== null) rows = rows.filter((r) => millis(r.indexed_on) >= millis(start));
    const end = q.get('indexed_on_end');
    if (end !== null) rows = rows.filter((r) => millis(r.indexed_on) <= millis(end));
    const limit = Math.min(Number(q.get('limit') ?? 20) || 20, 1000);
    const offset = Number(q.get('offset') ?? 0);
    const objects = rows.slice(offset, offset + limit);
    let next: string | null = null;
    if (offset + limit < rows.length) {
      const nq = new URLSearchParams(q);
      nq.set('offset', String(offset + limit));
      nq.set('limit', String(limit));
      next = `?${nq}`;
    }
    send(res, 200, { meta: { limit, offset, next, previous: null, total_count: rows.length }, objects });
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (!req.headers.authorization) return send(res, 401, '');
    const match = /^\/a\/[^/]+\/api\/(?:v0\.5\/([a-z_-]+)|([a-z_-]+)\/v1)\/$/.exec(url.pathname);
    if (/^\/api\/(v0\.5\/user_domains|user_domains\/v1)\/$/.test(url.pathname)) {
      return send(res, 200, { meta: { limit: 1000, next: null, offset: 0, total_count: 0 }, objects: [] });
    }
    const resource = match?.[1] ?? match?.[2];
    if (resource === 'form') return list(res, url, data.forms);
    if (resource === 'case') return list(res, url, data.cases);
    if (resource !== undefined) return list(res, url, []);
    send(res, 404, 'not found');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * A local CiviCRM with the parts of authx and APIv4 REST that key rotation uses, as read from
 * civicrm-core (see docs/keys/civicrm.md): `X-Civi-Auth: Bearer <api_key>` (or `Authorization` with
 * `X-Requested-With`), the guards site key / "authenticate with api key", `GET /civicrm/authx/id`,
 * and `POST /civicrm/ajax/api4/Contact/{update,get}` with one form field `params` holding JSON.
 * Changing `api_key` needs "edit api keys" (or "edit own api keys" on one's own contact).
 */
import { bearer, type RunningServer, send, startServer } from './common';

export interface CiviContact {
  id: number;
  display_name: string;
  api_key: string | null;
  permissions: string[];
}

export interface CiviCrmServer extends RunningServer {
  contact(id: number): CiviContact | undefined;
  /** Number of successful Contact.update calls that set an api_key. */
  keyUpdates(): number;
}

export async function startCiviCrmServer(options: {
  contacts: CiviContact[];
  siteKey?: string;
}): Promise<CiviCrmServer> {
  const contacts = new Map(options.contacts.map((c) => [c.id, { ...c }]));
  let updates = 0;
  const server = await startServer((req, body, res) => {
    const url = new URL(req.url ?? '/', 'http://local');
    const xheader = bearer(req.headers['x-civi-auth']);
    const header = bearer(req.headers.authorization);
    const key = xheader ?? header;
    const who = key ? [...contacts.values()].find((c) => c.api_key !== null && c.api_key === key) : undefined;
    if (!who) return send(res, 401, 'HTTP 401 Invalid credential');
    const siteKeyOk = options.siteKey !== undefined && req.headers['x-civi-key'] === options.siteKey;
    if (!siteKeyOk && !who.permissions.includes('authenticate with api key')) {
      return send(res, 401, 'HTTP 401 Login not permitted. Must satisfy guard (site_key, perm).');
    }
    if (url.pathname === '/civicrm/authx/id') {
      return send(res, 200, { contact_id: who.id, user_id: null });
    }
    const m = /^\/civicrm\/ajax\/api4\/Contact\/(update|get)$/.exec(url.pathname);
    if (!m) return send(res, 404, 'Not Found');
    if (!xheader && req.headers['x-requested-with'] !== 'XMLHttpRequest') {
      return send(res, 400, 'SECURITY ALERT: Ajax requests can only be issued by javascript clients');
    }
    const action = m[1];
    if (action === 'update' && req.method !== 'POST') {
      return send(res, 405, 'All requests that modify the database must be http POST');
    }
    const raw =
      req.method === 'POST' ? new URLSearchParams(body).get('params') : url.searchParams.get('params');
    const params = JSON.parse(raw ?? '{}') as {
      where?: [string, string, unknown][];
      values?: { api_key?: string };
      select?: string[];
    };
    const matches = [...contacts.values()].filter((c) =>
      (params.where ?? []).every(([field, op, value]) => {
        if (field !== 'id') return false;
        if (op === '=') return c.id === value;
        if (op === 'IN') return Array.isArray(value) && value.includes(c.id);
        return false;
      }),
    );
    if (action === 'get') {
      return send(res, 200, {
        values: matches.map((c) => ({ id: c.id, display_name: c.display_name })),
        entity: 'Contact',
        action: 'get',
        version: 4,
        count: matches.length,
        countFetched: matches.length,
      });
    }
    if (params.values && 'api_key' in params.values) {
      for (const c of matches) {
        const mayEdit =
          who.permissions.includes('edit api keys') ||
          who.permissions.includes('administer CiviCRM') ||
          (c.id === who.id && who.permissions.includes('edit own api keys'));
        if (!mayEdit)
          return send(res, 403, {
            error_code: 0,
            error_message: 'Permission denied to modify api key',
            status: 403,
          });
      }
    }
    for (const c of matches) {
      if (params.values?.api_key !== undefined) {
        c.api_key = params.values.api_key;
        updates += 1;
      }
    }
    return send(res, 200, {
      values: matches.map((c) => ({ id: c.id, display_name: c.display_name })),
      entity: 'Contact',
      action: 'update',
      version: 4,
      count: matches.length,
      countFetched: matches.length,
    });
  });
  return Object.assign(server, {
    contact: (id: number) => contacts.get(id),
    keyUpdates: () => updates,
  });
}

/**
 * A local Conduce-style key API, faithful to what ConduceInc/conduce-python-api sends and reads:
 * `GET /conduce/api/v1/apikeys/list` → list of `{apikey, description, created}`,
 * `POST /conduce/api/v1/apikeys/create {"description"}` → `{"apikey": <uuid>}`,
 * `POST /conduce/api/v1/apikeys/delete {"apikey"}` → 200 (a key may delete itself), Bearer auth,
 * 401 for an unknown key.
 */
import { randomUUID } from 'node:crypto';
import { bearer, type RunningServer, send, startServer } from './common';

export interface ConduceServer extends RunningServer {
  /** Descriptions of the live keys, in creation order. */
  descriptions(): string[];
  /** How many keys `create` has made. */
  createdCount(): number;
}

export async function startConduceServer(options: {
  keys: { apikey: string; description: string }[];
}): Promise<ConduceServer> {
  const keys = new Map<string, { description: string; created: string }>();
  for (const k of options.keys)
    keys.set(k.apikey, { description: k.description, created: new Date().toISOString() });
  let created = 0;
  const base = '/conduce/api/v1/apikeys/';
  const server = await startServer((req, body, res) => {
    const path = (req.url ?? '').split('?')[0];
    const key = bearer(req.headers.authorization);
    if (!key || !keys.has(key)) return send(res, 401, { message: 'Unauthorized' });
    if (req.method === 'GET' && path === `${base}list`) {
      return send(
        res,
        200,
        [...keys].map(([apikey, v]) => ({ apikey, description: v.description, created: v.created })),
      );
    }
    if (req.method === 'POST' && path === `${base}create`) {
      const description = String((JSON.parse(body || '{}') as { description?: unknown }).description ?? '');
      const apikey = randomUUID();
      keys.set(apikey, { description, created: new Date().toISOString() });
      created += 1;
      return send(res, 200, { apikey });
    }
    if (req.method === 'POST' && path === `${base}delete`) {
      const apikey = String((JSON.parse(body || '{}') as { apikey?: unknown }).apikey ?? '');
      if (!keys.delete(apikey)) return send(res, 404, { message: 'Not Found' });
      return send(res, 200, {});
    }
    return send(res, 404, { message: 'Not Found' });
  });
  return Object.assign(server, {
    descriptions: () => [...keys.values()].map((v) => v.description),
    createdCount: () => created,
  });
}

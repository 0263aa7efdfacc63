/**
 * Conduce-style REST key API (ConduceInc/conduce-python-api): `GET apikeys/list`,
 * `POST apikeys/create {"description"}` → `{"apikey"}`, `POST apikeys/delete {"apikey"}`, Bearer auth.
 * The month name goes in `description`, which makes creation idempotent: look it up first.
 */
import { KeyTestError, ProviderError } from '../errors';
import { type HttpRequest, httpRequest, unexpected } from '../http';
import type { IssuedKey, KeyProvider, ListedKey } from '../provider';
import type { ConduceSecret } from '../secret';

const API = 'conduce/api/v1/apikeys';
const NAME = 'conduce';

interface ConduceKeyRecord {
  apikey: string;
  description: string;
  created?: string;
}

function isRecord(v: unknown): v is ConduceKeyRecord {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as { apikey?: unknown }).apikey === 'string' &&
    typeof (v as { description?: unknown }).description === 'string'
  );
}

export function conduceProvider(secret: Pick<ConduceSecret, 'baseUrl' | 'key'>): KeyProvider {
  const auth = (key: string) => ({ authorization: `Bearer ${key}` });

  async function records(key: string): Promise<ConduceKeyRecord[]> {
    const req: HttpRequest = { method: 'GET', path: `${API}/list`, headers: auth(key) };
    const res = await httpRequest(NAME, secret.baseUrl, req);
    if (res.status !== 200) throw unexpected(NAME, req, res);
    const body = res.json();
    if (!Array.isArray(body) || !body.every(isRecord)) {
      throw new ProviderError(`${NAME}: GET ${API}/list answered 200 but not with a list of key records`);
    }
    return body;
  }

  async function remove(apikey: string): Promise<void> {
    const req: HttpRequest = {
      method: 'POST',
      path: `${API}/delete`,
      headers: auth(secret.key),
      json: { apikey },
    };
    const res = await httpRequest(NAME, secret.baseUrl, req);
    if (res.status !== 200) throw unexpected(NAME, req, res);
  }

  return {
    canCreate: true,
    canRevoke: true,
    async create(name: string): Promise<IssuedKey> {
      const existing = (await records(secret.key)).find((r) => r.description === name);
      if (existing) return { key: existing.apikey, keyName: name };
      const req: HttpRequest = {
        method: 'POST',
        path: `${API}/create`,
        headers: auth(secret.key),
        json: { description: name },
      };
      const res = await httpRequest(NAME, secret.baseUrl, req);
      if (res.status !== 200) throw unexpected(NAME, req, res);
      const body = res.json() as { apikey?: unknown };
      if (typeof body?.apikey !== 'string' || body.apikey.length === 0) {
        throw new ProviderError(`${NAME}: POST ${API}/create answered 200 without an "apikey" string`);
      }
      return { key: body.apikey, keyName: name };
    },
    async test(key: string): Promise<void> {
      const req: HttpRequest = { method: 'GET', path: `${API}/list`, headers: auth(key) };
      const res = await httpRequest(NAME, secret.baseUrl, req);
      if (res.status !== 200) {
        throw new KeyTestError(`${NAME}: the key was rejected: GET ${API}/list answered HTTP ${res.status}`);
      }
    },
    async revoke(idOrName: string): Promise<void> {
      // Conduce deletes by key value; we keep names, so look the name up (every key with it goes).
      const matches = (await records(secret.key)).filter((r) => r.description === idOrName);
      for (const m of matches) {
        if (m.apikey === secret.key) {
          throw new ProviderError(`${NAME}: refusing to revoke "${idOrName}": it is the key in use`);
        }
        await remove(m.apikey);
      }
    },
    async list(): Promise<ListedKey[]> {
      return (await records(secret.key)).map((r) => ({
        keyName: r.description,
        ...(r.created ? { createdAt: r.created } : {}),
      }));
    },
  };
}

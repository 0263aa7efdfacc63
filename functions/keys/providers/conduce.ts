/**
 * Conduce-style REST key API (ConduceInc/conduce-python-api): `GET apikeys/list`,
 * `POST apikeys/create {"description"}` → `{"apikey"}`, `POST apikeys/delete {"apikey"}`, Bearer auth.
 * The month name and the rotation's token go in `description`, which makes creation idempotent within
 * one rotation; keys are recorded and revoked by fingerprint, never by name.
 */
import { createHash } from 'node:crypto';
import { ProviderError } from '../errors';
import { type HttpRequest, httpRequest, rejected, unexpected } from '../http';
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
    if (res.status === 401 || res.status === 403) {
      // Management calls authenticate with the key in use: nothing can be created or revoked with it.
      throw new ProviderError(
        `${NAME}: the current key is rejected (GET /${API}/list answered HTTP ${res.status}): ` +
          'it was deleted or replaced outside ccexport; submit a working key with "ccexport keys submit <credential>"',
        { status: res.status },
      );
    }
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
    async create(name: string, attempt: string): Promise<IssuedKey> {
      // The description carries the rotation's token: a retry of the same rotation finds the key it
      // made (one key per month, however often a step is retried), and a key someone else named the
      // same way is never taken for ours.
      const description = `${name} ${ATTEMPT_MARK}${attempt.slice(0, 8)}`;
      const existing = (await records(secret.key)).find((r) => r.description === description);
      if (existing)
        return { key: existing.apikey, keyName: name, providerKeyId: fingerprint(existing.apikey) };
      const req: HttpRequest = {
        method: 'POST',
        path: `${API}/create`,
        headers: auth(secret.key),
        json: { description },
      };
      const res = await httpRequest(NAME, secret.baseUrl, req);
      if (res.status !== 200) throw unexpected(NAME, req, res);
      const body = res.json() as { apikey?: unknown };
      if (typeof body?.apikey !== 'string' || body.apikey.length === 0) {
        throw new ProviderError(`${NAME}: POST ${API}/create answered 200 without an "apikey" string`);
      }
      return { key: body.apikey, keyName: name, providerKeyId: fingerprint(body.apikey) };
    },
    async test(key: string): Promise<void> {
      const req: HttpRequest = { method: 'GET', path: `${API}/list`, headers: auth(key) };
      const res = await httpRequest(NAME, secret.baseUrl, req);
      if (res.status !== 200) throw rejected(NAME, req, res);
    },
    async revoke(providerKeyId: string): Promise<void> {
      // Conduce deletes by key value; we keep only fingerprints, so find the key by its fingerprint.
      if (providerKeyId === fingerprint(secret.key)) {
        throw new ProviderError(`${NAME}: refusing to revoke key ${providerKeyId}: it is the key in use`);
      }
      const match = (await records(secret.key)).find((r) => fingerprint(r.apikey) === providerKeyId);
      if (match) await remove(match.apikey);
    },
    async isLive(providerKeyId: string): Promise<boolean> {
      return (await records(secret.key)).some((r) => fingerprint(r.apikey) === providerKeyId);
    },
    async list(): Promise<ListedKey[]> {
      return (await records(secret.key)).map((r) => ({
        keyName: r.description,
        providerKeyId: fingerprint(r.apikey),
        ...(r.created ? { createdAt: r.created } : {}),
      }));
    },
  };
}

/** Marks our keys' descriptions: `<name> ccexport:<first 8 characters of the rotation token>`. */
const ATTEMPT_MARK = 'ccexport:';

/** What we record of a Conduce key: `sha256:` and 16 hex digits of its SHA-256 (the key is never stored twice). */
export function fingerprint(apikey: string): string {
  return `sha256:${createHash('sha256').update(apikey).digest('hex').slice(0, 16)}`;
}

/**
 * CiviCRM (authx + APIv4). One contact holds one key (`civicrm_contact.api_key`), so a grace period
 * needs two service contacts, A and B, taking turns: the new key goes on the contact that is not in
 * use, and the old contact's key is replaced by a throw-away value after the grace period.
 *
 * Management calls authenticate with the key in use (`X-Civi-Auth: Bearer …`), so both contacts need
 * the "edit api keys" permission; the site key is sent as `X-Civi-Key` when configured.
 */
import { KeyTestError, ProviderError } from '../errors';
import { generateKey } from '../generate';
import { type HttpRequest, httpRequest, rejected, unexpected } from '../http';
import type { IssuedKey, KeyProvider, ListedKey } from '../provider';
import { activeContactOf, type CiviCrmSecret } from '../secret';

const NAME = 'civicrm';

export function civicrmProvider(
  secret: Pick<CiviCrmSecret, 'baseUrl' | 'key' | 'options' | 'providerKeyId'>,
  deps: { generate?: () => string } = {},
): KeyProvider {
  const { contactIds, siteKey } = secret.options;
  // The contact whose key is in use: the one the current key was recorded with (a key submitted with
  // --key-id names it), so a stale `activeContact` can never point the next rotation at the key in use.
  const activeContact = activeContactOf(secret as CiviCrmSecret);
  const inUse = new Set([contactIds[activeContact]]);
  if (secret.providerKeyId) inUse.add(Number(secret.providerKeyId));
  const generate = deps.generate ?? (() => generateKey(32));
  const headers = (key: string): Record<string, string> => ({
    'x-civi-auth': `Bearer ${key}`,
    'x-requested-with': 'XMLHttpRequest',
    ...(siteKey ? { 'x-civi-key': siteKey } : {}),
  });

  async function api4(entity: string, action: string, params: unknown): Promise<unknown> {
    const req: HttpRequest = {
      method: 'POST',
      path: `civicrm/ajax/api4/${entity}/${action}`,
      headers: headers(secret.key),
      form: { params: JSON.stringify(params) },
    };
    const res = await httpRequest(NAME, secret.baseUrl, req);
    if (res.status !== 200) throw unexpected(NAME, req, res);
    return res.json();
  }

  async function setContactKey(contactId: number, key: string): Promise<void> {
    const body = (await api4('Contact', 'update', {
      where: [['id', '=', contactId]],
      values: { api_key: key },
    })) as { count?: unknown };
    if (body?.count !== 1) {
      throw new ProviderError(
        `${NAME}: Contact.update for contact ${contactId} updated ${String(body?.count)} contacts (expected 1)`,
      );
    }
  }

  /** The contact a key authenticates, or undefined when it does not. */
  async function whoIs(key: string): Promise<number | undefined> {
    const req: HttpRequest = { method: 'GET', path: 'civicrm/authx/id', headers: headers(key) };
    const res = await httpRequest(NAME, secret.baseUrl, req);
    if (res.status !== 200) return undefined;
    return Number((res.json() as { contact_id?: unknown })?.contact_id);
  }

  return {
    canCreate: true,
    canRevoke: true,
    async create(name: string): Promise<IssuedKey> {
      // Local only: the key reaches CiviCRM in set() (setSecret), as the rotation template intends.
      const next = activeContact === 'a' ? 'b' : 'a';
      return {
        key: generate(),
        keyName: name,
        providerKeyId: String(contactIds[next]),
        options: { ...secret.options, activeContact: next },
      };
    },
    async set(issued: IssuedKey): Promise<void> {
      const contactId = Number(issued.providerKeyId);
      if (inUse.has(contactId)) {
        throw new ProviderError(`${NAME}: refusing to replace the key of contact ${contactId}: it is in use`);
      }
      if (!secret.key) {
        throw new ProviderError(
          `${NAME}: no key is in use yet, so none can authenticate the update of contact ${contactId}; ` +
            'put the first key on a contact yourself and submit it with --key-id (docs/keys/civicrm.md)',
        );
      }
      // Safe to repeat without a second write: a key that already authenticates its contact is set.
      if ((await whoIs(issued.key)) === contactId) return;
      await setContactKey(contactId, issued.key);
    },
    async test(key: string, providerKeyId?: string): Promise<void> {
      const req: HttpRequest = { method: 'GET', path: 'civicrm/authx/id', headers: headers(key) };
      const res = await httpRequest(NAME, secret.baseUrl, req);
      if (res.status !== 200) throw rejected(NAME, req, res);
      const body = res.json() as { contact_id?: unknown };
      const id = Number(body?.contact_id);
      if (id !== contactIds.a && id !== contactIds.b) {
        throw new KeyTestError(
          `${NAME}: the key authenticates contact ${String(body?.contact_id)}, expected ${contactIds.a} or ${contactIds.b}`,
        );
      }
      if (providerKeyId !== undefined && String(id) !== providerKeyId) {
        throw new KeyTestError(
          `${NAME}: the key authenticates contact ${id}, but it was submitted for contact ${providerKeyId} (check --key-id)`,
        );
      }
    },
    async revoke(idOrName: string): Promise<void> {
      const contactId = Number(idOrName);
      if (contactId !== contactIds.a && contactId !== contactIds.b) {
        throw new ProviderError(
          `${NAME}: cannot revoke "${idOrName}": expected the id of contact A (${contactIds.a}) or B (${contactIds.b})`,
        );
      }
      if (inUse.has(contactId)) {
        throw new ProviderError(`${NAME}: refusing to revoke the key of contact ${contactId}: it is in use`);
      }
      // A value nobody keeps: the contact's old key stops working at once.
      await setContactKey(contactId, generateKey(32));
    },
    async list(): Promise<ListedKey[]> {
      const body = (await api4('Contact', 'get', {
        select: ['id', 'display_name'],
        where: [['id', 'IN', [contactIds.a, contactIds.b]]],
      })) as { values?: { id: number; display_name?: string }[] };
      return (body?.values ?? []).map((c) => ({
        keyName: c.display_name ?? `contact ${c.id}`,
        providerKeyId: String(c.id),
      }));
    },
  };
}

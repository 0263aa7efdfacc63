import { keyExpiry, monthOfKeyName } from './months';
import type { IssuedKey } from './provider';
import type { CredentialSecret, IssuedRecord } from './secret';

/** How many created keys the ledger remembers (two years of monthly keys). */
const LEDGER_SIZE = 24;

export interface NextKey extends IssuedKey {
  readonly origin: 'submitted' | 'provider';
  /** CiviCRM: a site key submitted with the key. */
  readonly siteKey?: string;
  /** The name of the key this one replaces early (`keys rotate --now`). */
  readonly replaces?: string;
}

/**
 * The credential document for a new key: everything of the current one, the new key's fields, the
 * current key remembered as `previous` for the grace period, and a key the provider created added to
 * the ledger of keys this credential made (what maintenance may later revoke; nothing else is).
 */
export function nextSecret(current: CredentialSecret, issued: NextKey, now: Date): CredentialSecret {
  const month = monthOfKeyName(current.policy.namePrefix, issued.keyName);
  const expiresAt =
    issued.expiresAt ??
    (current.provider === 'commcare' && month
      ? keyExpiry(month, current.policy.timeZone).toISOString()
      : undefined);
  const ledger: IssuedRecord[] = [...(current.issued ?? [])];
  if (
    issued.origin === 'provider' &&
    issued.providerKeyId &&
    !ledger.some((r) => r.providerKeyId === issued.providerKeyId && r.keyName === issued.keyName)
  ) {
    ledger.push({
      keyName: issued.keyName,
      providerKeyId: issued.providerKeyId,
      createdAt: now.toISOString(),
    });
  }
  const options: Record<string, unknown> = { ...current.options, ...issued.options };
  if (issued.siteKey) options.siteKey = issued.siteKey;
  if (current.provider === 'civicrm' && issued.providerKeyId) {
    // The contact the key is on is the active one from now on (a key submitted with --key-id included).
    const ids = (current.options as { contactIds: { a: number; b: number } }).contactIds;
    if (issued.providerKeyId === String(ids.a)) options.activeContact = 'a';
    if (issued.providerKeyId === String(ids.b)) options.activeContact = 'b';
  }
  const next = {
    ...current,
    key: issued.key,
    keyName: issued.keyName,
    providerKeyId: issued.providerKeyId,
    createdAt: now.toISOString(),
    expiresAt,
    origin: issued.origin,
    replaces: issued.replaces,
    options,
    issued: ledger.slice(-LEDGER_SIZE),
    previous:
      current.key.length > 0 && current.keyName.length > 0
        ? {
            keyName: current.keyName,
            ...(current.providerKeyId ? { providerKeyId: current.providerKeyId } : {}),
            // An early replacement revokes the key it replaces as soon as the new one is in place.
            ...(issued.replaces ? { revokedAt: now.toISOString() } : {}),
          }
        : undefined,
  };
  // JSON drops undefined fields; strip them here too so equality checks and logs stay simple.
  return JSON.parse(JSON.stringify(next)) as CredentialSecret;
}

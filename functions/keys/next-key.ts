import { keyExpiry, monthOfKeyName } from './months';
import type { IssuedKey } from './provider';
import type { CredentialSecret } from './secret';

/**
 * The credential document for a new key: everything of the current one, the new key's fields, and the
 * current key remembered as `previous` for the grace period.
 */
export function nextSecret(current: CredentialSecret, issued: IssuedKey, now: Date): CredentialSecret {
  const month = monthOfKeyName(current.policy.namePrefix, issued.keyName);
  const expiresAt =
    issued.expiresAt ??
    (current.provider === 'commcare' && month
      ? keyExpiry(month, current.policy.timeZone).toISOString()
      : undefined);
  const next = {
    ...current,
    key: issued.key,
    keyName: issued.keyName,
    providerKeyId: issued.providerKeyId,
    createdAt: now.toISOString(),
    expiresAt,
    options: issued.options ?? current.options,
    previous:
      current.key.length > 0 && current.keyName.length > 0
        ? {
            keyName: current.keyName,
            ...(current.providerKeyId ? { providerKeyId: current.providerKeyId } : {}),
          }
        : undefined,
  };
  // JSON drops undefined fields; strip them here too so equality checks and logs stay simple.
  return JSON.parse(JSON.stringify(next)) as CredentialSecret;
}

/** What `ccexport keys status` shows: the current key, its age and expiry, the next rotation, anything pending. */
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { commcareDueMonth } from './maintenance';
import { daysBetween, keyNameFor, nextRotationAt } from './months';
import {
  AWSCURRENT,
  AWSPENDING,
  describe,
  readStage,
  SUBMITTED,
  TAG_LAST_EXPORT_AT,
  TAG_LAST_EXPORT_KEY,
  TAG_RETIRED_KEY,
  tagValue,
  tryReadStage,
  versionWith,
} from './store';

export interface KeyStatus {
  readonly provider: string;
  readonly keyName: string;
  readonly ageDays: number;
  readonly createdAt: string;
  readonly expiresAt?: string;
  readonly nextRotation: string;
  readonly pendingRotation?: string;
  readonly submittedKey?: string;
  readonly dueKey?: string;
  readonly previousKey?: string;
  readonly previousRetired: boolean;
  readonly lastExport?: { keyName: string; at: string };
}

export async function keyStatus(sm: SecretsManagerClient, secretId: string, now: Date): Promise<KeyStatus> {
  const current = (await readStage(sm, secretId, AWSCURRENT)).secret;
  const meta = await describe(sm, secretId);
  const pending = versionWith(meta, AWSPENDING);
  const submitted = await tryReadStage(sm, secretId, SUBMITTED);
  const due = current.provider === 'commcare' ? commcareDueMonth(current, now) : undefined;
  const exportKey = tagValue(meta, TAG_LAST_EXPORT_KEY);
  const exportAt = tagValue(meta, TAG_LAST_EXPORT_AT);
  return {
    provider: current.provider,
    keyName: current.keyName || '(none yet)',
    ageDays: daysBetween(new Date(current.createdAt), now),
    createdAt: current.createdAt,
    ...(current.expiresAt ? { expiresAt: current.expiresAt } : {}),
    nextRotation: nextRotationAt(now, current.policy).toISOString(),
    ...(pending && pending !== versionWith(meta, AWSCURRENT) ? { pendingRotation: pending } : {}),
    ...(submitted && submitted.secret.keyName !== current.keyName
      ? { submittedKey: submitted.secret.keyName }
      : {}),
    ...(due ? { dueKey: keyNameFor(current.policy.namePrefix, due) } : {}),
    ...(current.previous ? { previousKey: current.previous.keyName } : {}),
    previousRetired:
      current.previous !== undefined && tagValue(meta, TAG_RETIRED_KEY) === current.previous.keyName,
    ...(exportKey && exportAt ? { lastExport: { keyName: exportKey, at: exportAt } } : {}),
  };
}

/** What `ccexport keys status` shows: the current key, its age and expiry, the next rotation, anything pending. */
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { GetSecretValueCommand } from '@aws-sdk/client-secrets-manager';
import { commcareDueMonth } from './maintenance';
import { daysBetween, keyNameFor, nextRotationAt } from './months';
import { isPlaceholderText, parseCredentialSecret } from './secret';
import {
  AWSCURRENT,
  AWSPENDING,
  describe,
  readSubmission,
  TAG_LAST_EXPORT_AT,
  TAG_LAST_EXPORT_KEY,
  TAG_LAST_ROTATION,
  TAG_LAST_SUBMISSION,
  TAG_RETIRED_KEY,
  tagValue,
  versionWith,
} from './store';

export interface KeyStatus {
  readonly provider: string;
  readonly keyName: string;
  /** Absent before the first key. */
  readonly ageDays?: number;
  readonly createdAt?: string;
  /** How the last rotation ended, and the last submission's verdict (with the reason when refused). */
  readonly lastRotation?: string;
  readonly lastSubmission?: string;
  readonly expiresAt?: string;
  readonly nextRotation?: string;
  readonly pendingRotation?: string;
  readonly submittedKey?: string;
  readonly dueKey?: string;
  readonly previousKey?: string;
  readonly previousRetired: boolean;
  readonly lastExport?: { keyName: string; at: string };
}

export async function keyStatus(sm: SecretsManagerClient, secretId: string, now: Date): Promise<KeyStatus> {
  const meta = await describe(sm, secretId);
  const currentText = (
    await sm.send(new GetSecretValueCommand({ SecretId: secretId, VersionStage: AWSCURRENT }))
  ).SecretString;
  const lastRotation = tagValue(meta, TAG_LAST_ROTATION);
  const lastSubmission = tagValue(meta, TAG_LAST_SUBMISSION);
  const outcomes = {
    ...(lastRotation ? { lastRotation } : {}),
    ...(lastSubmission ? { lastSubmission } : {}),
  };
  if (isPlaceholderText(currentText)) {
    const waiting = await readSubmission(sm, secretId);
    return {
      provider: '(set by the first key)',
      keyName: '(none yet)',
      previousRetired: false,
      ...(waiting ? { submittedKey: waiting.submission.keyName ?? '(name chosen at rotation)' } : {}),
      ...outcomes,
    };
  }
  const current = parseCredentialSecret(currentText, `secret ${secretId} (AWSCURRENT)`);
  const pending = versionWith(meta, AWSPENDING);
  const submitted = await readSubmission(sm, secretId);
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
    ...(submitted ? { submittedKey: submitted.submission.keyName ?? '(name chosen at rotation)' } : {}),
    ...outcomes,
    ...(due ? { dueKey: keyNameFor(current.policy.namePrefix, due) } : {}),
    ...(current.previous ? { previousKey: current.previous.keyName } : {}),
    previousRetired:
      current.previous !== undefined && tagValue(meta, TAG_RETIRED_KEY) === current.previous.keyName,
    ...(exportKey && exportAt ? { lastExport: { keyName: exportKey, at: exportAt } } : {}),
  };
}

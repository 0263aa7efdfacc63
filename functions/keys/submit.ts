/**
 * Taking a key from a person (CommCare HQ, or the first key of any provider) and starting rotation.
 *
 * The key is stored on a new version under our own label CCEXPORT_SUBMITTED, then RotateSecret runs
 * the normal four steps: createSecret copies the submitted version to the rotation's AWSPENDING,
 * testSecret checks it against the provider, finishSecret promotes it. (Putting it straight on
 * AWSPENDING would race RotateSecret, which registers its own AWSPENDING placeholder for its token.)
 */
import { randomUUID } from 'node:crypto';
import { RotateSecretCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { KeyUsageError } from './errors';
import {
  addMonths,
  compareMonths,
  keyExpiry,
  keyNameFor,
  monthOf,
  monthOfKeyName,
  rotationDay,
} from './months';
import { nextSecret } from './next-key';
import { AWSCURRENT, clearStalePending, putVersion, readStage, SUBMITTED } from './store';

/** A rotation younger than this is left alone (it may still be running). */
const RUNNING_ROTATION_MS = 5 * 60 * 1000;

export interface SubmitOptions {
  readonly key: string;
  /** Defaults to the month the reminders ask for (next month from the reminder day on, else this month). */
  readonly keyName?: string;
  readonly providerKeyId?: string;
}

export async function submitKey(
  sm: SecretsManagerClient,
  secretId: string,
  options: SubmitOptions,
  now: Date,
): Promise<{ keyName: string; rotationVersion: string }> {
  const key = options.key.trim();
  if (key.length < 8 || /\s/.test(key)) {
    throw new KeyUsageError('the key read from input is not a single token of at least 8 characters');
  }
  const current = (await readStage(sm, secretId, AWSCURRENT)).secret;
  const { namePrefix, timeZone, reminderDays } = current.policy;
  const here = monthOf(now, timeZone);
  const day = Number(new Intl.DateTimeFormat('en-US', { timeZone, day: 'numeric' }).format(now));
  const keyName =
    options.keyName ?? keyNameFor(namePrefix, day >= rotationDay(reminderDays) ? addMonths(here, 1) : here);
  const month = monthOfKeyName(namePrefix, keyName);
  if (!month) throw new KeyUsageError(`key name "${keyName}" is not ${namePrefix}-YYYY-MM`);
  if (current.key === key) throw new KeyUsageError('this key is already the current key');
  if (current.keyName === keyName) {
    throw new KeyUsageError(`key name "${keyName}" is the current key's name; names are never reused`);
  }
  const served = monthOfKeyName(namePrefix, current.keyName);
  if (current.key && served && compareMonths(month, served) < 0) {
    throw new KeyUsageError(`key "${keyName}" is older than the current key "${current.keyName}"`);
  }
  const doc = nextSecret(
    current,
    {
      key,
      keyName,
      ...(options.providerKeyId ? { providerKeyId: options.providerKeyId } : {}),
      ...(current.provider === 'commcare' ? { expiresAt: keyExpiry(month, timeZone).toISOString() } : {}),
    },
    now,
  );
  await putVersion(sm, secretId, randomUUID(), [SUBMITTED], doc);
  const rotationVersion = await startRotation(sm, secretId, now);
  return { keyName, rotationVersion };
}

/** Starts a rotation now (clearing a stale AWSPENDING first). Resolves to the rotation's version id. */
export async function startRotation(sm: SecretsManagerClient, secretId: string, now: Date): Promise<string> {
  const { running } = await clearStalePending(sm, secretId, now, RUNNING_ROTATION_MS);
  if (running) {
    throw new KeyUsageError(
      `a rotation of ${secretId} started less than 5 minutes ago is still running; try again later`,
    );
  }
  const token = randomUUID();
  await sm.send(
    new RotateSecretCommand({ SecretId: secretId, ClientRequestToken: token, RotateImmediately: true }),
  );
  return token;
}

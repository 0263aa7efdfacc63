/**
 * The daily maintenance run (EventBridge Scheduler → the rotation Lambda with `{"action":"maintain"}`):
 *
 * 1. ends a rotation that has not finished within an hour (its AWSPENDING would block the next one),
 *    revoking a key it had created;
 * 2. CommCare HQ: reminds the key owner by SNS from `reminderDays` before the month, escalating while
 *    no key for that month has arrived;
 * 3. ends the grace period: once `graceDays` have passed since the switch *and* an export has
 *    succeeded with the new key, revokes the previous key (Conduce, CiviCRM) or asks the owner to
 *    deactivate it in HQ (CommCare), once; the retired name is kept in a tag;
 * 4. revokes any other key this credential created (the ledger in the secret) that the provider still
 *    lists: keys of failed or replaced rotations never stay live. Keys we did not create are never
 *    touched: they are not in the ledger.
 */
import {
  GetSecretValueCommand,
  type SecretsManagerClient,
  TagResourceCommand,
  UpdateSecretVersionStageCommand,
} from '@aws-sdk/client-secrets-manager';
import type { KeyLog } from './log';
import {
  addMonths,
  compareMonths,
  daysBetween,
  formatMonth,
  keyExpiry,
  keyNameFor,
  localDateTime,
  monthOf,
  monthOfKeyName,
  monthStart,
  replacementKeyName,
  rotationDay,
  type YearMonth,
} from './months';
import type { Notifier } from './notify';
import type { ProviderFactory } from './provider';
import { abandon } from './rotation';
import {
  type CommCareSecret,
  type CredentialSecret,
  type CredentialSettings,
  isPlaceholderText,
  parseCredentialSecret,
} from './secret';
import {
  AWSCURRENT,
  AWSPENDING,
  AWSPREVIOUS,
  describe,
  REJECTED,
  readSubmission,
  TAG_LAST_EXPORT_AT,
  TAG_LAST_EXPORT_KEY,
  TAG_LAST_SUBMISSION,
  TAG_RETIRED_KEY,
  tagValue,
  versionCreated,
  versionWith,
} from './store';

export interface MaintenanceDeps {
  readonly sm: SecretsManagerClient;
  readonly providers: ProviderFactory;
  readonly notifier: Notifier;
  readonly now: () => Date;
  readonly log: KeyLog;
  /** Label, e.g. the CLI's credential name, used in messages. Defaults to the secret id. */
  readonly credentialName?: string;
  /** The deployment's settings. @default - the settings stored in the secret */
  readonly settings?: CredentialSettings;
}

export interface MaintenanceResult {
  clearedPending?: string;
  reminder?: 'reminder' | 'overdue' | 'urgent';
  retired?: string;
  waitingForExport?: boolean;
  /** Names of stale keys from the ledger revoked by this run. */
  revokedStale?: string[];
  /** The key put back in AWSCURRENT after a deploy wrote the placeholder over it. */
  restored?: string;
}

/**
 * Stacks deployed before the settings left the secret held them in the template's SecretString, so the
 * first deploy of this version writes the constant placeholder over the key in use, once (CloudFormation
 * writes a changed SecretString as a new AWSCURRENT). The key is then AWSPREVIOUS: move AWSCURRENT back
 * to it. Resolves to the restored key's name, or undefined when there is nothing to restore.
 */
export async function restoreOverwrittenKey(
  sm: SecretsManagerClient,
  secretId: string,
): Promise<string | undefined> {
  let previous: { VersionId?: string; SecretString?: string };
  try {
    previous = await sm.send(new GetSecretValueCommand({ SecretId: secretId, VersionStage: AWSPREVIOUS }));
  } catch (e) {
    if ((e as { name?: string }).name === 'ResourceNotFoundException') return undefined;
    throw e;
  }
  if (!previous.VersionId || isPlaceholderText(previous.SecretString)) return undefined;
  let keyName: string;
  try {
    const doc = JSON.parse(previous.SecretString ?? '') as { key?: unknown; keyName?: unknown };
    if (typeof doc.key !== 'string' || doc.key.length === 0) return undefined;
    keyName = typeof doc.keyName === 'string' ? doc.keyName : '';
  } catch {
    return undefined;
  }
  const meta = await describe(sm, secretId);
  const current = versionWith(meta, AWSCURRENT);
  await sm.send(
    new UpdateSecretVersionStageCommand({
      SecretId: secretId,
      VersionStage: AWSCURRENT,
      MoveToVersionId: previous.VersionId,
      ...(current ? { RemoveFromVersionId: current } : {}),
    }),
  );
  return keyName || '(unnamed key)';
}

/** A pending version older than this is a failed rotation, not one in flight. */
const STALE_PENDING_MS = 60 * 60 * 1000;

export async function runMaintenance(secretId: string, deps: MaintenanceDeps): Promise<MaintenanceResult> {
  const now = deps.now();
  const result: MaintenanceResult = {};
  const before = await describe(deps.sm, secretId);
  const pending = versionWith(before, AWSPENDING);
  if (pending && pending !== versionWith(before, AWSCURRENT)) {
    const created = await versionCreated(deps.sm, secretId, pending);
    if (!created || now.getTime() - created.getTime() >= STALE_PENDING_MS) {
      await abandon(
        {
          sm: deps.sm,
          providers: deps.providers,
          now: deps.now,
          log: deps.log,
          ...(deps.settings ? { settings: deps.settings } : {}),
        },
        secretId,
        pending,
        'the rotation did not finish within an hour',
      );
      result.clearedPending = pending;
      deps.log.warn('ended a rotation that did not finish within an hour', { secretId, versionId: pending });
    }
  }
  let currentText = (
    await deps.sm.send(new GetSecretValueCommand({ SecretId: secretId, VersionStage: AWSCURRENT }))
  ).SecretString;
  if (isPlaceholderText(currentText)) {
    const restored = await restoreOverwrittenKey(deps.sm, secretId);
    if (restored) {
      result.restored = restored;
      deps.log.warn('put the key back after a deploy wrote the empty placeholder over it', {
        secretId,
        keyName: restored,
      });
      currentText = (
        await deps.sm.send(new GetSecretValueCommand({ SecretId: secretId, VersionStage: AWSCURRENT }))
      ).SecretString;
    }
  }
  if (!deps.settings && isPlaceholderText(currentText)) return result;
  const current = parseCredentialSecret(currentText, `secret ${secretId} (AWSCURRENT)`, deps.settings);
  const name = deps.credentialName ?? secretId;

  if (current.provider === 'commcare') {
    const level = await remind(current, secretId, name, now, deps);
    if (level) result.reminder = level;
  }

  const meta = await describe(deps.sm, secretId);
  const previous = current.previous;
  if (previous && !previous.revokedAt && tagValue(meta, TAG_RETIRED_KEY) !== previous.keyName) {
    const graceEnds = new Date(Date.parse(current.createdAt) + current.policy.graceDays * 86_400_000);
    const exportKey = tagValue(meta, TAG_LAST_EXPORT_KEY);
    const exportAt = tagValue(meta, TAG_LAST_EXPORT_AT);
    const exportedWithNew = exportKey === current.keyName && exportAt !== undefined;
    if (now >= graceEnds && exportedWithNew) {
      const provider = deps.providers(current);
      if (provider.canRevoke && previous.providerKeyId) {
        await provider.revoke(previous.providerKeyId);
        deps.log.info('revoked the previous key after the grace period', {
          secretId,
          keyName: previous.keyName,
        });
      } else if (provider.canRevoke) {
        // Recorded by name only (before keys were recorded by id): never revoke what we cannot identify.
        deps.log.warn('the previous key has no recorded id; revoke it yourself', {
          secretId,
          keyName: previous.keyName,
        });
      } else {
        await deps.notifier.publish({
          subject: `[ccexport] Deactivate old CommCare API key ${previous.keyName} (${name})`,
          body: [
            `The new key ${current.keyName} has been in use since ${current.createdAt} and an export has succeeded with it.`,
            `Please deactivate (then delete) the old key "${previous.keyName}" at ${current.baseUrl}/account/api_keys/`,
            `(signed in as ${current.username}). It expires on its own on its expiry date if you do nothing.`,
          ].join('\n'),
        });
      }
      await deps.sm.send(
        new TagResourceCommand({
          SecretId: secretId,
          Tags: [{ Key: TAG_RETIRED_KEY, Value: previous.keyName }],
        }),
      );
      result.retired = previous.keyName;
    } else if (now >= graceEnds) {
      result.waitingForExport = true;
      deps.log.info('grace period over; keeping the previous key until an export succeeds with the new one', {
        secretId,
        keyName: current.keyName,
      });
    }
  }
  const revoked = await revokeStale(current, secretId, deps);
  if (revoked.length > 0) result.revokedStale = revoked;
  return result;
}

/**
 * Revokes ledger keys that are neither current nor the previous key still in its grace period, while
 * the provider still lists them. Only providers that can tell whether a key is live take part.
 */
async function revokeStale(
  current: CredentialSecret,
  secretId: string,
  deps: MaintenanceDeps,
): Promise<string[]> {
  const provider = deps.providers(current);
  if (!provider.canRevoke || !provider.isLive || !current.key) return [];
  const keep = new Set([current.providerKeyId]);
  if (current.previous?.providerKeyId && !current.previous.revokedAt)
    keep.add(current.previous.providerKeyId);
  const revoked: string[] = [];
  for (const record of current.issued ?? []) {
    if (keep.has(record.providerKeyId)) continue;
    if (!(await provider.isLive(record.providerKeyId))) continue;
    await provider.revoke(record.providerKeyId);
    revoked.push(record.keyName);
    deps.log.warn('revoked a stale key this credential created', { secretId, keyName: record.keyName });
  }
  return revoked;
}

/** The month a person should create a key for now, or undefined when none is due. */
export function commcareDueMonth(current: CredentialSecret, now: Date): YearMonth | undefined {
  const { timeZone, namePrefix, reminderDays } = current.policy;
  const here = monthOf(now, timeZone);
  const next = addMonths(here, 1);
  const served = current.key ? monthOfKeyName(namePrefix, current.keyName) : undefined;
  if (!served || compareMonths(served, here) < 0) return here;
  if (compareMonths(served, next) >= 0) return undefined;
  return localDateTime(now, timeZone).day >= rotationDay(reminderDays) ? next : undefined;
}

async function remind(
  current: CommCareSecret,
  secretId: string,
  name: string,
  now: Date,
  deps: MaintenanceDeps,
): Promise<MaintenanceResult['reminder']> {
  const due = commcareDueMonth(current, now);
  if (!due) return undefined;
  const { timeZone, namePrefix, leadDays } = current.policy;
  const keyName = keyNameFor(namePrefix, due);
  const submitted = await readSubmission(deps.sm, secretId);
  const rejected = await readSubmission(deps.sm, secretId, REJECTED);
  const lastSubmission = tagValue(await describe(deps.sm, secretId), TAG_LAST_SUBMISSION);
  const rejectedReason =
    rejected &&
    (rejected.submission.keyName ?? keyName) === keyName &&
    lastSubmission?.startsWith(`${rejected.versionId} rejected: `)
      ? lastSubmission.slice(rejected.versionId.length + ' rejected: '.length)
      : undefined;
  const starts = monthStart(due, timeZone);
  const daysLeft = daysBetween(now, starts);
  const expiresSoon = current.expiresAt ? daysBetween(now, new Date(current.expiresAt)) <= 3 : false;
  const level =
    daysLeft <= 0 || expiresSoon || !current.key ? 'urgent' : daysLeft < leadDays ? 'overdue' : 'reminder';
  const expiry = keyExpiry(due, timeZone);
  const lastDay = new Date(expiry.getTime() - 1);
  const expiryText = new Intl.DateTimeFormat('en-GB', { timeZone, dateStyle: 'long' }).format(lastDay);
  const scope = current.projects.length === 1 ? `the project "${current.projects[0]}"` : '"All Projects"';
  const ips = current.options.allowListIps;
  const prefix = level === 'urgent' ? 'URGENT: ' : level === 'overdue' ? 'Overdue: ' : '';
  await deps.notifier.publish({
    subject: `[ccexport] ${prefix}create CommCare API key ${keyName} for ${name}`,
    body: [
      `Exports for ${name} need a new CommCare HQ API key for ${formatMonth(due)}` +
        (daysLeft > 0 ? `, starting in ${daysLeft} day(s).` : '; the month has started.'),
      submitted
        ? 'A key was submitted but has not passed its test yet; run "ccexport keys status" to see why.'
        : '',
      rejectedReason
        ? `The key submitted as ${keyName} failed its test: ${rejectedReason}. HQ refuses a name it has seen ` +
          `(deleted keys included): delete the failed key in HQ first, or create the new one as ${replacementKeyName(namePrefix, keyName, due)} and submit it with --name ${replacementKeyName(namePrefix, keyName, due)}.`
        : '',
      '',
      `1. Sign in to ${current.baseUrl}/account/api_keys/ as ${current.username}.`,
      `2. Create a key named exactly: ${rejectedReason ? replacementKeyName(namePrefix, keyName, due) : keyName}`,
      `3. Project: ${scope}${current.projects.length > 1 ? ` (it must reach ${current.projects.join(', ')})` : ''}`,
      `4. IP allow-list: ${ips.length > 0 ? ips.join(', ') : '(none configured: leave empty)'}`,
      `5. Expiration date: ${expiryText} (the end of the following month)`,
      `6. Copy the key (HQ shows it once) and run: ccexport keys submit ${name}${rejectedReason ? ` --name ${replacementKeyName(namePrefix, keyName, due)}` : ''}`,
      '   It waits for the key to pass its test and tells you if it does not.',
      '   It reads the key from the prompt or stdin; never put it on the command line.',
    ]
      .filter((l, i, all) => l !== '' || all[i - 1] !== '')
      .join('\n'),
  });
  // Not "level": Powertools' Logger reserves it for the log level.
  deps.log.info('sent key reminder', { secretId, keyName, reminderLevel: level });
  return level;
}

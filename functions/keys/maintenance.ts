/**
 * The daily maintenance run (EventBridge Scheduler → the rotation Lambda with `{"action":"maintain"}`):
 *
 * 1. clears an AWSPENDING label a failed rotation left behind, so the next rotation is not blocked;
 * 2. CommCare HQ: reminds the key owner by SNS from `reminderDays` before the month, escalating while
 *    no key for that month has arrived;
 * 3. ends the grace period: once `graceDays` have passed since the switch *and* an export has
 *    succeeded with the new key, revokes the previous key (Conduce, CiviCRM) or asks the owner to
 *    deactivate it in HQ (CommCare), once; the retired name is kept in a tag.
 */
import { type SecretsManagerClient, TagResourceCommand } from '@aws-sdk/client-secrets-manager';
import type { KeyLog } from './log';
import {
  addMonths,
  compareMonths,
  daysBetween,
  formatMonth,
  keyExpiry,
  keyNameFor,
  monthOf,
  monthOfKeyName,
  monthStart,
  rotationDay,
  type YearMonth,
} from './months';
import type { Notifier } from './notify';
import type { ProviderFactory } from './provider';
import type { CommCareSecret, CredentialSecret } from './secret';
import {
  AWSCURRENT,
  clearStalePending,
  describe,
  readStage,
  SUBMITTED,
  TAG_LAST_EXPORT_AT,
  TAG_LAST_EXPORT_KEY,
  TAG_RETIRED_KEY,
  tagValue,
  tryReadStage,
} from './store';

export interface MaintenanceDeps {
  readonly sm: SecretsManagerClient;
  readonly providers: ProviderFactory;
  readonly notifier: Notifier;
  readonly now: () => Date;
  readonly log: KeyLog;
  /** Label, e.g. the CLI's credential name, used in messages. Defaults to the secret id. */
  readonly credentialName?: string;
}

export interface MaintenanceResult {
  clearedPending?: string;
  reminder?: 'reminder' | 'overdue' | 'urgent';
  retired?: string;
  waitingForExport?: boolean;
}

/** A pending version older than this is a failed rotation, not one in flight. */
const STALE_PENDING_MS = 60 * 60 * 1000;

export async function runMaintenance(secretId: string, deps: MaintenanceDeps): Promise<MaintenanceResult> {
  const now = deps.now();
  const result: MaintenanceResult = {};
  const cleared = await clearStalePending(deps.sm, secretId, now, STALE_PENDING_MS);
  if (cleared.cleared) {
    result.clearedPending = cleared.cleared;
    deps.log.warn('removed AWSPENDING left by a failed rotation', { secretId, versionId: cleared.cleared });
  }
  const current = (await readStage(deps.sm, secretId, AWSCURRENT)).secret;
  const name = deps.credentialName ?? secretId;

  if (current.provider === 'commcare') {
    const level = await remind(current, secretId, name, now, deps);
    if (level) result.reminder = level;
  }

  const meta = await describe(deps.sm, secretId);
  const previous = current.previous;
  if (previous && tagValue(meta, TAG_RETIRED_KEY) !== previous.keyName) {
    const graceEnds = new Date(Date.parse(current.createdAt) + current.policy.graceDays * 86_400_000);
    const exportKey = tagValue(meta, TAG_LAST_EXPORT_KEY);
    const exportAt = tagValue(meta, TAG_LAST_EXPORT_AT);
    const exportedWithNew = exportKey === current.keyName && exportAt !== undefined;
    if (now >= graceEnds && exportedWithNew) {
      const provider = deps.providers(current);
      if (provider.canRevoke) {
        await provider.revoke(previous.providerKeyId ?? previous.keyName);
        deps.log.info('revoked the previous key after the grace period', {
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
  return result;
}

/** The month a person should create a key for now, or undefined when none is due. */
export function commcareDueMonth(current: CredentialSecret, now: Date): YearMonth | undefined {
  const { timeZone, namePrefix, reminderDays } = current.policy;
  const here = monthOf(now, timeZone);
  const next = addMonths(here, 1);
  const served = current.key ? monthOfKeyName(namePrefix, current.keyName) : undefined;
  if (!served || compareMonths(served, here) < 0) return here;
  if (compareMonths(served, next) >= 0) return undefined;
  const day = Number(new Intl.DateTimeFormat('en-US', { timeZone, day: 'numeric' }).format(now));
  return day >= rotationDay(reminderDays) ? next : undefined;
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
  const submitted = await tryReadStage(deps.sm, secretId, SUBMITTED);
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
      submitted && submitted.secret.keyName === keyName
        ? `A key named ${keyName} was submitted but has not passed its test yet; check the rotation alarm.`
        : '',
      '',
      `1. Sign in to ${current.baseUrl}/account/api_keys/ as ${current.username}.`,
      `2. Create a key named exactly: ${keyName}`,
      `3. Project: ${scope}${current.projects.length > 1 ? ` (it must reach ${current.projects.join(', ')})` : ''}`,
      `4. IP allow-list: ${ips.length > 0 ? ips.join(', ') : '(none configured: leave empty)'}`,
      `5. Expiration date: ${expiryText} (the end of the following month)`,
      `6. Copy the key (HQ shows it once) and run: ccexport keys submit ${name}`,
      '   It reads the key from the prompt or stdin; never put it on the command line.',
    ]
      .filter((l, i, all) => l !== '' || all[i - 1] !== '')
      .join('\n'),
  });
  deps.log.info('sent key reminder', { secretId, keyName, level });
  return level;
}

/**
 * The Secrets Manager rotation protocol for one credential, after the aws-samples template
 * (SecretsManagerRotationTemplate/lambda_function.py): a DescribeSecret gate, then createSecret,
 * setSecret, testSecret, finishSecret. Every step is safe to repeat:
 *
 * - createSecret returns at once when the token's AWSPENDING value exists, and providers create keys
 *   idempotently per rotation token (never two remote keys for one rotation);
 * - setSecret and testSecret only push and probe the pending key;
 * - finishSecret moves AWSCURRENT with RemoveFromVersionId and is a no-op when already done.
 *
 * When a step fails, Secrets Manager retries the whole rotation with the **same** ClientRequestToken.
 * So a transient failure (provider 5xx/429, network, timeout, a crash) leaves the AWSPENDING version in
 * place for that retry; only a terminal failure (key rejected, nothing submitted, broken secret)
 * removes it at once, revokes a key the rotation had created, and marks a submitted key rejected, so
 * the next rotation is not blocked. A pending version nobody finishes is cleared by the daily
 * maintenance run after an hour. AWSCURRENT is only ever moved by finishSecret's single
 * UpdateSecretVersionStage call, so no failure can touch it.
 */
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { UpdateSecretVersionStageCommand } from '@aws-sdk/client-secrets-manager';
import {
  describeCause,
  isTransient,
  KeyNotSubmittedError,
  RotationStateError,
  RotationStepError,
} from './errors';
import type { KeyLog } from './log';
import {
  addMonths,
  compareMonths,
  formatMonth,
  keyNameFor,
  monthOf,
  monthOfKeyName,
  replacementKeyName,
  targetMonth,
} from './months';
import { nextSecret } from './next-key';
import type { ProviderFactory } from './provider';
import type { CredentialSecret, CredentialSettings, Submission } from './secret';
import {
  AWSCURRENT,
  AWSPENDING,
  describe,
  putVersion,
  REJECTED,
  readStage,
  readSubmission,
  removeStage,
  SUBMITTED,
  setTag,
  TAG_LAST_ROTATION,
  TAG_LAST_SUBMISSION,
  TAG_ROTATE_NOW,
  tagValue,
  tryReadStage,
  versionWith,
} from './store';

export const STEPS = ['createSecret', 'setSecret', 'testSecret', 'finishSecret'] as const;
export type RotationStep = (typeof STEPS)[number];

export interface RotationEvent {
  readonly Step: string;
  readonly SecretId: string;
  readonly ClientRequestToken: string;
  /** Only for cross-account rotation; sensitive, never logged. */
  readonly RotationToken?: string;
}

export interface RotationDeps {
  readonly sm: SecretsManagerClient;
  readonly providers: ProviderFactory;
  readonly now: () => Date;
  readonly log: KeyLog;
  /**
   * The deployment's settings (provider, base URL, projects, policy), laid over what the secret holds.
   * @default - the settings stored in the secret
   */
  readonly settings?: CredentialSettings;
}

/** A `ccexport keys rotate --now` request older than this is stale and ignored. */
const ROTATE_NOW_WINDOW_MS = 60 * 60 * 1000;

export function isRotationEvent(e: unknown): e is RotationEvent {
  const v = e as Partial<RotationEvent> | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof v.Step === 'string' &&
    typeof v.SecretId === 'string' &&
    typeof v.ClientRequestToken === 'string'
  );
}

/** Runs one rotation step. Resolves to what it did (for logs and tests). */
export async function rotateStep(event: RotationEvent, deps: RotationDeps): Promise<string> {
  const { SecretId: secretId, ClientRequestToken: token, Step: step } = event;
  if (!(STEPS as readonly string[]).includes(step)) {
    throw new RotationStateError(`invalid rotation step "${step}" (expected one of ${STEPS.join(', ')})`);
  }
  const meta = await describe(deps.sm, secretId);
  if (!meta.RotationEnabled) throw new RotationStateError(`secret ${secretId} is not enabled for rotation`);
  const stages = meta.VersionIdsToStages?.[token];
  if (!stages) {
    throw new RotationStateError(
      `secret ${secretId} has no version ${token} (expected the rotation's token)`,
    );
  }
  if (stages.includes(AWSCURRENT)) {
    deps.log.info('rotation already finished for this version', { step, secretId, versionId: token });
    return 'already-current';
  }
  if (!stages.includes(AWSPENDING)) {
    throw new RotationStateError(
      `secret ${secretId} version ${token} is not AWSPENDING (stages: ${stages.join(', ') || 'none'})`,
    );
  }
  try {
    const outcome = await runStep(step as RotationStep, event, deps);
    deps.log.info('rotation step done', { step, secretId, versionId: token, outcome });
    return outcome;
  } catch (cause) {
    const transient = isTransient(cause);
    const error = new RotationStepError(step, secretId, { cause, transient });
    if (transient) {
      deps.log.warn('rotation step failed; Secrets Manager retries the rotation with the same token', {
        step,
        secretId,
        versionId: token,
        error: error.message,
      });
    } else {
      deps.log.error('rotation step failed; rotation abandoned', {
        step,
        secretId,
        versionId: token,
        error: error.message,
      });
      await abandon(deps, secretId, token, describeCause(cause));
    }
    await note(
      deps,
      secretId,
      TAG_LAST_ROTATION,
      `${token} ${deps.now().toISOString()} ${step} ${transient ? 'failed, retrying' : 'failed'}: ${describeCause(cause)}`,
    );
    throw error;
  }
}

/** Best effort: a tag that cannot be written must not hide the step's own outcome. */
async function note(deps: RotationDeps, secretId: string, tag: string, text: string): Promise<void> {
  try {
    await setTag(deps.sm, secretId, tag, text);
  } catch (e) {
    deps.log.warn('could not record the rotation outcome', { secretId, tag, error: describeCause(e) });
  }
}

function readCurrent(deps: RotationDeps, secretId: string) {
  return readStage(deps.sm, secretId, AWSCURRENT, undefined, deps.settings);
}

function readPending(deps: RotationDeps, secretId: string, token: string) {
  return tryReadStage(deps.sm, secretId, AWSPENDING, token, deps.settings);
}

async function runStep(step: RotationStep, event: RotationEvent, deps: RotationDeps): Promise<string> {
  switch (step) {
    case 'createSecret':
      return await createSecret(event, deps);
    case 'setSecret':
      return await setSecret(event, deps);
    case 'testSecret':
      return await testSecret(event, deps);
    case 'finishSecret':
      return await finishSecret(event, deps);
  }
}

async function createSecret(event: RotationEvent, deps: RotationDeps): Promise<string> {
  const { SecretId: secretId, ClientRequestToken: token } = event;
  const current = (await readCurrent(deps, secretId)).secret;
  if (await readPending(deps, secretId, token)) return 'pending-exists';

  const next = await chooseNext(current, secretId, token, deps);
  await putVersion(deps.sm, secretId, token, [AWSPENDING], next.secret, event.RotationToken);
  return next.outcome;
}

async function chooseNext(
  current: CredentialSecret,
  secretId: string,
  token: string,
  deps: RotationDeps,
): Promise<{ secret: CredentialSecret; outcome: string }> {
  const now = deps.now();
  const { namePrefix: prefix, timeZone } = current.policy;
  // A key a person submitted wins over the schedule, once it is checked; a refused one is set aside.
  const waiting = await readSubmission(deps.sm, secretId);
  if (waiting) {
    const checked = checkSubmission(current, waiting.submission, now);
    if (typeof checked === 'string') {
      await rejectSubmission(deps, secretId, waiting.versionId, checked);
    } else {
      const { submission, keyName } = checked;
      return {
        secret: nextSecret(
          current,
          {
            key: submission.key,
            keyName,
            origin: 'submitted',
            ...(submission.providerKeyId ? { providerKeyId: submission.providerKeyId } : {}),
            ...(submission.siteKey ? { siteKey: submission.siteKey } : {}),
          },
          now,
        ),
        outcome: `staged submitted key ${keyName}`,
      };
    }
  }
  const provider = deps.providers(current);
  const currentMonth = monthOfKeyName(prefix, current.keyName);
  const meta = await describe(deps.sm, secretId);
  const requested = tagValue(meta, TAG_ROTATE_NOW);
  const emergency =
    requested !== undefined &&
    current.key.length > 0 &&
    now.getTime() - Date.parse(requested) < ROTATE_NOW_WINDOW_MS &&
    Date.parse(requested) > Date.parse(current.createdAt);
  if (emergency && provider.canCreate && currentMonth) {
    // `keys rotate --now`: a fresh key even though the current one serves the month (it may have leaked).
    const here = monthOf(now, timeZone);
    const month = compareMonths(currentMonth, here) > 0 ? currentMonth : here;
    const name = replacementKeyName(prefix, current.keyName, month);
    const issued = await provider.create(name, token);
    return {
      secret: nextSecret(current, { ...issued, origin: 'provider', replaces: current.keyName }, now),
      outcome: `created ${name} (replacing ${current.keyName})`,
    };
  }
  const month = targetMonth(now, current.policy);
  const name = keyNameFor(prefix, month);
  if (current.key.length > 0 && currentMonth && compareMonths(currentMonth, month) >= 0) {
    // The key in use already serves this month: finishSecret keeps it (AWSCURRENT and AWSPREVIOUS stay).
    return {
      secret: { ...current, origin: 'copy' },
      outcome: `current key ${current.keyName} already serves ${formatMonth(month)}`,
    };
  }
  if (!provider.canCreate) {
    throw new KeyNotSubmittedError(
      `no key for ${formatMonth(month)} has been submitted: create "${name}" and run "ccexport keys submit <credential>"`,
    );
  }
  if (current.key.length === 0) {
    throw new KeyNotSubmittedError(
      'no key is in use yet, and the provider needs one to create the next: submit the first key with "ccexport keys submit <credential>"',
    );
  }
  const issued = await provider.create(name, token);
  return { secret: nextSecret(current, { ...issued, origin: 'provider' }, now), outcome: `created ${name}` };
}

/**
 * The name a submission takes, or why it is refused: a key already in use, a name that is not
 * `<prefix>-YYYY-MM`, reused, or older than the key in use. Without `--name`, a key submitted while the
 * current key serves this month is for next month, else for this month.
 */
export function checkSubmission(
  current: CredentialSecret,
  submission: Submission,
  now: Date,
): { submission: Submission; keyName: string } | string {
  const { namePrefix: prefix, timeZone } = current.policy;
  const here = monthOf(now, timeZone);
  const served = current.key ? monthOfKeyName(prefix, current.keyName) : undefined;
  const keyName =
    submission.keyName ??
    keyNameFor(prefix, served && compareMonths(served, here) >= 0 ? addMonths(here, 1) : here);
  if (current.key && submission.key === current.key)
    return `the submitted key is already the current key ${current.keyName}`;
  const month = monthOfKeyName(prefix, keyName);
  if (!month) return `key name "${keyName}" is not ${prefix}-YYYY-MM`;
  if (current.key && keyName === current.keyName) {
    return `key name "${keyName}" is the current key's name; HQ refuses a name twice, so create the key under a new name (e.g. ${replacementKeyName(prefix, keyName, month)})`;
  }
  if (served && compareMonths(month, served) < 0) {
    return `key "${keyName}" is older than the current key "${current.keyName}"`;
  }
  return { submission, keyName };
}

async function rejectSubmission(
  deps: RotationDeps,
  secretId: string,
  versionId: string,
  reason: string,
): Promise<void> {
  const meta = await describe(deps.sm, secretId);
  const stages = meta.VersionIdsToStages?.[versionId] ?? [];
  if (!stages.includes(SUBMITTED)) return;
  const previousRejected = versionWith(meta, REJECTED);
  await deps.sm.send(
    new UpdateSecretVersionStageCommand({
      SecretId: secretId,
      VersionStage: REJECTED,
      MoveToVersionId: versionId,
      ...(previousRejected && previousRejected !== versionId
        ? { RemoveFromVersionId: previousRejected }
        : {}),
    }),
  );
  await removeStage(deps.sm, secretId, SUBMITTED, versionId);
  deps.log.warn('submitted key rejected', { secretId, versionId, reason });
  await note(deps, secretId, TAG_LAST_SUBMISSION, `${versionId} rejected: ${reason}`);
}

async function setSecret(event: RotationEvent, deps: RotationDeps): Promise<string> {
  const { SecretId: secretId, ClientRequestToken: token } = event;
  const current = (await readCurrent(deps, secretId)).secret;
  const pending = (await readStage(deps.sm, secretId, AWSPENDING, token, deps.settings)).secret;
  // A submitted key is already at the provider (a person put it there); only keys we made are pushed.
  if (pending.origin !== 'provider') return 'nothing to set';
  if (pending.key === current.key) return 'unchanged key';
  const provider = deps.providers(current);
  if (!provider.set) return 'nothing to set';
  await provider.set({
    key: pending.key,
    keyName: pending.keyName,
    ...(pending.providerKeyId ? { providerKeyId: pending.providerKeyId } : {}),
  });
  return `set ${pending.keyName}`;
}

async function testSecret(event: RotationEvent, deps: RotationDeps): Promise<string> {
  const { SecretId: secretId, ClientRequestToken: token } = event;
  const pending = (await readPending(deps, secretId, token))?.secret;
  if (!pending || pending.key.length === 0) {
    // Secrets Manager tests a new rotation configuration by running testSecret on a copy of the current
    // value (RotateImmediately=false, which is how the stack creates the schedule). Before the first key
    // that copy is the empty placeholder: there is nothing to test, and failing would raise a
    // TestRotationFailed alarm on every first deploy.
    const current = (await readCurrent(deps, secretId)).secret;
    if (current.key.length === 0) return 'no key yet: nothing to test';
    throw new RotationStateError(
      `secret ${secretId} version ${token} has no key to test (createSecret has not stored one)`,
    );
  }
  await deps
    .providers(pending)
    .test(pending.key, pending.provider === 'civicrm' ? pending.providerKeyId : undefined);
  return `tested ${pending.keyName}`;
}

async function finishSecret(event: RotationEvent, deps: RotationDeps): Promise<string> {
  const { SecretId: secretId, ClientRequestToken: token } = event;
  const meta = await describe(deps.sm, secretId);
  const currentVersion = versionWith(meta, AWSCURRENT);
  if (currentVersion === token) return 'already-current';
  const pending = (await readStage(deps.sm, secretId, AWSPENDING, token, deps.settings)).secret;
  if (pending.origin === 'copy' || pending.key.length === 0) {
    // Nothing new: leave AWSCURRENT (and so AWSPREVIOUS) where they are and end the rotation.
    await removeStage(deps.sm, secretId, AWSPENDING, token);
    await note(
      deps,
      secretId,
      TAG_LAST_ROTATION,
      `${token} ${deps.now().toISOString()} kept ${pending.keyName || 'no key'}`,
    );
    return 'kept current key';
  }
  const previous = (await readCurrent(deps, secretId)).secret;
  await deps.sm.send(
    new UpdateSecretVersionStageCommand({
      SecretId: secretId,
      VersionStage: AWSCURRENT,
      MoveToVersionId: token,
      RemoveFromVersionId: currentVersion,
    }),
  );
  // Leave no AWSPENDING at all: a valid end state on AWS, and the one moto's RotateSecret guard accepts.
  await removeStage(deps.sm, secretId, AWSPENDING, token);
  if (pending.origin === 'submitted') {
    const waiting = await readSubmission(deps.sm, secretId);
    if (waiting && waiting.submission.key === pending.key) {
      await removeStage(deps.sm, secretId, SUBMITTED, waiting.versionId);
      await note(deps, secretId, TAG_LAST_SUBMISSION, `${waiting.versionId} promoted ${pending.keyName}`);
    }
  }
  const replaces = pending.replaces;
  if (replaces && previous.keyName === replaces && previous.providerKeyId) {
    // `keys rotate --now`: the key it replaces may have leaked; it stops working as soon as the new one
    // is tested and in place.
    const provider = deps.providers(pending);
    if (provider.canRevoke) {
      await provider.revoke(previous.providerKeyId);
      deps.log.warn('revoked the replaced key', { secretId, keyName: replaces });
    }
  }
  await note(
    deps,
    secretId,
    TAG_LAST_ROTATION,
    `${token} ${deps.now().toISOString()} promoted ${pending.keyName}`,
  );
  return 'promoted';
}

/**
 * Ends a rotation that cannot succeed: removes AWSPENDING from its version, revokes a key the rotation
 * had created at the provider (it is neither current nor previous, and nobody will ever use it), and
 * sets a submitted key aside as rejected.
 */
export async function abandon(
  deps: RotationDeps,
  secretId: string,
  token: string,
  reason: string,
): Promise<void> {
  try {
    const meta = await describe(deps.sm, secretId);
    const stages = meta.VersionIdsToStages?.[token] ?? [];
    if (!stages.includes(AWSPENDING) || stages.includes(AWSCURRENT)) return;
    const pending = (await readPending(deps, secretId, token).catch(() => undefined))?.secret;
    await removeStage(deps.sm, secretId, AWSPENDING, token);
    if (!pending) return;
    if (pending.origin === 'submitted') {
      const waiting = await readSubmission(deps.sm, secretId);
      if (waiting && waiting.submission.key === pending.key) {
        await rejectSubmission(deps, secretId, waiting.versionId, `${pending.keyName}: ${reason}`);
      }
    }
    if (pending.origin === 'provider' && pending.providerKeyId) {
      const current = (await readCurrent(deps, secretId)).secret;
      const keep = [current.providerKeyId, current.previous?.providerKeyId];
      const provider = deps.providers(current);
      if (provider.canRevoke && !keep.includes(pending.providerKeyId)) {
        await provider.revoke(pending.providerKeyId);
        deps.log.info('revoked the key of the abandoned rotation', { secretId, keyName: pending.keyName });
      }
    }
  } catch (e) {
    deps.log.warn('could not clean up after a failed rotation', {
      secretId,
      versionId: token,
      error: describeCause(e),
    });
  }
}

/**
 * The Secrets Manager rotation protocol for one credential, after the aws-samples template
 * (SecretsManagerRotationTemplate/lambda_function.py): a DescribeSecret gate, then createSecret,
 * setSecret, testSecret, finishSecret. Every step is safe to repeat:
 *
 * - createSecret returns at once when the token's AWSPENDING value exists, and providers create keys
 *   idempotently by month name (never two remote keys for one month);
 * - setSecret and testSecret only push and probe the pending key;
 * - finishSecret moves AWSCURRENT with RemoveFromVersionId and is a no-op when already done.
 *
 * A failing step removes the AWSPENDING label from its (non-current) version before it rethrows: on AWS
 * a dangling AWSPENDING makes every later RotateSecret fail ("previous rotation still in progress"),
 * so the end state of a failure never blocks the next rotation. AWSCURRENT is only ever moved by
 * finishSecret's single UpdateSecretVersionStage call, so no failure can touch it.
 */
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { UpdateSecretVersionStageCommand } from '@aws-sdk/client-secrets-manager';
import { RotationStateError, RotationStepError } from './errors';
import type { KeyLog } from './log';
import { compareMonths, keyNameFor, monthOfKeyName, targetMonth } from './months';
import { nextSecret } from './next-key';
import type { IssuedKey, ProviderFactory } from './provider';
import type { CredentialSecret } from './secret';
import {
  AWSCURRENT,
  AWSPENDING,
  describe,
  putVersion,
  readStage,
  removeStage,
  SUBMITTED,
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
}

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
    await abandon(deps, secretId, token);
    const error = new RotationStepError(step, secretId, { cause });
    deps.log.error('rotation step failed', { step, secretId, versionId: token, error: error.message });
    throw error;
  }
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
  const current = (await readStage(deps.sm, secretId, AWSCURRENT)).secret;
  if (await tryReadStage(deps.sm, secretId, AWSPENDING, token)) return 'pending-exists';

  const next = await chooseNext(current, secretId, deps);
  await putVersion(deps.sm, secretId, token, [AWSPENDING], next.secret, event.RotationToken);
  return next.outcome;
}

async function chooseNext(
  current: CredentialSecret,
  secretId: string,
  deps: RotationDeps,
): Promise<{ secret: CredentialSecret; outcome: string }> {
  const prefix = current.policy.namePrefix;
  // A key a person submitted wins over the schedule (its month was chosen when it was submitted).
  const submitted = await tryReadStage(deps.sm, secretId, SUBMITTED);
  if (submitted && submitted.secret.keyName !== current.keyName && submitted.secret.key !== current.key) {
    return { secret: submitted.secret, outcome: `staged submitted key ${submitted.secret.keyName}` };
  }
  const month = targetMonth(deps.now(), current.policy);
  const name = keyNameFor(prefix, month);
  const currentMonth = monthOfKeyName(prefix, current.keyName);
  if (current.key.length > 0 && currentMonth && compareMonths(currentMonth, month) >= 0) {
    // The key in use already serves this month: rotate to an identical copy (names are never reused).
    return { secret: current, outcome: `current key ${current.keyName} already serves ${name}` };
  }
  const issued: IssuedKey = await deps.providers(current).create(name);
  return { secret: nextSecret(current, issued, deps.now()), outcome: `created ${name}` };
}

async function setSecret(event: RotationEvent, deps: RotationDeps): Promise<string> {
  const { SecretId: secretId, ClientRequestToken: token } = event;
  const current = (await readStage(deps.sm, secretId, AWSCURRENT)).secret;
  const pending = (await readStage(deps.sm, secretId, AWSPENDING, token)).secret;
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
  const pending = (await readStage(deps.sm, secretId, AWSPENDING, token)).secret;
  await deps.providers(pending).test(pending.key);
  return `tested ${pending.keyName}`;
}

async function finishSecret(event: RotationEvent, deps: RotationDeps): Promise<string> {
  const { SecretId: secretId, ClientRequestToken: token } = event;
  const meta = await describe(deps.sm, secretId);
  const currentVersion = versionWith(meta, AWSCURRENT);
  if (currentVersion === token) return 'already-current';
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
  // The submitted key (if this rotation took it) has been used; its label must not be taken again.
  const submittedVersion = versionWith(meta, SUBMITTED);
  if (submittedVersion) {
    const promoted = (await readStage(deps.sm, secretId, AWSCURRENT)).secret;
    const submitted = await tryReadStage(deps.sm, secretId, SUBMITTED);
    if (submitted && submitted.secret.keyName === promoted.keyName) {
      await removeStage(deps.sm, secretId, SUBMITTED, submittedVersion);
    }
  }
  return 'promoted';
}

async function abandon(deps: RotationDeps, secretId: string, token: string): Promise<void> {
  try {
    const meta = await describe(deps.sm, secretId);
    const stages = meta.VersionIdsToStages?.[token] ?? [];
    if (stages.includes(AWSPENDING) && !stages.includes(AWSCURRENT)) {
      await removeStage(deps.sm, secretId, AWSPENDING, token);
    }
  } catch (e) {
    deps.log.warn('could not remove AWSPENDING after a failed step', {
      secretId,
      versionId: token,
      error: e instanceof Error ? e.message : String(e),
    });
  }
}

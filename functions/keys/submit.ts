/**
 * Taking a key from a person (CommCare HQ, or the first key of any provider), starting a rotation,
 * and waiting for its verdict.
 *
 * The key is stored on a new version under our own label CCEXPORT_SUBMITTED, holding the key only;
 * then RotateSecret runs the normal four steps: createSecret checks the submission and copies it to
 * the rotation's AWSPENDING with the deployment's settings, testSecret checks it against the provider,
 * finishSecret promotes it. (Putting it straight on AWSPENDING would race RotateSecret, which registers
 * its own AWSPENDING placeholder for its token.) A refused submission moves to CCEXPORT_REJECTED and is
 * never taken again; the reason is recorded in a tag, which is what `submit` prints.
 */
import { randomUUID } from 'node:crypto';
import {
  GetSecretValueCommand,
  RotateSecretCommand,
  type SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { KeyUsageError } from './errors';
import { monthOfKeyName, replacementKeyName } from './months';
import { checkSubmission } from './rotation';
import { isPlaceholderText, parseCredentialSecret, type Submission } from './secret';
import {
  AWSCURRENT,
  AWSPENDING,
  clearStalePending,
  describe,
  putSubmission,
  setTag,
  TAG_LAST_ROTATION,
  TAG_LAST_SUBMISSION,
  TAG_ROTATE_NOW,
  tagValue,
} from './store';

/** A rotation younger than this is left alone (it may still be running). */
const RUNNING_ROTATION_MS = 5 * 60 * 1000;

export interface SubmitOptions {
  readonly key: string;
  /** Defaults to this month, or next month when the current key already serves this month. */
  readonly keyName?: string;
  /** CiviCRM: the id of the contact that holds the key. */
  readonly providerKeyId?: string;
  /** CiviCRM: the site key, when the contacts lack "authenticate with api key". */
  readonly siteKey?: string;
}

export interface WaitOptions {
  /** How long to wait for the verdict. @default 5 minutes */
  readonly timeoutMs?: number;
  /** @default 2 seconds */
  readonly pollMs?: number;
  readonly sleep?: (ms: number) => Promise<void>;
}

/** How a rotation ended, as far as the caller can see. */
export type RotationVerdict =
  | { readonly status: 'promoted'; readonly keyName: string }
  | { readonly status: 'kept'; readonly keyName: string }
  | { readonly status: 'rejected' | 'failed'; readonly reason: string }
  | { readonly status: 'running'; readonly reason?: string };

export async function submitKey(
  sm: SecretsManagerClient,
  secretId: string,
  options: SubmitOptions,
  now: Date,
  wait: WaitOptions = {},
): Promise<{ rotationVersion: string; verdict: RotationVerdict }> {
  const key = options.key.trim();
  if (key.length < 8 || /\s/.test(key)) {
    throw new KeyUsageError('the key read from input is not a single token of at least 8 characters');
  }
  const submission: Submission = {
    kind: 'submission',
    key,
    submittedAt: now.toISOString(),
    ...(options.keyName ? { keyName: options.keyName } : {}),
    ...(options.providerKeyId ? { providerKeyId: options.providerKeyId } : {}),
    ...(options.siteKey ? { siteKey: options.siteKey } : {}),
  };
  // Refuse what the rotation would refuse, before anything is stored (the rotation checks again).
  const currentText = (
    await sm.send(new GetSecretValueCommand({ SecretId: secretId, VersionStage: AWSCURRENT }))
  ).SecretString;
  if (!isPlaceholderText(currentText)) {
    const current = parseCredentialSecret(currentText, `secret ${secretId} (AWSCURRENT)`);
    const checked = checkSubmission(current, submission, now);
    if (typeof checked === 'string') throw new KeyUsageError(checked);
  }
  const submissionVersion = randomUUID();
  await putSubmission(sm, secretId, submissionVersion, submission);
  const rotationVersion = await startRotation(sm, secretId, now);
  const verdict = await waitForRotation(sm, secretId, rotationVersion, submissionVersion, wait);
  return { rotationVersion, verdict };
}

/** `ccexport keys rotate --now`: a fresh key now, even if the current one serves the month. */
export async function rotateNow(
  sm: SecretsManagerClient,
  secretId: string,
  now: Date,
  wait: WaitOptions = {},
): Promise<{ rotationVersion: string; verdict: RotationVerdict }> {
  const text = (await sm.send(new GetSecretValueCommand({ SecretId: secretId, VersionStage: AWSCURRENT })))
    .SecretString;
  if (isPlaceholderText(text)) {
    throw new KeyUsageError(
      'there is no key to replace yet: submit the first key with "ccexport keys submit"',
    );
  }
  const current = parseCredentialSecret(text, `secret ${secretId} (AWSCURRENT)`);
  if (current.provider === 'commcare') {
    const month = monthOfKeyName(current.policy.namePrefix, current.keyName);
    const name = month
      ? replacementKeyName(current.policy.namePrefix, current.keyName, month)
      : '<prefix>-YYYY-MM-b';
    throw new KeyUsageError(
      `CommCare HQ keys are created by a person: create "${name}" in HQ, run "ccexport keys submit <credential> --name ${name}", ` +
        `then deactivate "${current.keyName}" in HQ`,
    );
  }
  await setTag(sm, secretId, TAG_ROTATE_NOW, now.toISOString());
  const rotationVersion = await startRotation(sm, secretId, now);
  return { rotationVersion, verdict: await waitForRotation(sm, secretId, rotationVersion, undefined, wait) };
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

/**
 * Polls the secret until the rotation `token` has promoted its version, kept the current key, or
 * ended without it (then the recorded reason), or `timeoutMs` passes. A submission's own verdict
 * (promoted or rejected, with the reason) wins when there is one.
 */
export async function waitForRotation(
  sm: SecretsManagerClient,
  secretId: string,
  token: string,
  submissionVersion: string | undefined,
  options: WaitOptions = {},
): Promise<RotationVerdict> {
  const timeoutMs = options.timeoutMs ?? 5 * 60_000;
  const pollMs = options.pollMs ?? 2000;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let waited = 0;
  let retrying: string | undefined;
  for (;;) {
    const meta = await describe(sm, secretId);
    const submitted = tagValue(meta, TAG_LAST_SUBMISSION);
    if (submissionVersion && submitted?.startsWith(`${submissionVersion} `)) {
      const text = submitted.slice(submissionVersion.length + 1);
      if (text.startsWith('promoted '))
        return { status: 'promoted', keyName: text.slice('promoted '.length) };
      if (text.startsWith('rejected: '))
        return { status: 'rejected', reason: text.slice('rejected: '.length) };
    }
    const rotation = tagValue(meta, TAG_LAST_ROTATION);
    const ours = rotation?.startsWith(`${token} `)
      ? rotation.slice(token.length + 1).replace(/^\S+ /, '')
      : undefined;
    const stages = meta.VersionIdsToStages?.[token] ?? [];
    if (ours?.startsWith('promoted ') || stages.includes(AWSCURRENT)) {
      return { status: 'promoted', keyName: ours?.startsWith('promoted ') ? ours.slice(9) : '' };
    }
    if (ours?.startsWith('kept ')) return { status: 'kept', keyName: ours.slice(5) };
    if (ours && !stages.includes(AWSPENDING) && !ours.includes('failed, retrying')) {
      return { status: 'failed', reason: ours };
    }
    if (ours?.includes('failed, retrying')) retrying = ours;
    if (waited >= timeoutMs) return { status: 'running', ...(retrying ? { reason: retrying } : {}) };
    await sleep(pollMs);
    waited += pollMs;
  }
}

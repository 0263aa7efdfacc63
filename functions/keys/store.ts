/**
 * Secrets Manager reads and writes of the credential secret. Every read names its stage explicitly:
 * moto (and any client cache) can return a stale version when no stage is given.
 */
import {
  DescribeSecretCommand,
  type DescribeSecretCommandOutput,
  GetSecretValueCommand,
  ListSecretVersionIdsCommand,
  PutSecretValueCommand,
  type SecretsManagerClient,
  TagResourceCommand,
  UpdateSecretVersionStageCommand,
} from '@aws-sdk/client-secrets-manager';
import {
  type CredentialSecret,
  type CredentialSettings,
  parseCredentialSecret,
  parseSubmission,
  type Submission,
  serializeSecret,
} from './secret';

export const AWSCURRENT = 'AWSCURRENT';
export const AWSPENDING = 'AWSPENDING';
export const AWSPREVIOUS = 'AWSPREVIOUS';
/**
 * Our own staging label for a key a person submitted (CommCare HQ). It waits on its own version until
 * a rotation copies it to AWSPENDING, so RotateSecret can create its own AWSPENDING placeholder.
 */
export const SUBMITTED = 'CCEXPORT_SUBMITTED';
/** The last submission a rotation refused (failed test, stale name): never taken again. */
export const REJECTED = 'CCEXPORT_REJECTED';

/** Tags (not secret, no new version) that the export and maintenance code share. */
export const TAG_LAST_EXPORT_KEY = 'ccexport:last-export-key';
export const TAG_LAST_EXPORT_AT = 'ccexport:last-export-at';
export const TAG_RETIRED_KEY = 'ccexport:retired-key';
/** `<token> <ISO time> <what happened>`: how the last rotation step ended (read by the CLI). */
export const TAG_LAST_ROTATION = 'ccexport:last-rotation';
/** `<submission version> <what happened>`: promoted, or rejected with the reason. */
export const TAG_LAST_SUBMISSION = 'ccexport:last-submission';
/** ISO time of a `ccexport keys rotate --now` request not yet carried out. */
export const TAG_ROTATE_NOW = 'ccexport:rotate-now';

export interface StoredVersion {
  readonly versionId: string;
  readonly secret: CredentialSecret;
}

function isNotFound(e: unknown): boolean {
  return (e as { name?: string })?.name === 'ResourceNotFoundException';
}

export async function readStage(
  sm: SecretsManagerClient,
  secretId: string,
  stage: string,
  versionId?: string,
  settings?: CredentialSettings,
): Promise<StoredVersion> {
  const out = await sm.send(
    new GetSecretValueCommand({
      SecretId: secretId,
      VersionStage: stage,
      ...(versionId ? { VersionId: versionId } : {}),
    }),
  );
  const where = `secret ${secretId} (${stage}${versionId ? ` ${versionId}` : ''})`;
  return {
    versionId: out.VersionId ?? '',
    secret: parseCredentialSecret(out.SecretString, where, settings),
  };
}

/** The version holding `stage`, or undefined when no version holds it (or it has no value yet). */
export async function tryReadStage(
  sm: SecretsManagerClient,
  secretId: string,
  stage: string,
  versionId?: string,
  settings?: CredentialSettings,
): Promise<StoredVersion | undefined> {
  try {
    return await readStage(sm, secretId, stage, versionId, settings);
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

export async function describe(
  sm: SecretsManagerClient,
  secretId: string,
): Promise<DescribeSecretCommandOutput> {
  return await sm.send(new DescribeSecretCommand({ SecretId: secretId }));
}

export function versionWith(meta: DescribeSecretCommandOutput, stage: string): string | undefined {
  for (const [id, stages] of Object.entries(meta.VersionIdsToStages ?? {})) {
    if (stages.includes(stage)) return id;
  }
  return undefined;
}

export function tagValue(meta: DescribeSecretCommandOutput, key: string): string | undefined {
  return meta.Tags?.find((t) => t.Key === key)?.Value;
}

export async function putVersion(
  sm: SecretsManagerClient,
  secretId: string,
  token: string,
  stages: string[],
  secret: CredentialSecret,
  rotationToken?: string,
): Promise<void> {
  await sm.send(
    new PutSecretValueCommand({
      SecretId: secretId,
      ClientRequestToken: token,
      VersionStages: stages,
      SecretString: serializeSecret(secret),
      ...(rotationToken ? { RotationToken: rotationToken } : {}),
    }),
  );
}

export async function removeStage(
  sm: SecretsManagerClient,
  secretId: string,
  stage: string,
  versionId: string,
): Promise<void> {
  await sm.send(
    new UpdateSecretVersionStageCommand({
      SecretId: secretId,
      VersionStage: stage,
      RemoveFromVersionId: versionId,
    }),
  );
}

/** When a version was created (ListSecretVersionIds; DescribeSecret does not say). */
export async function versionCreated(
  sm: SecretsManagerClient,
  secretId: string,
  versionId: string,
): Promise<Date | undefined> {
  let token: string | undefined;
  do {
    const page = await sm.send(
      new ListSecretVersionIdsCommand({ SecretId: secretId, IncludeDeprecated: true, NextToken: token }),
    );
    const hit = page.Versions?.find((v) => v.VersionId === versionId);
    if (hit) return hit.CreatedDate;
    token = page.NextToken;
  } while (token);
  return undefined;
}

/**
 * Removes an AWSPENDING label left on a version other than AWSCURRENT by a failed rotation (on AWS it
 * makes every later RotateSecret fail with "previous rotation still in progress"). Leaves a pending
 * version younger than `minAgeMs` alone (that rotation may still be running) and reports it.
 */
export async function clearStalePending(
  sm: SecretsManagerClient,
  secretId: string,
  now: Date,
  minAgeMs: number,
): Promise<{ cleared?: string; running?: string }> {
  const meta = await describe(sm, secretId);
  const pending = versionWith(meta, AWSPENDING);
  if (!pending || pending === versionWith(meta, AWSCURRENT)) return {};
  const created = await versionCreated(sm, secretId, pending);
  if (created && now.getTime() - created.getTime() < minAgeMs) return { running: pending };
  await removeStage(sm, secretId, AWSPENDING, pending);
  return { cleared: pending };
}

/** The submission waiting under CCEXPORT_SUBMITTED (or REJECTED), or undefined. */
export async function readSubmission(
  sm: SecretsManagerClient,
  secretId: string,
  stage: string = SUBMITTED,
): Promise<{ versionId: string; submission: Submission } | undefined> {
  try {
    const out = await sm.send(new GetSecretValueCommand({ SecretId: secretId, VersionStage: stage }));
    return {
      versionId: out.VersionId ?? '',
      submission: parseSubmission(out.SecretString, `secret ${secretId} (${stage})`),
    };
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

export async function putSubmission(
  sm: SecretsManagerClient,
  secretId: string,
  versionId: string,
  submission: Submission,
): Promise<void> {
  await sm.send(
    new PutSecretValueCommand({
      SecretId: secretId,
      ClientRequestToken: versionId,
      VersionStages: [SUBMITTED],
      SecretString: JSON.stringify(submission),
    }),
  );
}

/**
 * Secrets Manager tag values allow letters, digits, spaces and `_ . : / = + - @`, at most 256
 * characters: anything else becomes a space.
 */
export function tagText(text: string): string {
  return text
    .replace(/[^\p{L}\p{Z}\p{N}_.:/=+\-@]/gu, ' ')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 256);
}

export async function setTag(
  sm: SecretsManagerClient,
  secretId: string,
  key: string,
  value: string,
): Promise<void> {
  await sm.send(new TagResourceCommand({ SecretId: secretId, Tags: [{ Key: key, Value: tagText(value) }] }));
}

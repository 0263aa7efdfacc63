/**
 * "Last successful export with key X", recorded as two tags on the credential secret. Tags are not
 * secret, create no secret version, and DescribeSecret returns them, so the export Lambda
 * (secretsmanager:TagResource) writes them and the maintenance run reads them.
 */
import { type SecretsManagerClient, TagResourceCommand } from '@aws-sdk/client-secrets-manager';
import { describe, TAG_LAST_EXPORT_AT, TAG_LAST_EXPORT_KEY, tagValue } from './store';

/** Call after an export run succeeded with the key named `keyName` (the `keyName` of the secret it read). */
export async function recordSuccessfulExport(
  sm: SecretsManagerClient,
  secretId: string,
  keyName: string,
  at: Date,
): Promise<void> {
  await sm.send(
    new TagResourceCommand({
      SecretId: secretId,
      Tags: [
        { Key: TAG_LAST_EXPORT_KEY, Value: keyName },
        { Key: TAG_LAST_EXPORT_AT, Value: at.toISOString() },
      ],
    }),
  );
}

export interface LastExport {
  readonly keyName: string;
  readonly at: Date;
}

export async function lastSuccessfulExport(
  sm: SecretsManagerClient,
  secretId: string,
): Promise<LastExport | undefined> {
  const meta = await describe(sm, secretId);
  const keyName = tagValue(meta, TAG_LAST_EXPORT_KEY);
  const at = tagValue(meta, TAG_LAST_EXPORT_AT);
  return keyName && at ? { keyName, at: new Date(at) } : undefined;
}

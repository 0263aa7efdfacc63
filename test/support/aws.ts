import { GlueClient } from '@aws-sdk/client-glue';
import { S3Client } from '@aws-sdk/client-s3';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';

/** Fake credentials for moto: never real, never a secret. */
const motoCredentials = { accessKeyId: 'testing', secretAccessKey: 'testing' };

export function motoS3(endpoint: string): S3Client {
  return new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: motoCredentials });
}

export function motoSecretsManager(endpoint: string): SecretsManagerClient {
  return new SecretsManagerClient({ endpoint, region: 'us-east-1', credentials: motoCredentials });
}

/** Where the bundled export function finds its credential and writes, as the CDK app sets them. */
export interface ExportFunctionTargets {
  readonly credentialSecretArn: string;
  readonly bucket: string;
  /** The folder of the synthesized function's code (`LAMBDA_TASK_ROOT`). */
  readonly codeRoot: string;
  /** moto's endpoint. */
  readonly endpoint: string;
}

/** The environment of the bundled export function pointed at moto, metrics and logs quiet. */
export function exportFunctionEnv(targets: ExportFunctionTargets): Record<string, string> {
  return {
    CREDENTIAL_SECRET_ARN: targets.credentialSecretArn,
    EXPORT_BUCKET: targets.bucket,
    LAMBDA_TASK_ROOT: targets.codeRoot,
    AWS_ENDPOINT_URL: targets.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: motoCredentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: motoCredentials.secretAccessKey,
    POWERTOOLS_LOG_LEVEL: 'SILENT',
    POWERTOOLS_METRICS_DISABLED: 'true',
    POWERTOOLS_METRICS_NAMESPACE: 'CommCareExports',
    POWERTOOLS_SERVICE_NAME: 'commcare-export',
  };
}

/**
 * A CommCare HQ credential secret's JSON as the rotation stores it (functions/keys/secret.ts), under the
 * key name `det-2026-11`.
 */
export function commcareSecretString(secret: {
  readonly baseUrl: string;
  readonly username: string;
  readonly key: string;
  readonly createdAt: string;
  readonly projects?: readonly string[];
}): string {
  return JSON.stringify({ provider: 'commcare', keyName: 'det-2026-11', ...secret });
}

export function motoGlue(endpoint: string): GlueClient {
  return new GlueClient({ endpoint, region: 'us-east-1', credentials: motoCredentials });
}

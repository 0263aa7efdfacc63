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

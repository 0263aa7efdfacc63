/**
 * Rotation Lambda for one credential secret. Two kinds of events:
 * - Secrets Manager rotation steps `{Step, SecretId, ClientRequestToken}` → rotateStep;
 * - the daily EventBridge Scheduler event `{"action":"maintain","secretId"}` → reminders and the end
 *   of the grace period.
 * Clients are built once per container; configuration is read and checked once.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import { KeyUsageError } from '../keys/errors';
import type { KeyLog } from '../keys/log';
import { runMaintenance } from '../keys/maintenance';
import type { Notifier } from '../keys/notify';
import { defaultProviderFactory } from '../keys/providers';
import { isRotationEvent, rotateStep } from '../keys/rotation';
import { parseCredentialSettings } from '../keys/secret';

const logger = new Logger({ serviceName: 'ccexport-rotate-key' });
const log: KeyLog = {
  info: (m, e) => logger.info(m, e ?? {}),
  warn: (m, e) => logger.warn(m, e ?? {}),
  error: (m, e) => logger.error(m, e ?? {}),
};
const sm = new SecretsManagerClient(
  process.env.SECRETS_MANAGER_ENDPOINT ? { endpoint: process.env.SECRETS_MANAGER_ENDPOINT } : {},
);
const topicArn = process.env.REMINDER_TOPIC_ARN;
const credentialName = process.env.CREDENTIAL_NAME;
// The credential's non-secret settings come from the deployment, never from the secret CloudFormation
// created (lib/credential.ts): checked once, at start, with the bad field named.
const settings = parseCredentialSettings(process.env.CREDENTIAL_SETTINGS, 'CREDENTIAL_SETTINGS');
const sns = new SNSClient({});
const notifier: Notifier = {
  async publish({ subject, body }) {
    if (!topicArn) throw new KeyUsageError('REMINDER_TOPIC_ARN is not set: reminders have nowhere to go');
    // SNS subjects: at most 100 ASCII characters.
    await sns.send(new PublishCommand({ TopicArn: topicArn, Subject: subject.slice(0, 100), Message: body }));
  },
};

export async function handler(event: unknown): Promise<unknown> {
  const now = () => new Date();
  if (isRotationEvent(event)) {
    await rotateStep(event, { sm, providers: defaultProviderFactory, now, log, settings });
    return undefined;
  }
  const e = event as { action?: unknown; secretId?: unknown } | null;
  if (e?.action === 'maintain' && typeof e.secretId === 'string') {
    return await runMaintenance(e.secretId, {
      sm,
      providers: defaultProviderFactory,
      notifier,
      now,
      log,
      settings,
      ...(credentialName ? { credentialName } : {}),
    });
  }
  throw new KeyUsageError(
    'unexpected event: expected a Secrets Manager rotation step {Step, SecretId, ClientRequestToken} ' +
      'or {"action":"maintain","secretId":...}',
  );
}

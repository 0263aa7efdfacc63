/**
 * Stand-in for `lib/credential.ts` (the rotating credential construct another part of the project
 * builds): one customer-managed KMS key and one Secrets Manager secret per credential, holding the
 * credential secret document of `functions/keys/secret.ts` with an empty key until the first key is
 * submitted. It has no rotation; the stack swaps this for the rotating construct when that exists.
 */
import { RemovalPolicy, SecretValue, Validations } from 'aws-cdk-lib';
import type * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';

export interface ApiKeySecretProps {
  /** Credential name from the config; part of the secret name. */
  readonly credentialName: string;
  /** Key provider. */
  readonly provider: 'commcare' | 'conduce' | 'civicrm';
  /** Base URL of the provider (https). */
  readonly baseUrl: string;
  /** User that owns the key. */
  readonly username: string;
  /** Projects the key must reach. */
  readonly projects: readonly string[];
  /** Rotation policy stored with the secret (read by the rotation function). */
  readonly policy: Readonly<Record<string, unknown>>;
  /**
   * Provider options stored with the secret (`allowListIps` for CommCare, `contactIds` for CiviCRM).
   * @default - no options
   */
  readonly options?: Readonly<Record<string, unknown>>;
}

export class ApiKeySecret extends Construct {
  /** The secret holding the current key (stage AWSCURRENT) and, during a switch, the next one. */
  public readonly secret: secretsmanager.Secret;
  /** The KMS key the secret is encrypted with. */
  public readonly encryptionKey: kms.Key;

  constructor(scope: Construct, id: string, props: ApiKeySecretProps) {
    super(scope, id);
    this.encryptionKey = new kms.Key(this, 'Key', {
      description: `Encrypts the ${props.credentialName} API key secret`,
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    // The initial document carries no key: the first key arrives through `ccexport` / the rotation flow.
    const initial = {
      provider: props.provider,
      baseUrl: props.baseUrl,
      username: props.username,
      key: '',
      keyName: '',
      createdAt: '1970-01-01T00:00:00.000Z',
      projects: props.projects,
      policy: props.policy,
      ...(props.options ? { options: props.options } : {}),
    };
    this.secret = new secretsmanager.Secret(this, 'Secret', {
      description: `${props.provider} API key for ${props.username} (${props.credentialName})`,
      encryptionKey: this.encryptionKey,
      secretStringValue: SecretValue.unsafePlainText(JSON.stringify(initial)),
      removalPolicy: RemovalPolicy.RETAIN,
    });
    Validations.of(this.secret).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason:
        'Rotation of API keys is provided by the rotating credential construct (lib/credential.ts), which replaces this stand-in.',
    });
  }

  /** Lets `grantee` read the current key. */
  public grantRead(grantee: iam.IGrantable): void {
    this.secret.grantRead(grantee);
  }
}

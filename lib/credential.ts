/**
 * One rotating API-key credential: a Secrets Manager secret (customer-managed KMS key) that
 * CloudFormation creates once with a constant placeholder and never writes again, the rotation Lambda
 * (with the credential's non-secret settings in its environment) inside the VPC when there is one (so
 * provider checks leave from the allow-listed NAT IPs), a monthly rotation schedule, a daily maintenance schedule (reminders, end of grace
 * period), and alarms on rotation failure, all reporting to an SNS topic.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Duration, RemovalPolicy, SecretValue, Stack, TimeZone } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventsTargets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as schedulerTargets from 'aws-cdk-lib/aws-scheduler-targets';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { credentialSecretName, isCredentialSecretArn } from '../functions/config/naming';
import { rotationCron } from '../functions/keys/months';
import { PLACEHOLDER_SECRET } from '../functions/keys/secret';
import { ServiceFunction } from './function-defaults';

export type KeyProviderName = 'commcare' | 'conduce' | 'civicrm';

export interface CredentialProps {
  /**
   * Name of the credential, as the CLI takes it (`ccexport keys status <credentialName>`).
   * Letters, digits, `-` and `_`. The secret is named `ccexport/credentials/<credentialName>`.
   */
  readonly credentialName: string;

  /** Who issues the key: `commcare` (assisted), `conduce` or `civicrm` (automatic). */
  readonly provider: KeyProviderName;

  /**
   * Base URL of the provider, e.g. `https://www.commcarehq.org`.
   */
  readonly baseUrl: string;

  /** User the key belongs to (HQ: the web user's e-mail). */
  readonly username: string;

  /**
   * Projects the key must reach; testSecret checks each one.
   *
   * @default - none; only the identity endpoint is checked
   */
  readonly projects?: string[];

  /**
   * Provider settings, passed to the rotation function (never written into the secret): CommCare
   * `{ allowListIps }`, CiviCRM `{ contactIds: { a, b } }`. A CiviCRM site key is a secret: give it with
   * `ccexport keys submit <credential> --key-id <id> --site-key`, never here.
   *
   * @default - CommCare: the allow-list IPs are empty; Conduce: none. CiviCRM requires `contactIds`.
   */
  readonly providerOptions?: Record<string, unknown>;

  /**
   * VPC for the rotation Lambda. Its egress subnets must leave through the NAT Elastic IPs that the
   * provider's allow-list names.
   *
   * @default - no VPC: the function calls the provider from Lambda's shared addresses, which no
   *   allow-list can name (network.mode none)
   */
  readonly vpc?: ec2.IVpc;

  /**
   * Subnets for the rotation Lambda (with `vpc` only).
   *
   * @default - the VPC's PRIVATE_WITH_EGRESS subnets
   */
  readonly vpcSubnets?: ec2.SubnetSelection;

  /** Topic for reminders (CommCare) and rotation-failure alarms. */
  readonly notificationTopic: sns.ITopic;

  /**
   * Role the rotation-failure rule publishes to `notificationTopic` with (`ExportMonitoring.eventsRole`).
   *
   * @default - the rule publishes as the EventBridge service principal, granted in the topic policy
   */
  readonly notificationEventsRole?: iam.IRole;

  /**
   * KMS key that encrypts the secret.
   *
   * @default - a new customer-managed key with yearly key rotation enabled
   */
  readonly encryptionKey?: kms.IKey;

  /**
   * Take over the secret a torn-down stack left (secrets are retained) instead of creating one: its
   * complete ARN (`...:secret:ccexport/credentials/<credentialName>-AbCdEf`) and the ARN of the KMS key
   * that encrypts it. The stack never writes its value, so the key it holds stays current; rotation,
   * reminders and grants apply to it as to a created secret. `encryptionKey` is ignored.
   *
   * @default - a new secret named `ccexport/credentials/<credentialName>`
   */
  readonly adoptSecret?: { readonly secretArn: string; readonly kmsKeyArn: string };

  /**
   * IANA time zone in which months start, the rotation day is counted and reminders are sent.
   *
   * @default 'UTC'
   */
  readonly timeZone?: string;

  /**
   * Rotate at least this many days before the month a key serves (1–28). The rotation runs on day
   * `29 - leadDays` of each month at about noon local time.
   *
   * @default 7
   */
  readonly leadDays?: number;

  /**
   * Days the previous key stays valid after a switch; it is revoked only once an export has also
   * succeeded with the new key.
   *
   * @default 7
   */
  readonly graceDays?: number;

  /**
   * CommCare only: first reminder this many days before the month starts (daily until a key arrives).
   *
   * @default 14
   */
  readonly reminderDays?: number;

  /**
   * Prefix of key names, `<prefix>-YYYY-MM`. Make it unique to this credential: keys are recorded by
   * id, but a person reading the provider's key list tells them apart by name.
   *
   * @default - the credential name
   */
  readonly keyNamePrefix?: string;

  /**
   * Local hour (0–23, in `timeZone`) of the daily maintenance run.
   *
   * @default 9
   */
  readonly maintenanceHour?: number;
}

const here = path.dirname(fileURLToPath(import.meta.url));

export class Credential extends Construct {
  /** The credential secret (JSON, see docs/keys): created, or adopted (`adoptSecret`). */
  public readonly secret: secretsmanager.ISecret;
  /** The KMS key that encrypts the secret. */
  public readonly encryptionKey: kms.IKey;
  /** The rotation and maintenance Lambda. */
  public readonly rotationFunction: NodejsFunction;
  /** The monthly rotation schedule. */
  public readonly rotationSchedule: secretsmanager.RotationSchedule;
  /** The daily maintenance schedule (reminders, end of grace period). */
  public readonly maintenanceSchedule: scheduler.Schedule;
  /** Alarm on any error of the rotation Lambda. */
  public readonly rotationErrorsAlarm: cloudwatch.Alarm;
  /** The key ARN of an adopted secret: CDK grants nothing on an imported secret's key by itself. */
  private readonly adoptedKeyArn?: string;

  constructor(scope: Construct, id: string, props: CredentialProps) {
    super(scope, id);
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(props.credentialName)) {
      throw new Error(
        `Credential: credentialName "${props.credentialName}" must be 1-64 letters, digits, "-" or "_"`,
      );
    }
    const policy = {
      namePrefix: props.keyNamePrefix ?? props.credentialName.slice(0, 41),
      timeZone: props.timeZone ?? 'UTC',
      leadDays: props.leadDays ?? 7,
      graceDays: props.graceDays ?? 7,
      reminderDays: props.reminderDays ?? 14,
    };
    if (policy.leadDays < 1 || policy.leadDays > 28) {
      throw new Error(`Credential: leadDays must be 1-28, got ${policy.leadDays}`);
    }

    const adopted = props.adoptSecret;
    if (adopted && !isCredentialSecretArn(adopted.secretArn, props.credentialName)) {
      throw new Error(
        `Credential: adoptSecret.secretArn ${JSON.stringify(adopted.secretArn)} is not the complete ARN of secret ${credentialSecretName(props.credentialName)}`,
      );
    }
    this.encryptionKey = adopted
      ? kms.Key.fromKeyArn(this, 'Key', adopted.kmsKeyArn)
      : (props.encryptionKey ??
        new kms.Key(this, 'Key', {
          enableKeyRotation: true,
          description: `ccexport credential ${props.credentialName}`,
          removalPolicy: RemovalPolicy.RETAIN,
        }));

    // CloudFormation writes SecretString on every update where the value in the template changes, and
    // a write makes a new AWSCURRENT. So the template holds one constant placeholder (no key, no
    // settings), the same for every config: no config change can overwrite the live key. The settings
    // reach the rotation function through its environment, and it copies them into every version it
    // writes; the first key arrives with `ccexport keys submit` (never in a template).
    const settings = {
      provider: props.provider,
      baseUrl: props.baseUrl,
      username: props.username,
      projects: props.projects ?? [],
      policy,
      options: providerSettings(props),
    };
    // An adopted secret is referenced, never written: CloudFormation has no resource for it at all.
    this.secret = adopted
      ? secretsmanager.Secret.fromSecretAttributes(this, 'Secret', {
          secretCompleteArn: adopted.secretArn,
          encryptionKey: this.encryptionKey,
        })
      : new secretsmanager.Secret(this, 'Secret', {
          secretName: credentialSecretName(props.credentialName),
          description: `ccexport API key (${props.credentialName}), rotated monthly`,
          encryptionKey: this.encryptionKey,
          secretStringValue: SecretValue.unsafePlainText(PLACEHOLDER_SECRET),
          removalPolicy: RemovalPolicy.RETAIN,
        });

    this.rotationFunction = new ServiceFunction(this, 'RotateKey', {
      entry: path.join(here, '..', 'functions', 'rotate-key', 'handler.ts'),
      handler: 'handler',
      timeout: Duration.minutes(2),
      memorySize: 256,
      ...(props.vpc
        ? {
            vpc: props.vpc,
            vpcSubnets: props.vpcSubnets ?? { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
          }
        : {}),
      environment: {
        REMINDER_TOPIC_ARN: props.notificationTopic.topicArn,
        CREDENTIAL_NAME: props.credentialName,
        CREDENTIAL_SETTINGS: Stack.of(this).toJsonString(settings),
        POWERTOOLS_SERVICE_NAME: 'ccexport-rotate-key',
      },
    });

    this.adoptedKeyArn = adopted?.kmsKeyArn;
    // Secrets Manager encrypts a new version with kms:GenerateDataKey and reads with kms:Decrypt.
    this.grantKeyUse(this.rotationFunction, 'kms:Decrypt', 'kms:GenerateDataKey');

    this.rotationSchedule = this.secret.addRotationSchedule('Monthly', {
      rotationLambda: this.rotationFunction,
      automaticallyAfter: Duration.days(30),
      rotateImmediatelyOnUpdate: false,
    });
    // The L2 has no cron option: override the L1 (aws.md §2.1). Offset taken in January; DST moves the run
    // by an hour on the same local day.
    (this.rotationSchedule.node.defaultChild as secretsmanager.CfnRotationSchedule).addPropertyOverride(
      'RotationRules',
      { ScheduleExpression: rotationCron(policy, new Date(Date.UTC(2026, 0, 15))), Duration: '4h' },
    );

    // Beyond what addRotationSchedule grants: version dates (stale AWSPENDING), the retired-key tag,
    // RotateSecret is not needed (the service starts rotations), and reminders.
    this.rotationFunction.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['secretsmanager:ListSecretVersionIds', 'secretsmanager:TagResource'],
        resources: [this.secret.secretArn],
      }),
    );
    props.notificationTopic.grantPublish(this.rotationFunction);

    this.maintenanceSchedule = new scheduler.Schedule(this, 'DailyMaintenance', {
      description: `ccexport ${props.credentialName}: key reminders and end of grace period`,
      schedule: scheduler.ScheduleExpression.cron({
        minute: '0',
        hour: String(props.maintenanceHour ?? 9),
        timeZone: TimeZone.of(policy.timeZone),
      }),
      target: new schedulerTargets.LambdaInvoke(this.rotationFunction, {
        input: scheduler.ScheduleTargetInput.fromObject({
          action: 'maintain',
          secretId: this.secret.secretArn,
        }),
        retryAttempts: 2,
        maxEventAge: Duration.hours(2),
      }),
    });

    this.rotationErrorsAlarm = new cloudwatch.Alarm(this, 'RotationErrors', {
      alarmDescription: `ccexport ${props.credentialName}: key rotation or maintenance failed`,
      metric: this.rotationFunction.metricErrors({ period: Duration.minutes(5), statistic: 'Sum' }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.rotationErrorsAlarm.addAlarmAction(new cwActions.SnsAction(props.notificationTopic));

    // Secrets Manager's own failure events (CloudTrail), one rule per stack: they name no credential
    // field we could filter on reliably, and one rule is enough to page.
    const stack = Stack.of(this);
    if (!stack.node.tryFindChild('CcexportRotationFailedRule')) {
      new events.Rule(stack, 'CcexportRotationFailedRule', {
        description: 'Secrets Manager rotation failed (any ccexport credential)',
        eventPattern: {
          source: ['aws.secretsmanager'],
          detailType: ['AWS Service Event via CloudTrail'],
          detail: { eventName: ['RotationFailed', 'RotationAbandoned', 'TestRotationFailed'] },
        },
        targets: [
          new eventsTargets.SnsTopic(
            props.notificationTopic,
            props.notificationEventsRole ? { role: props.notificationEventsRole } : {},
          ),
        ],
      });
    }
  }

  /** Lets `grantee` read the current key (GetSecretValue, DescribeSecret, kms:Decrypt). */
  public grantRead(grantee: iam.IGrantable): iam.Grant {
    this.grantKeyUse(grantee, 'kms:Decrypt');
    return this.secret.grantRead(grantee);
  }

  /**
   * An adopted secret's key: `actions` for `grantee`, through Secrets Manager only. (A created
   * secret's grants already cover its own key, in the key policy.)
   */
  private grantKeyUse(grantee: iam.IGrantable, ...actions: string[]): void {
    if (!this.adoptedKeyArn) return;
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions,
        resources: [this.adoptedKeyArn],
        conditions: {
          StringEquals: { 'kms:ViaService': `secretsmanager.${Stack.of(this).region}.amazonaws.com` },
        },
      }),
    );
  }

  /** Lets an export function record "last successful export with key X" (TagResource on this secret). */
  public grantRecordExport(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ['secretsmanager:TagResource'],
      resourceArns: [this.secret.secretArn],
    });
  }
}

/** The provider settings the rotation function needs; nothing secret (a site key arrives with a key). */
function providerSettings(props: CredentialProps): Record<string, unknown> {
  const options = props.providerOptions ?? {};
  switch (props.provider) {
    case 'commcare':
      return { allowListIps: (options.allowListIps as string[] | undefined) ?? [] };
    case 'civicrm':
      if (!options.contactIds) {
        throw new Error('Credential: a civicrm credential needs providerOptions.contactIds { a, b }');
      }
      return { contactIds: options.contactIds };
    case 'conduce':
      return {};
  }
}

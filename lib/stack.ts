/**
 * The whole deployment, driven by one exports config: network, bucket, optional database,
 * credentials, one pipeline per export, alarms and dashboard.
 */
import { fileURLToPath } from 'node:url';
import {
  Annotations,
  CfnOutput,
  CfnRule,
  Duration,
  Fn,
  Stack,
  type StackProps,
  Validations,
} from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';
import { exportJobs, reconcileJobs } from '../functions/config/job';
import { credentialSecretOutputKey, stateMachineOutputKey } from '../functions/config/naming';
import type { ExportsConfig } from '../functions/config/parse';
import { maxRunGapSeconds, monthlyRotationRules } from '../functions/config/schedule';
import { rotationDay } from '../functions/keys/months';
import { analyticsDatabaseName, ExportAnalytics, queryFileTables } from './analytics';
import { Credential } from './credential';
import { ExportBucket } from './export-bucket';
import { ExportDatabase } from './export-database';
import { ExportPipeline } from './export-pipeline';
import { ExportMonitoring } from './monitoring';
import { ExportNetwork } from './network';

const DEFAULT_HANDLER = fileURLToPath(new URL('../functions/export/handler.ts', import.meta.url));

export interface CommCareExportStackProps extends StackProps {
  /** The parsed exports config (`parseExportsConfig` / `loadExportsConfig`). */
  readonly config: ExportsConfig;
  /**
   * Entry file of the export function.
   * @default functions/export/handler.ts
   */
  readonly handlerEntry?: string;
  /**
   * Why this stack must not be deployed (e.g. it is the example config): CloudFormation then refuses
   * to create or update it, before touching any resource, with this text.
   * @default - deployable
   */
  readonly notDeployable?: string;
}

export class CommCareExportStack extends Stack {
  public readonly network: ExportNetwork;
  public readonly monitoring: ExportMonitoring;
  /** Present when an export writes to S3. */
  public readonly bucket?: ExportBucket;
  /** Present when the config has a database. */
  public readonly database?: ExportDatabase;
  public readonly credentials: ReadonlyMap<string, Credential>;
  public readonly pipelines: ReadonlyMap<string, ExportPipeline>;

  constructor(scope: Construct, id: string, props: CommCareExportStackProps) {
    super(scope, id, props);
    const { config } = props;
    const handlerEntry = props.handlerEntry ?? DEFAULT_HANDLER;
    if (props.notDeployable) {
      // A template rule is checked when a change set is created: deploy fails before any resource.
      new CfnRule(this, 'DeployableConfig', {
        assertions: [
          {
            assert: Fn.conditionEquals('not deployable', 'deployable'),
            assertDescription: props.notDeployable,
          },
        ],
      });
      Annotations.of(this).addWarningV2('ccexport:notDeployable', props.notDeployable);
    }

    const net = config.network;
    const eips = net.elasticIps;
    this.network = new ExportNetwork(this, 'Network', {
      mode: net.mode,
      natInstanceType: new ec2.InstanceType(net.natInstanceType),
      ...(eips
        ? 'create' in eips
          ? { elasticIpCount: eips.create }
          : { eipAllocationIds: eips.allocationIds }
        : {}),
      ...(net.mode === 'existing' && net.vpcId && net.subnetIds
        ? { existingVpc: { vpcId: net.vpcId, subnetIds: net.subnetIds, egressIps: net.egressIps ?? [] } }
        : {}),
    });

    this.monitoring = new ExportMonitoring(this, 'Monitoring', {
      alarmEmail: config.alarmEmail,
      dashboardName: `${config.stackName}-exports`,
    });

    if (config.exports.some((e) => e.output.type === 's3')) {
      this.bucket = new ExportBucket(this, 'Exports', { encryption: config.bucket.encryption });
      new CfnOutput(this, 'ExportsBucketName', { value: this.bucket.bucket.bucketName });
    }

    const db = config.database;
    if (db.type === 'create') {
      // parseExportsConfig refuses a created database without a VPC (network.mode none).
      if (!this.network.vpc)
        throw new Error('database.type "create" needs a VPC; network.mode "none" has none');
      this.database = new ExportDatabase(this, 'Database', {
        vpc: this.network.vpc,
        vpcSubnets: this.network.dataSubnets,
        rotationSubnets: this.network.appSubnets,
        create: {
          instanceType: new ec2.InstanceType(db.instanceType),
          allocatedStorageGb: db.allocatedStorageGb,
          databaseName: db.databaseName,
          backupRetentionDays: db.backupRetentionDays,
          deletionProtection: db.deletionProtection,
          multiAz: db.multiAz,
          rotationInterval: Duration.days(db.rotationDays),
          generatedIdentifier: db.generatedIdentifier,
        },
      });
    } else if (db.type === 'existing') {
      this.database = new ExportDatabase(this, 'Database', {
        existing: {
          secretArn: db.secretArn,
          securityGroupId: db.securityGroupId,
          port: db.port,
          ...(db.kmsKeyArn ? { kmsKeyArn: db.kmsKeyArn } : {}),
        },
      });
    }
    if (this.database) {
      new CfnOutput(this, 'DatabaseSecretArn', { value: this.database.secret.secretArn });
    }

    // One rotating credential per config entry (lib/credential.ts): KMS key, secret, rotation function
    // in the app subnets (so its test call to HQ leaves from the allow-listed addresses), reminders.
    const credentials = new Map<string, Credential>();
    for (const cred of config.credentials) {
      // HQ keys take an IP allow-list; the reminders name the deployment's egress addresses for it.
      const ipAllowList = cred.provider === 'commcare' && (cred.rotation.ipAllowList ?? true);
      const credential = new Credential(this, `Credential-${cred.name}`, {
        credentialName: cred.name,
        provider: cred.provider,
        baseUrl: cred.baseUrl,
        username: cred.username,
        projects: [...cred.projects],
        providerOptions:
          cred.provider === 'commcare'
            ? { allowListIps: ipAllowList ? this.network.egressIps : [] }
            : cred.provider === 'civicrm' && cred.civicrm
              ? { contactIds: cred.civicrm.contactIds, activeContact: 'a' }
              : undefined,
        ...(this.network.vpc ? { vpc: this.network.vpc, vpcSubnets: this.network.appSubnets } : {}),
        notificationTopic: this.monitoring.topic,
        notificationEventsRole: this.monitoring.eventsRole,
        timeZone: cred.rotation.timeZone,
        leadDays: cred.rotation.leadDays,
        graceDays: cred.rotation.graceDays,
        reminderDays: cred.rotation.reminderDays,
        keyNamePrefix: cred.rotation.namePrefix,
        ...(cred.adoptSecret ? { adoptSecret: cred.adoptSecret } : {}),
      });
      credentials.set(cred.name, credential);
      if (ipAllowList && this.network.mode === 'none') {
        Annotations.of(credential).addWarningV2(
          'ccexport:allowListWithoutFixedAddress',
          `Credential ${cred.name}: its HQ key expects an IP allow-list (rotation.ipAllowList), but network.mode "none" ` +
            'has no fixed egress address: Lambda calls HQ from shared addresses that change, so HQ refuses a key ' +
            'restricted to an allow-list. Create the key without an allow-list and set rotation.ipAllowList: false, ' +
            'or choose network.mode "nat-instance" or "nat" (docs/deploy.md).',
        );
      }
      // Secrets Manager accepts a rotation window only if it starts on the hour and ends by midnight
      // UTC; local noon in Asia/Kolkata is 06:30 UTC and in Pacific/Auckland 23:00 UTC the day before.
      // The window goes on the UTC date of the local rotation day, near local noon, where both days
      // overlap all year (functions/config/schedule.ts); anything Secrets Manager refuses fails synth.
      const rules = monthlyRotationRules(cred.rotation.timeZone, rotationDay(cred.rotation.leadDays));
      (
        credential.rotationSchedule.node.defaultChild as secretsmanager.CfnRotationSchedule
      ).addPropertyOverride('RotationRules', {
        ScheduleExpression: rules.scheduleExpression,
        Duration: rules.duration,
      });
      const rotateFnId = this.getLogicalId(
        credential.rotationFunction.node.defaultChild as lambda.CfnFunction,
      );
      Validations.of(credential).acknowledge(
        {
          id: 'AwsSolutions-IAM5[Resource::*]',
          reason:
            'secretsmanager:GetRandomPassword (added by addRotationSchedule) and X-Ray actions support no resource-level permissions.',
        },
        {
          id: 'AwsSolutions-IAM5[Action::kms:GenerateDataKey*]',
          reason:
            "kms:GenerateDataKey* on the credential's own KMS key only (the grant CDK makes for PutSecretValue).",
        },
      );
      // The maintenance schedule's role is created at stack level by aws-scheduler-targets.
      Validations.of(this).acknowledge({
        id: `AwsSolutions-IAM5[Resource::<${rotateFnId}.Arn>:*]`,
        reason:
          "The scheduler may invoke the credential's own rotation function, any version of it (CDK's LambdaInvoke grant).",
      });
      new CfnOutput(this, credentialSecretOutputKey(cred.name), {
        description: `Secret of credential ${cred.name} (submit keys to it with ccexport keys)`,
        value: credential.secret.secretArn,
      });
    }
    this.credentials = credentials;
    // The credential construct routes rotation failures itself (one rule per stack); without one,
    // the database password rotation still needs watching.
    if (!this.node.tryFindChild('CcexportRotationFailedRule')) this.monitoring.watchRotationFailures();

    const pipelines = new Map<string, ExportPipeline>();
    for (const exp of config.exports) {
      const credential = credentials.get(exp.credential) as Credential;
      const pipeline = new ExportPipeline(this, exp.name, {
        exportName: exp.name,
        jobs: exportJobs(config, exp.name),
        ...(exp.queryFilePath !== null ? { queryFilePath: exp.queryFilePath } : {}),
        handlerEntry,
        cron: exp.schedule.cron.replace(/^cron\((.*)\)$/, '$1'),
        timeZone: exp.schedule.timezone,
        concurrency: exp.concurrency,
        memorySize: exp.memoryMb,
        ...(this.network.vpc ? { vpc: this.network.vpc, vpcSubnets: this.network.appSubnets } : {}),
        grantCredentialRead: (grantee) => {
          credential.grantRead(grantee);
          // "Last successful export with key X" lets rotation revoke the previous key safely.
          credential.grantRecordExport(grantee);
        },
        credentialSecretArn: credential.secret.secretArn,
        ...(exp.output.type === 's3' && this.bucket
          ? { bucket: this.bucket, s3Prefix: exp.output.prefix }
          : {}),
        // A Parquet export defined in HQ: its Glue tables are made by each run (the config is HQ's).
        ...(exp.queryFilePath === null &&
        exp.output.type === 's3' &&
        exp.output.format === 'parquet' &&
        this.bucket
          ? { glueDatabase: analyticsDatabaseName(config.stackName, exp.name) }
          : {}),
        ...(exp.output.type === 'postgres' && this.database ? { database: this.database } : {}),
        scheduleDeadLetterQueue: this.monitoring.scheduleDeadLetterQueue,
        namePrefix: config.stackName,
        ...(exp.reconcile !== 'off'
          ? {
              reconcile: {
                cron: exp.reconcile.cron.replace(/^cron\((.*)\)$/, '$1'),
                timeZone: exp.reconcile.timezone,
                jobs: reconcileJobs(config, exp.name),
              },
            }
          : {}),
      });
      pipelines.set(exp.name, pipeline);
      // Parquet exports get a Glue catalog, latest-state views and an Athena workgroup (lib/analytics.ts).
      if (exp.output.type === 's3' && exp.output.format === 'parquet' && this.bucket) {
        new ExportAnalytics(this, `${exp.name}-Analytics`, {
          exportName: exp.name,
          namePrefix: config.stackName,
          bucket: this.bucket.bucket,
          ...(this.bucket.encryptionKey ? { bucketKey: this.bucket.encryptionKey } : {}),
          prefix: exp.output.prefix,
          // An export defined in HQ has no tables at synth: its config is downloaded by each run,
          // whose first slice creates or updates them (GLUE_DATABASE, functions/export/slice.ts).
          tables: exp.queryFilePath === null ? [] : queryFileTables(exp.queryFilePath),
          // Present once the config has a per-export deletion mode (issue 16); until then runs decide.
          deletionColumns: 'deletions' in exp && exp.deletions === 'mark',
        });
      }

      const gap = maxRunGapSeconds(exp.schedule.cron);
      const staleSeconds = gap === null ? null : gap * config.staleRunMultiple;
      if (staleSeconds !== null && staleSeconds <= 7 * 86_400) {
        this.monitoring.addExport(pipeline, Duration.seconds(Math.ceil(staleSeconds)));
      } else {
        this.monitoring.addExport(pipeline);
        Annotations.of(pipeline).addInfo(
          `Export ${exp.name} runs less often than every ${7 / config.staleRunMultiple} days: no "no successful run" alarm (CloudWatch alarms look back 7 days at most); the failed-run alarm still applies.`,
        );
      }
      new CfnOutput(this, stateMachineOutputKey(exp.name), {
        description: `State machine of export ${exp.name}`,
        value: pipeline.stateMachine.stateMachineArn,
      });
    }
    this.pipelines = pipelines;
  }
}

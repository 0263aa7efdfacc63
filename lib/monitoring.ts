/**
 * Alarms and the dashboard: everything that should wake someone up goes to one SNS topic with an
 * e-mail subscription.
 */
import { Aws, Duration, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventTargets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { ExportPipeline } from './export-pipeline';

export interface ExportMonitoringProps {
  /** Address that receives alarms (AWS e-mails it a confirmation link first). */
  readonly alarmEmail: string;
  /**
   * Name of the dashboard.
   * @default - a name CloudFormation generates
   */
  readonly dashboardName?: string;
}

/** The alarm topic, the schedules' dead-letter queue, rotation-failure alerts and the dashboard. */
export class ExportMonitoring extends Construct {
  /** Topic every alarm publishes to. */
  public readonly topic: sns.Topic;
  /**
   * The role EventBridge rules publish to `topic` with (pass it to `SnsTopic` targets): a role, not
   * the events service principal, so neither the topic policy nor the key policy names that principal
   * (which cannot be narrowed by source account on the key). Only this account's rules may assume it.
   */
  public readonly eventsRole: iam.Role;
  /** Where EventBridge Scheduler puts schedule invocations it could not deliver. */
  public readonly scheduleDeadLetterQueue: sqs.Queue;
  /** The dashboard; exports add their widgets through `addExport`. */
  public readonly dashboard: cloudwatch.Dashboard;
  private readonly action: cwActions.SnsAction;

  constructor(scope: Construct, id: string, props: ExportMonitoringProps) {
    super(scope, id);
    const key = new kms.Key(this, 'TopicKey', {
      description: 'Encrypts the export alarm topic',
      enableKeyRotation: true,
    });
    // CloudWatch alarms publish to the encrypted topic as the cloudwatch service principal, which needs
    // the key and the topic. Both grants hold for alarms of this account only (aws:SourceAccount), so
    // no other account's alarm can use them (the confused-deputy problem).
    const cloudwatchHere = new iam.ServicePrincipal('cloudwatch.amazonaws.com').withConditions({
      StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID },
    });
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsOfThisAccount',
        principals: [cloudwatchHere],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
      }),
    );
    this.topic = new sns.Topic(this, 'AlarmTopic', {
      displayName: 'CommCare exports',
      masterKey: key,
      enforceSSL: true,
    });
    this.topic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsOfThisAccount',
        principals: [cloudwatchHere],
        actions: ['sns:Publish'],
        resources: [this.topic.topicArn],
      }),
    );
    this.eventsRole = new iam.Role(this, 'EventsPublishRole', {
      description: 'EventBridge rules of this stack publish rotation failures to the alarm topic',
      assumedBy: new iam.ServicePrincipal('events.amazonaws.com').withConditions({
        StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID },
      }),
    });
    this.topic.grantPublish(this.eventsRole);
    Validations.of(this.eventsRole).acknowledge({
      id: 'AwsSolutions-IAM5[Action::kms:GenerateDataKey*]',
      reason:
        "kms:GenerateDataKey* on the alarm topic's own key only (the grant CDK makes for publishing to an encrypted topic).",
    });
    this.topic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    this.action = new cwActions.SnsAction(this.topic);

    this.scheduleDeadLetterQueue = new sqs.Queue(this, 'ScheduleDeadLetters', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    Validations.of(this.scheduleDeadLetterQueue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This queue is itself the dead-letter queue of the export schedules.',
    });
    const dlqAlarm = this.scheduleDeadLetterQueue
      .metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5), statistic: 'Maximum' })
      .createAlarm(this, 'ScheduleDeadLettersAlarm', {
        alarmDescription: 'A schedule could not start its export (see the ScheduleDeadLetters queue)',
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    dlqAlarm.addAlarmAction(this.action);

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: props.dashboardName,
      defaultInterval: Duration.days(14),
    });
  }

  /**
   * Sends Secrets Manager rotation failures (key or database password) to the topic. Call it unless
   * another construct already routes them (lib/credential.ts adds one such rule per stack).
   */
  public watchRotationFailures(): void {
    // Secrets Manager reports rotation problems as CloudTrail service events.
    new events.Rule(this, 'RotationFailed', {
      description: 'A key or database password rotation failed',
      eventPattern: {
        source: ['aws.secretsmanager'],
        detailType: ['AWS Service Event via CloudTrail'],
        detail: { eventName: ['RotationFailed', 'RotationAbandoned', 'TestRotationFailed'] },
      },
      targets: [new eventTargets.SnsTopic(this.topic, { role: this.eventsRole })],
    });
  }

  /**
   * Adds an export's alarms (failed run; no successful run within `staleAfter`) and its dashboard row.
   *
   * @param staleAfter how long without a finished run is too long; at most 7 days (the longest window
   *   a CloudWatch alarm can look back), or undefined for no staleness alarm
   */
  public addExport(pipeline: ExportPipeline, staleAfter?: Duration): void {
    const name = pipeline.exportName;
    pipeline
      .metricFailedRuns()
      .createAlarm(this, `${name}-RunFailed`, {
        alarmDescription: `Export ${name}: a run failed, timed out or was aborted`,
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      })
      .addAlarmAction(this.action);

    if (staleAfter) {
      const seconds = staleAfter.toSeconds();
      if (seconds > 7 * 86_400) throw new Error(`ExportMonitoring: staleAfter for ${name} exceeds 7 days`);
      // Short windows in 5-minute periods, long ones in hours (an alarm spans at most one day of
      // sub-hour periods).
      const period = seconds <= 86_400 ? 300 : 3_600;
      const periods = Math.max(1, Math.ceil(seconds / period));
      pipeline
        .metricRunRows({ statistic: 'SampleCount', period: Duration.seconds(period) })
        .createAlarm(this, `${name}-RunStale`, {
          alarmDescription: `Export ${name}: no run finished in the last ${Math.round(seconds / 3600)} hours`,
          threshold: 1,
          evaluationPeriods: periods,
          datapointsToAlarm: periods,
          comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
          // No data means no finished run.
          treatMissingData: cloudwatch.TreatMissingData.BREACHING,
        })
        .addAlarmAction(this.action);
    }

    // A reconcile that would remove or mark more than its share of a table changed nothing and failed:
    // usually a wrong key, project or filter rather than real deletions.
    pipeline
      .metricFunction('ReconcileGuardTripped', { statistic: 'Sum', period: Duration.minutes(5) })
      .createAlarm(this, `${name}-ReconcileGuard`, {
        alarmDescription: `Export ${name}: a reconcile would have removed or marked more than the allowed share of a table; nothing changed`,
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      })
      .addAlarmAction(this.action);

    const day = Duration.days(1);
    this.dashboard.addWidgets(
      new cloudwatch.TextWidget({ markdown: `## Export ${name}`, width: 24, height: 1 }),
      new cloudwatch.GraphWidget({
        title: `${name}: rows per run`,
        left: [pipeline.metricRunRows({ statistic: 'Sum', period: day, label: 'rows (finished runs)' })],
        right: [
          pipeline.metricFunction('Rows', { statistic: 'Sum', period: day, label: 'rows (all slices)' }),
        ],
        width: 6,
      }),
      new cloudwatch.GraphWidget({
        title: `${name}: slice duration`,
        left: [
          pipeline.function.metricDuration({ statistic: 'Maximum', period: Duration.hours(1) }),
          pipeline.function.metricDuration({ statistic: 'Average', period: Duration.hours(1) }),
        ],
        width: 6,
      }),
      new cloudwatch.GraphWidget({
        title: `${name}: failures`,
        left: [pipeline.metricFailedRuns(), pipeline.function.metricErrors({ period: Duration.minutes(5) })],
        width: 4,
      }),
      new cloudwatch.GraphWidget({
        title: `${name}: HQ throttling`,
        left: [pipeline.metricFunction('ThrottleWaitMs', { statistic: 'Sum', period: Duration.hours(1) })],
        right: [pipeline.metricFunction('Retries', { statistic: 'Sum', period: Duration.hours(1) })],
        width: 4,
      }),
      new cloudwatch.GraphWidget({
        title: `${name}: records removed or marked`,
        left: [
          pipeline.metricFunction('RecordsRemoved', {
            statistic: 'Sum',
            period: day,
            label: 'archived or deleted (runs and reconciles)',
          }),
        ],
        width: 6,
      }),
      new cloudwatch.SingleValueWidget({
        title: `${name}: key age (days)`,
        metrics: [pipeline.metricFunction('KeyAgeDays', { statistic: 'Maximum', period: day })],
        width: 4,
      }),
    );
  }
}

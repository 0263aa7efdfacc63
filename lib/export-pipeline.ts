/**
 * One export, end to end: its function (with its query file bundled in), the state machine that runs
 * the function in slices for each project, and the schedule that starts it.
 *
 * Each export gets its own function and role, so its permissions are exactly its own: it reads its own
 * credential secret and touches its own S3 prefix only. Functions cost nothing while idle.
 */
import { basename } from 'node:path';
import { Duration, RemovalPolicy, Size, Stack, TimeZone, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as schedulerTargets from 'aws-cdk-lib/aws-scheduler-targets';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import type { ExportJob, ExportSliceEvent } from '../functions/config/job';
import { stateMachineName } from '../functions/config/naming';
import type { ExportBucket } from './export-bucket';
import type { ExportDatabase } from './export-database';
import { ServiceFunction } from './function-defaults';

/** /tmp of the function of an S3 export with a reconcile schedule (see ExportPipeline). */
export const RECONCILE_EPHEMERAL_STORAGE = Size.gibibytes(4);

/** The Lambda Node.js runtime's CA bundle, which includes the Amazon RDS certificate authorities. */
export const RUNTIME_CA_CERTS = '/var/runtime/ca-cert.pem';

/** CloudWatch namespace of the export metrics (function and state machine). */
export const METRICS_NAMESPACE = 'CommCareExports';

/** Step Functions closes a Standard execution at 25,000 history events; hand over well before. */
const HISTORY_EVENT_BUDGET = 20_000;
/**
 * Events one loop iteration writes: the task (entered, scheduled, started, succeeded, exited), the
 * counter and the choice (2 each) is 9; the rest leaves room for about one retry per iteration.
 */
const EVENTS_PER_ITERATION = 12;

/** A Standard execution is stopped (TimedOut) after this long. */
const EXECUTION_TIMEOUT = Duration.days(7);
/** Time kept at the end of an execution for summarizing and starting the next one. */
const HANDOVER_MARGIN = Duration.hours(1);
/** The Lambda task's timeout: the function's own 15 minutes plus a minute for invoking it. */
const SLICE_TASK_TIMEOUT = Duration.minutes(16);

/** The slice task's retry of transient errors (Step Functions `Retry` fields). */
const TRANSIENT_RETRY = {
  interval: Duration.seconds(30),
  backoffRate: 3,
  maxAttempts: 4,
  maxDelay: Duration.minutes(15),
} as const;

/**
 * The longest one loop iteration can take: every attempt of the slice runs into the task timeout and
 * every retry waits its longest backoff.
 */
function worstIterationSeconds(): number {
  const attempts = TRANSIENT_RETRY.maxAttempts + 1;
  let waits = 0;
  for (let retry = 0; retry < TRANSIENT_RETRY.maxAttempts; retry++) {
    waits += Math.min(
      TRANSIENT_RETRY.interval.toSeconds() * TRANSIENT_RETRY.backoffRate ** retry,
      TRANSIENT_RETRY.maxDelay.toSeconds(),
    );
  }
  return attempts * SLICE_TASK_TIMEOUT.toSeconds() + waits;
}

/**
 * Loop iterations per project before an execution hands over to a new one. Two limits, the smaller
 * wins:
 * - history: each iteration writes about EVENTS_PER_ITERATION events per project, and an execution
 *   ends at 25,000;
 * - elapsed time: the Map runs `concurrency` projects at a time, so project k (in start order) starts
 *   at the latest after floor(k / concurrency) projects' worth of time; with every iteration at its
 *   worst (`worstIterationSeconds`), the last project still ends before the execution's timeout.
 *   Step Functions has no date arithmetic in JSONPath, so the time limit is enforced as this bound on
 *   iterations rather than by reading the clock; it holds for any slice durations.
 */
export function iterationsPerExecution(projects: number, concurrency: number): number {
  const byHistory = Math.floor(HISTORY_EVENT_BUDGET / (EVENTS_PER_ITERATION * projects));
  const budget = EXECUTION_TIMEOUT.toSeconds() - HANDOVER_MARGIN.toSeconds();
  const rounds = Math.ceil(projects / Math.max(1, Math.min(concurrency, projects)));
  const byTime = Math.floor(budget / (rounds * worstIterationSeconds()));
  return Math.max(1, Math.min(byHistory, byTime));
}

/**
 * Errors a retry cannot fix, by the names the export function's errors carry (the Lambda runtime
 * reports `error.name` as the error type). Every name here must be one the bundled function throws:
 * test/stepfunctions/bundled-function.test.ts checks that against the bundle CDK builds.
 */
export const PERMANENT_ERRORS = [
  // 401/403: retrying a refused key repeats the refusal and can lock the HQ account.
  'CommCareAuthError',
  // 400/404: a bad filter, an unknown project or resource.
  'CommCareRequestError',
  'CommCareConfigError',
  // HQ cannot build an HQ export's DET config ("Sorry, something went wrong creating that file"): the
  // export's definition causes it, and it stays until someone edits the export in HQ.
  'CommCareDetConfigError',
  // More records share one indexed_on value than a page holds: the same request would repeat.
  'CommCareStuckError',
  // HQ sent more than the run's budget of records or bytes (pages that never end): a retry would too.
  'CommCareBudgetError',
  'QueryFileError',
  'SecretShapeError',
  // A malformed event or continuation, and an output the function cannot write to (no bucket, a
  // table name the target refuses): the same input fails the same way however often it is retried.
  'ExportEventError',
  'SinkConfigError',
  // A reconcile that would remove too much of a table (a wrong key or filter, not real deletions).
  'ReconcileGuardError',
  // A value that cannot be read as its column's type (PostgreSQL, Parquet): the same record comes back
  // at every retry until someone corrects it in HQ or changes the query's Data Type or Map Via.
  'TypeConflictError',
  'DeclaredTypeError',
];

export interface ExportPipelineProps {
  /** The export's name (lower-case kebab); part of resource names and the metric dimension. */
  readonly exportName: string;
  /** One job per project, as the schedule sends them. At least one. */
  readonly jobs: readonly ExportJob[];
  /**
   * Absolute path of the DET query file; bundled with the function at `job.queryFile`. Absent for an
   * export defined in HQ (`query: { hqExport }`): each run downloads its config.
   */
  readonly queryFilePath?: string;
  /** Entry file of the export handler. */
  readonly handlerEntry: string;
  /** Scheduler cron expression, six fields (`0 2 * * ? *`). */
  readonly cron: string;
  /** IANA time zone of the cron expression. */
  readonly timeZone: string;
  /**
   * Projects exported at the same time (the Map state's maxConcurrency). HQ rate-limits per project
   * space, and enterprise accounts share one limit, so keep it small.
   * @default 2
   */
  readonly concurrency?: number;
  /**
   * Function memory in MiB. The export engine peaks at ~140–180 MB for csv (docs/deploy.md, "Export
   * function: memory and cost per record").
   * @default 512 - about 0.3 vCPU, enough to keep up with HQ's page latency
   */
  readonly memorySize?: number;
  /**
   * Network the function runs in (its egress IPs are on the HQ allow-list).
   * @default - no VPC: the function runs outside any VPC, with no security group and no fixed egress
   *   address (network.mode none)
   */
  readonly vpc?: ec2.IVpc;
  /**
   * Subnets with NAT egress (with `vpc` only).
   * @default - the VPC's PRIVATE_WITH_EGRESS subnets
   */
  readonly vpcSubnets?: ec2.SubnetSelection;
  /** Grants read of the export's credential secret (and its KMS key) to a principal. */
  readonly grantCredentialRead: (grantee: iam.IGrantable) => void;
  /** ARN of the credential secret, passed to the function. */
  readonly credentialSecretArn: string;
  /**
   * Bucket for S3 outputs (the function may use `s3Prefix` only).
   * @default - no bucket access
   */
  readonly bucket?: ExportBucket;
  /**
   * Glue database of a Parquet export defined in HQ (`query: { hqExport }`): its tables cannot be made
   * at synth (the config is downloaded by each run), so the function creates and updates them
   * (`GLUE_DATABASE`), with glue:GetTable, CreateTable and UpdateTable on this database's tables only.
   * @default - no Glue access (a query file's tables are the CDK app's, lib/analytics.ts)
   */
  readonly glueDatabase?: string;
  /**
   * Key prefix of this export in `bucket`. Required with `bucket`.
   * @default - no bucket access
   */
  readonly s3Prefix?: string;
  /**
   * Database for PostgreSQL outputs; the function may read its secret and reach its port.
   * @default - no database access
   */
  readonly database?: ExportDatabase;
  /** Queue for schedule invocations that could not be delivered. */
  readonly scheduleDeadLetterQueue: sqs.IQueue;
  /**
   * A second schedule that starts the same state machine with reconcile jobs (`ccexport reconcile`).
   * @default - no reconcile schedule
   */
  readonly reconcile?: {
    /** Scheduler cron expression, six fields. */
    readonly cron: string;
    readonly timeZone: string;
    /** One reconcile job per project. */
    readonly jobs: readonly ExportJob[];
  };
  /** Stack-unique prefix of named resources (the state machine name). */
  readonly namePrefix: string;
  /**
   * Safety margin before the function's timeout at which a slice stops and returns its continuation.
   * @default Duration.seconds(90)
   */
  readonly sliceSafetyMargin?: Duration;
}

/** The function, state machine and schedule of one export. */
export class ExportPipeline extends Construct {
  /** The export function (one slice per invocation). */
  public readonly function: ServiceFunction;
  /** The state machine that loops over slices and projects. */
  public readonly stateMachine: sfn.StateMachine;
  /** The schedule that starts the state machine. */
  public readonly schedule: scheduler.Schedule;
  /** The schedule that starts reconcile runs, when the export has one. */
  public readonly reconcileSchedule?: scheduler.Schedule;
  /**
   * Security group of the function (egress 443, and the database port when there is one); undefined
   * outside a VPC.
   */
  public readonly securityGroup: ec2.SecurityGroup | undefined;
  /** Loop iterations per project before an execution hands over to a fresh one. */
  public readonly iterationsPerExecution: number;
  /** The export's name. */
  public readonly exportName: string;

  constructor(scope: Construct, id: string, props: ExportPipelineProps) {
    super(scope, id);
    this.exportName = props.exportName;
    if (props.jobs.length === 0)
      throw new Error(`ExportPipeline ${props.exportName}: expected at least one job`);
    if (!!props.bucket !== !!props.s3Prefix) {
      throw new Error(`ExportPipeline ${props.exportName}: set both \`bucket\` and \`s3Prefix\`, or neither`);
    }
    const machineName = stateMachineName(props.namePrefix, props.exportName);
    if (machineName.length > 80) {
      throw new Error(`ExportPipeline: state machine name ${machineName} is longer than 80 characters`);
    }

    if (props.vpc) {
      this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
        vpc: props.vpc,
        description: `Export ${props.exportName}: HTTPS out only (CommCare HQ, AWS APIs)`,
        allowAllOutbound: false,
      });
      this.securityGroup.addEgressRule(
        ec2.Peer.anyIpv4(),
        ec2.Port.tcp(443),
        'HTTPS to CommCare HQ and AWS APIs',
      );
    }

    const queryFilePath = props.queryFilePath;
    const sliceTimeout = Duration.minutes(15);
    // The last slice of an S3 reconcile sorts every row id of the project's runs and the ids HQ listed
    // in /tmp (sort runs, ~60 bytes per line: 115 MB for 970,000 rows and as many ids, bench/REPORT.md);
    // Lambda's default 512 MB would stop it near 8 million lines, so S3 exports with a reconcile get
    // room for ~70 million. Ephemeral storage past 512 MB costs ~$0.0001 per 15-minute invocation.
    const reconcilesFiles = !!props.bucket && (props.reconcile?.jobs.length ?? 0) > 0;
    this.function = new ServiceFunction(this, 'Function', {
      entry: props.handlerEntry,
      description: `CommCare export ${props.exportName}: one slice of one project`,
      timeout: sliceTimeout,
      memorySize: props.memorySize ?? 512,
      ...(reconcilesFiles ? { ephemeralStorageSize: RECONCILE_EPHEMERAL_STORAGE } : {}),
      ...(props.vpc && this.securityGroup
        ? {
            vpc: props.vpc,
            vpcSubnets: props.vpcSubnets ?? { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
            securityGroups: [this.securityGroup],
          }
        : {}),
      // The state machine retries; an async retry on top would run a slice twice.
      retryAttempts: 0,
      environment: {
        EXPORT_NAME: props.exportName,
        CREDENTIAL_SECRET_ARN: props.credentialSecretArn,
        ...(props.bucket ? { EXPORT_BUCKET: props.bucket.bucket.bucketName } : {}),
        ...(props.glueDatabase ? { GLUE_DATABASE: props.glueDatabase } : {}),
        ...(props.database
          ? {
              DATABASE_SECRET_ARN: props.database.secret.secretArn,
              // The function connects with sslmode=verify-full. Node.js 20+ runtimes no longer trust
              // the Amazon RDS certificate authorities by default; this runtime file holds them.
              NODE_EXTRA_CA_CERTS: RUNTIME_CA_CERTS,
            }
          : {}),
        SLICE_SAFETY_MARGIN_MS: String((props.sliceSafetyMargin ?? Duration.seconds(90)).toMilliseconds()),
        POWERTOOLS_SERVICE_NAME: 'commcare-export',
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
      },
      bundling: {
        // The query file is deployed inside the function's code asset, so a changed file changes the
        // asset hash and redeploys the function.
        commandHooks: {
          beforeBundling: () => [],
          beforeInstall: () => [],
          afterBundling: (_inputDir: string, outputDir: string) =>
            queryFilePath === undefined
              ? []
              : [
                  `mkdir -p "${outputDir}/query"`,
                  `cp "${queryFilePath}" "${outputDir}/query/${basename(queryFilePath)}"`,
                ],
        },
      },
    });

    props.grantCredentialRead(this.function);
    if (props.bucket && props.s3Prefix) {
      props.bucket.grantExportAccess(this.function, props.s3Prefix);
      // Reconciles of an S3 output stage listed ids under the prefix; a failed one's staging expires.
      if (props.reconcile && props.reconcile.jobs.length > 0)
        props.bucket.expireReconcileStaging(props.s3Prefix);
    }
    if (props.glueDatabase) this.grantGlueTables(props.glueDatabase);
    if (props.database) {
      props.database.grantRead(this.function);
      // Outside a VPC the function has no security group: the database is reached over the internet.
      if (props.vpc) {
        props.database.allowFrom(this.function, `Export ${props.exportName} to its PostgreSQL output`);
      }
    }
    this.iterationsPerExecution = iterationsPerExecution(props.jobs.length, props.concurrency ?? 2);
    const slices: ExportSliceEvent[] = props.jobs.map((job) => ({ job, continuation: null }));

    this.stateMachine = this.buildStateMachine(props, machineName, slices);

    this.schedule = new scheduler.Schedule(this, 'Schedule', {
      description: `Starts export ${props.exportName}`,
      schedule: scheduler.ScheduleExpression.expression(`cron(${props.cron})`, TimeZone.of(props.timeZone)),
      target: new schedulerTargets.StepFunctionsStartExecution(this.stateMachine, {
        input: scheduler.ScheduleTargetInput.fromObject({ slices }),
        deadLetterQueue: props.scheduleDeadLetterQueue,
        retryAttempts: 3,
        maxEventAge: Duration.hours(1),
      }),
    });
    if (props.reconcile && props.reconcile.jobs.length > 0) {
      const reconcileSlices: ExportSliceEvent[] = props.reconcile.jobs.map((job) => ({
        job,
        continuation: null,
      }));
      this.reconcileSchedule = new scheduler.Schedule(this, 'ReconcileSchedule', {
        description: `Starts a reconcile of export ${props.exportName} (rows of records HQ no longer lists)`,
        schedule: scheduler.ScheduleExpression.expression(
          `cron(${props.reconcile.cron})`,
          TimeZone.of(props.reconcile.timeZone),
        ),
        target: new schedulerTargets.StepFunctionsStartExecution(this.stateMachine, {
          input: scheduler.ScheduleTargetInput.fromObject({ slices: reconcileSlices }),
          deadLetterQueue: props.scheduleDeadLetterQueue,
          retryAttempts: 3,
          maxEventAge: Duration.hours(1),
        }),
      });
    }
  }

  private buildStateMachine(
    props: ExportPipelineProps,
    machineName: string,
    slices: readonly ExportSliceEvent[],
  ): sfn.StateMachine {
    // --- Where the execution's slices come from ---------------------------------------------------
    const fromContinuation = new sfn.Pass(this, 'Resume run', {
      parameters: {
        'slices.$': '$.slices',
        'runId.$': '$.runId',
        'generation.$': '$.generation',
      },
    });
    const fromInput = new sfn.Pass(this, 'Start run from input', {
      parameters: { 'slices.$': '$.slices', 'runId.$': '$$.Execution.Name', generation: 0 },
    });
    // A Pass state's `parameters` drop null values when CDK renders them, which would lose each
    // slice's `continuation: null`; a `result` keeps them, and a second Pass adds the run id.
    const loadDeployment = new sfn.Pass(this, 'Load deployed jobs', {
      result: sfn.Result.fromObject({ slices }),
      resultPath: '$.deployed',
    });
    const fromDeployment = new sfn.Pass(this, 'Start run with deployed jobs', {
      parameters: { 'slices.$': '$.deployed.slices', 'runId.$': '$$.Execution.Name', generation: 0 },
    });
    loadDeployment.next(fromDeployment);

    // --- One project: loop over slices ------------------------------------------------------------
    const startProject = new sfn.Pass(this, 'Start project', {
      parameters: {
        'job.$': '$.item.job',
        'continuation.$': '$.item.continuation',
        'runId.$': '$.runId',
        done: false,
        rows: 0,
        iteration: 0,
      },
    });
    const resumeParameters = (hqConfigPath: string) => ({
      'job.$': '$.item.job',
      'continuation.$': '$.item.continuation',
      'runId.$': '$.runId',
      'done.$': '$.item.done',
      'rows.$': '$.item.rows',
      'hqConfig.$': hqConfigPath,
      iteration: 0,
    });
    const resumeProject = new sfn.Pass(this, 'Resume project', {
      parameters: resumeParameters('$.item.hqConfig'),
    });
    // A project handed over by an execution of an older definition carries no config record: it gets
    // a null one (a `result` keeps the null, where `parameters` would drop it).
    const noConfigRecord = new sfn.Pass(this, 'No config record', {
      result: sfn.Result.fromObject({ hqConfig: null }),
      resultPath: '$.defaults',
    });
    const resumeOlderProject = new sfn.Pass(this, 'Resume project without a config record', {
      parameters: resumeParameters('$.defaults.hqConfig'),
    });
    noConfigRecord.next(resumeOlderProject);

    const slice = new tasks.LambdaInvoke(this, 'Export slice', {
      lambdaFunction: this.function,
      payload: sfn.TaskInput.fromObject({
        'job.$': '$.job',
        'continuation.$': '$.continuation',
        'runId.$': '$.runId',
      }),
      resultSelector: {
        'done.$': '$.Payload.done',
        'continuation.$': '$.Payload.continuation',
        'rows.$': '$.Payload.rows',
        // The HQ export config the run pinned and what changed since the last run (null for a file):
        // kept in the project's result, so the execution's output is the run's record of it.
        'hqConfig.$': '$.Payload.hqConfig',
      },
      resultPath: '$.slice',
      taskTimeout: sfn.Timeout.duration(SLICE_TASK_TIMEOUT),
      retryOnServiceExceptions: true,
    });
    slice.addRetry({ errors: PERMANENT_ERRORS, maxAttempts: 0 });
    // Throttling past the function's own budget, HQ 5xx, timeouts: back off and try again. Each slice
    // resumes from the continuation it was given, so a retried slice does not duplicate rows.
    slice.addRetry({ errors: [sfn.Errors.ALL], ...TRANSIENT_RETRY, jitterStrategy: sfn.JitterType.FULL });

    const count = new sfn.Pass(this, 'Count slice', {
      parameters: {
        'job.$': '$.job',
        'runId.$': '$.runId',
        'continuation.$': '$.slice.continuation',
        'done.$': '$.slice.done',
        'rows.$': 'States.MathAdd($.rows, $.slice.rows)',
        'hqConfig.$': '$.slice.hqConfig',
        'iteration.$': 'States.MathAdd($.iteration, 1)',
      },
    });
    const projectResult = new sfn.Pass(this, 'Project result', {
      parameters: {
        'job.$': '$.job',
        'continuation.$': '$.continuation',
        'done.$': '$.done',
        'rows.$': '$.rows',
        'hqConfig.$': '$.hqConfig',
        metric: {
          MetricName: 'RunRows',
          Unit: 'Count',
          'Value.$': '$.rows',
          Dimensions: [{ Name: 'Export', Value: props.exportName }],
        },
      },
    });
    const more = new sfn.Choice(this, 'More slices?')
      .when(sfn.Condition.booleanEquals('$.done', true), projectResult)
      .when(sfn.Condition.numberGreaterThanEquals('$.iteration', this.iterationsPerExecution), projectResult)
      .otherwise(slice);
    slice.next(count).next(more);
    startProject.next(more);
    resumeProject.next(more);
    resumeOlderProject.next(more);
    const projectEntry = new sfn.Choice(this, 'Resumed project?')
      .when(
        sfn.Condition.and(sfn.Condition.isPresent('$.item.done'), sfn.Condition.isPresent('$.item.hqConfig')),
        resumeProject,
      )
      .when(sfn.Condition.isPresent('$.item.done'), noConfigRecord)
      .otherwise(startProject);

    const projects = new sfn.Map(this, 'Export projects', {
      itemsPath: '$.slices',
      itemSelector: { 'item.$': '$$.Map.Item.Value', 'runId.$': '$.runId' },
      maxConcurrency: props.concurrency ?? 2,
      resultPath: '$.results',
    });
    projects.itemProcessor(projectEntry);

    // --- After all projects: finish, or hand over to a fresh execution ------------------------------
    const summarize = new sfn.Pass(this, 'Summarize', {
      parameters: {
        // A filter path always yields a list (empty when every project is done).
        'pending.$': '$.results[?(@.done == false)]',
        'slices.$': '$.results',
        'metrics.$': '$.results[*].metric',
        'runId.$': '$.runId',
        'nextGeneration.$': 'States.MathAdd($.generation, 1)',
      },
    });
    // Continue-as-new: the 25,000-event history limit and the 7-day timeout end a Standard execution,
    // so a long run continues in a new execution of this same state machine. Its name comes from the
    // run, so a retried start cannot start a second execution: Step Functions answers
    // ExecutionAlreadyExists for a closed execution of that name (the handover happened) and succeeds
    // again for a running one. The run id is hashed because an execution name holds at most 80
    // characters and the first execution's own name may already use them all.
    const self = sfn.StateMachine.fromStateMachineName(this, 'Self', machineName);
    const handedOver = new sfn.Succeed(this, 'Handed over', {
      comment: 'The run continues in a new execution',
    });
    const continueAsNew = new tasks.StepFunctionsStartExecution(this, 'Continue in new execution', {
      stateMachine: self,
      name: sfn.JsonPath.format(
        '{}-g{}',
        sfn.JsonPath.hash(sfn.JsonPath.stringAt('$.runId'), 'MD5'),
        sfn.JsonPath.stringAt('$.nextGeneration'),
      ),
      input: sfn.TaskInput.fromObject({
        'slices.$': '$.slices',
        'runId.$': '$.runId',
        'generation.$': '$.nextGeneration',
      }),
      associateWithParent: true,
      resultPath: sfn.JsonPath.DISCARD,
    });
    continueAsNew.addCatch(handedOver, {
      errors: ['StepFunctions.ExecutionAlreadyExistsException'],
      resultPath: sfn.JsonPath.DISCARD,
    });
    continueAsNew.addRetry({
      errors: [sfn.Errors.ALL],
      interval: Duration.seconds(5),
      backoffRate: 2,
      maxAttempts: 6,
      jitterStrategy: sfn.JitterType.FULL,
    });
    // Recording the run is a metric (the "no successful run" alarm reads it); throttling or a brief
    // CloudWatch outage must not fail a run whose rows are written. A retried PutMetricData may count
    // a run twice, which the alarm (any sample in the window) does not mind.
    const recordRun = new sfn.CustomState(this, 'Record run', {
      stateJson: {
        Type: 'Task',
        Resource: `arn:${Stack.of(this).partition}:states:::aws-sdk:cloudwatch:putMetricData`,
        Parameters: { Namespace: METRICS_NAMESPACE, 'MetricData.$': '$.metrics' },
        ResultPath: null,
      },
    });
    recordRun.addRetry({
      errors: [sfn.Errors.ALL],
      interval: Duration.seconds(5),
      backoffRate: 2,
      maxAttempts: 6,
      jitterStrategy: sfn.JitterType.FULL,
    });
    const finish = summarize.next(
      new sfn.Choice(this, 'All projects done?')
        .when(sfn.Condition.isPresent('$.pending[0]'), continueAsNew.next(handedOver))
        .otherwise(recordRun.next(new sfn.Succeed(this, 'Run finished'))),
    );
    projects.next(finish);

    fromContinuation.next(projects);
    fromInput.next(projects);
    fromDeployment.next(projects);
    const start = new sfn.Choice(this, 'Continuation?')
      .when(sfn.Condition.isPresent('$.runId'), fromContinuation)
      .when(sfn.Condition.isPresent('$.slices'), fromInput)
      .otherwise(loadDeployment);

    const logGroup = new logs.LogGroup(this, 'StateMachineLogs', {
      retention: logs.RetentionDays.THREE_MONTHS,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const machine = new sfn.StateMachine(this, 'StateMachine', {
      stateMachineName: machineName,
      comment: `Runs export ${props.exportName} in slices, per project`,
      definitionBody: sfn.DefinitionBody.fromChainable(start),
      // One execution covers at most iterationsPerExecution slices per project; the run continues in
      // a new execution after that.
      timeout: EXECUTION_TIMEOUT,
      tracingEnabled: true,
      logs: { destination: logGroup, level: sfn.LogLevel.ALL, includeExecutionData: false },
    });
    // PutMetricData takes no resource ARN; the namespace condition keeps the role to our own metrics.
    machine.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['cloudwatch:PutMetricData'],
        resources: ['*'],
        conditions: { StringEquals: { 'cloudwatch:namespace': METRICS_NAMESPACE } },
      }),
    );
    const fnLogicalId = Stack.of(this).getLogicalId(this.function.node.defaultChild as lambda.CfnFunction);
    Validations.of(machine).acknowledge(
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason:
          'cloudwatch:PutMetricData (Record run), X-Ray tracing and log delivery actions support no resource-level permissions.',
      },
      {
        id: `AwsSolutions-IAM5[Resource::<${fnLogicalId}.Arn>:*]`,
        reason:
          "Invoking the export's own function, any version or alias of it (the grant CDK's LambdaInvoke makes).",
      },
    );
    return machine;
  }

  /** Executions that failed, timed out or were aborted. */
  public metricFailedRuns(): cloudwatch.MathExpression {
    return new cloudwatch.MathExpression({
      expression: 'failed + timedOut + aborted',
      usingMetrics: {
        failed: this.stateMachine.metricFailed({ statistic: 'Sum' }),
        timedOut: this.stateMachine.metricTimedOut({ statistic: 'Sum' }),
        aborted: this.stateMachine.metricAborted({ statistic: 'Sum' }),
      },
      period: Duration.minutes(5),
      label: 'failed runs',
    });
  }

  /** Rows written per finished run (sum of the run's projects), from the state machine. */
  public metricRunRows(props: cloudwatch.MetricOptions = {}): cloudwatch.Metric {
    return new cloudwatch.Metric({
      namespace: METRICS_NAMESPACE,
      metricName: 'RunRows',
      dimensionsMap: { Export: this.exportName },
      ...props,
    });
  }

  /** A metric the export function emits (Powertools EMF, dimensions `service` and `Export`). */
  public metricFunction(metricName: string, props: cloudwatch.MetricOptions = {}): cloudwatch.Metric {
    return new cloudwatch.Metric({
      namespace: METRICS_NAMESPACE,
      metricName,
      dimensionsMap: { service: 'commcare-export', Export: this.exportName },
      ...props,
    });
  }

  /**
   * Lets the function create and update the tables of its own Glue database, nothing else: read one
   * (to compare), create one, update one. Glue checks the catalog and the database ARNs too.
   */
  private grantGlueTables(database: string): void {
    const stack = Stack.of(this);
    const tables = stack.formatArn({ service: 'glue', resource: 'table', resourceName: `${database}/*` });
    this.function.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['glue:GetTable', 'glue:CreateTable', 'glue:UpdateTable'],
        resources: [
          stack.formatArn({ service: 'glue', resource: 'catalog' }),
          stack.formatArn({ service: 'glue', resource: 'database', resourceName: database }),
          tables,
        ],
      }),
    );
    Validations.of(this.function.role ?? this.function).acknowledge({
      id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:glue:<AWS::Region>:<AWS::AccountId>:table/${database}/*]`,
      reason: `The export defined in HQ creates and updates the tables of its own Glue database ${database} at run time; their names come from the config HQ serves.`,
    });
  }
}

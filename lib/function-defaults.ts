/**
 * The one place for Lambda defaults (runtime, architecture, bundling, logs), so every function of the
 * app is built the same way.
 */
import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, type NodejsFunctionProps, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';

export interface ServiceFunctionProps
  extends Omit<NodejsFunctionProps, 'runtime' | 'architecture' | 'logGroup'> {
  /** TypeScript entry file. */
  readonly entry: string;
  /**
   * How long the function's logs are kept.
   * @default - one month
   */
  readonly logRetention?: logs.RetentionDays;
}

/**
 * How every function is bundled (esbuild, through NodejsFunction). Exported so the tests bundle the
 * export function exactly as a deployment does and run that bundle.
 */
export const SERVICE_BUNDLING = {
  minify: true,
  // Minifying renames classes; the state machine's retriers match errors by name (the Lambda runtime
  // reports `error.name` as the error type), so names must survive. Error classes also set their names
  // literally; this keeps every other class name (and `new.target.name`) intact too.
  keepNames: true,
  sourceMap: true,
  // Stack traces need names and lines, not the sources: keeps the asset a few MB smaller.
  sourcesContent: false,
  target: 'node24',
  format: OutputFormat.CJS,
  // The AWS SDK is bundled, not left to the copy the Lambda runtime carries: that copy is older than
  // the one the tests run (and is updated by AWS under a deployed function), and whether it holds
  // @aws-sdk/lib-storage is not documented. Lambda's best practices recommend packaging every
  // dependency for that reason; the cost is a larger asset. pg has optional native bindings it never
  // needs on Lambda.
  externalModules: ['pg-native'],
} as const satisfies NonNullable<NodejsFunctionProps['bundling']>;

/** The Lambda runtime of every function. */
export const SERVICE_RUNTIME = lambda.Runtime.NODEJS_24_X;

/**
 * A NodejsFunction on Node.js 24 / arm64, bundled locally by esbuild (no Docker), with JSON logs, source
 * maps and its own log group.
 *
 * Node 24 rather than NODEJS_LATEST: the bundle targets one known Node.js version. Node 22 is
 * deprecated on 2027-04-30.
 */
export class ServiceFunction extends NodejsFunction {
  constructor(scope: Construct, id: string, props: ServiceFunctionProps) {
    const logGroup = new logs.LogGroup(scope, `${id}Logs`, {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    super(scope, id, {
      timeout: Duration.minutes(1),
      memorySize: 512,
      ...props,
      runtime: SERVICE_RUNTIME,
      architecture: lambda.Architecture.ARM_64,
      loggingFormat: lambda.LoggingFormat.JSON,
      logGroup,
      bundling: {
        ...SERVICE_BUNDLING,
        externalModules: [...SERVICE_BUNDLING.externalModules],
        ...props.bundling,
      },
      environment: {
        NODE_OPTIONS: '--enable-source-maps',
        ...props.environment,
      },
    });
    const managed = 'Policy::arn:<AWS::Partition>:iam::aws:policy/service-role';
    Validations.of(this).acknowledge(
      {
        id: 'AwsSolutions-L1',
        reason:
          'Pinned to nodejs24.x on purpose: NODEJS_LATEST makes NodejsFunction bundle the whole AWS SDK; 24.x is in standard support.',
      },
      {
        id: `AwsSolutions-IAM4[${managed}/AWSLambdaBasicExecutionRole]`,
        reason: 'The AWS managed minimum for writing the function logs (CreateLogStream/PutLogEvents).',
      },
    );
    if (props.vpc) {
      Validations.of(this).acknowledge({
        id: `AwsSolutions-IAM4[${managed}/AWSLambdaVPCAccessExecutionRole]`,
        reason:
          'The AWS managed minimum for a function in a VPC (network interface actions, which take no resource ARNs).',
      });
    }
  }
}

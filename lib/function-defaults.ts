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
 * A NodejsFunction on Node.js 22 / arm64, bundled locally by esbuild (no Docker), with JSON logs, source
 * maps and its own log group.
 *
 * Node 22 rather than NODEJS_LATEST: with a "latest" runtime NodejsFunction cannot know which AWS SDK
 * the runtime carries and bundles the whole SDK (hundreds of KB per function).
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
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.ARM_64,
      loggingFormat: lambda.LoggingFormat.JSON,
      logGroup,
      bundling: {
        minify: true,
        sourceMap: true,
        // Stack traces need names and lines, not the sources: keeps the asset a few MB smaller.
        sourcesContent: false,
        target: 'node22',
        format: OutputFormat.CJS,
        // pg has optional native bindings it never needs on Lambda.
        externalModules: ['@aws-sdk/*', 'pg-native'],
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
          'Pinned to nodejs22.x on purpose: NODEJS_LATEST makes NodejsFunction bundle the whole AWS SDK; 22.x is in standard support.',
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

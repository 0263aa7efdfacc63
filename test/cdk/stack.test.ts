import { readFileSync } from 'node:fs';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { cfnLintErrors } from '../support/cfn-lint';
import { buildStack, repoRoot } from './app';
import { actionsOf, roleStatements, stateMachineDefinition } from './template';

// One synth for the whole file (bundling and cdk-nag make each synth take seconds).
let template: Template;
let synthError: unknown;

beforeAll(() => {
  const { stack } = buildStack(readFileSync(`${repoRoot}/exports.config.example.yaml`, 'utf8'));
  try {
    template = Template.fromStack(stack);
  } catch (error) {
    synthError = error;
  }
});

describe('the stack built from the example config', () => {
  it('reports no unacknowledged cdk-nag AwsSolutions finding', () => {
    expect(synthError).toBeUndefined();
  });

  // The example has a Parquet export (Glue tables, views, a workgroup): cfn-lint checks those too, and
  // takes over a minute on a busy machine.
  it('passes cfn-lint without an error', { timeout: 240_000 }, async () => {
    expect(await cfnLintErrors(template)).toEqual([]);
  });

  it('builds the Athena catalog of the Parquet export from its query file', () => {
    template.resourceCountIs('AWS::Glue::Database', 1);
    template.resourceCountIs('AWS::Athena::WorkGroup', 1);
    template.hasResourceProperties('AWS::Glue::Table', {
      TableInput: Match.objectLike({ Name: 'households_latest', TableType: 'VIRTUAL_VIEW' }),
    });
  });

  it('lets an export function read only its own credential secret', () => {
    const statements = roleStatements(template, 'formsdailyFunctionServiceRole');
    const secretStatements = statements.filter((s) =>
      actionsOf(s).some((a) => a.startsWith('secretsmanager:')),
    );

    expect(secretStatements.length).toBeGreaterThan(0);
    for (const s of secretStatements) {
      expect(s.Resource).toEqual({ Ref: expect.stringMatching(/^Credentialhqmain.*Secret/) });
      // Read the key; tag the secret with "last successful export" (lets rotation revoke the old key).
      expect(
        actionsOf(s).every((a) =>
          [
            'secretsmanager:GetSecretValue',
            'secretsmanager:DescribeSecret',
            'secretsmanager:TagResource',
          ].includes(a),
        ),
      ).toBe(true);
    }
  });

  it('lets an export function touch only its own S3 prefix', () => {
    const s3Statements = roleStatements(template, 'formsdailyFunctionServiceRole').filter((s) =>
      actionsOf(s).some((a) => a.startsWith('s3:')),
    );

    const resources = JSON.stringify(s3Statements.map((s) => s.Resource));
    expect(resources).toContain('/forms/*');
    expect(resources).not.toContain('/cases/');
    expect(resources).not.toMatch(/"\/\*"/);
    const list = s3Statements.find((s) => actionsOf(s).includes('s3:ListBucket'));
    expect(list?.Condition).toEqual({ StringLike: { 's3:prefix': ['forms/*'] } });
    expect(s3Statements.flatMap(actionsOf)).not.toContain('s3:*');
  });

  it('starts each export on its cron in its time zone, with retries and a dead-letter queue', () => {
    template.hasResourceProperties('AWS::Scheduler::Schedule', {
      ScheduleExpression: 'cron(0 2 * * ? *)',
      ScheduleExpressionTimezone: 'Africa/Nairobi',
      Target: Match.objectLike({
        Arn: { Ref: Match.stringLikeRegexp('^formsdailyStateMachine') },
        DeadLetterConfig: { Arn: { 'Fn::GetAtt': [Match.stringLikeRegexp('ScheduleDeadLetters'), 'Arn'] } },
        RetryPolicy: Match.objectLike({ MaximumRetryAttempts: 3 }),
        Input: Match.stringLikeRegexp('"project":"demo-project-2"'),
      }),
    });
    template.hasResourceProperties('AWS::Scheduler::Schedule', {
      ScheduleExpression: 'cron(30 3 ? * MON *)',
      ScheduleExpressionTimezone: 'Africa/Nairobi',
    });
  });

  it('egresses through a NAT gateway on the Elastic IP it creates and outputs the address', () => {
    template.resourceCountIs('AWS::EC2::NatGateway', 1);
    template.hasResourceProperties('AWS::EC2::NatGateway', {
      AllocationId: { 'Fn::GetAtt': [Match.stringLikeRegexp('NatEip1'), 'AllocationId'] },
    });
    template.hasResource('AWS::EC2::EIP', { DeletionPolicy: 'Retain' });
    template.hasOutput('EgressIps', {
      Value: { 'Fn::GetAtt': [Match.stringLikeRegexp('NatEip1'), 'PublicIp'] },
    });
  });

  it('runs the functions in private subnets with an S3 gateway and a Secrets Manager interface endpoint', () => {
    template.hasResourceProperties('AWS::EC2::VPCEndpoint', { VpcEndpointType: 'Gateway' });
    template.hasResourceProperties('AWS::EC2::VPCEndpoint', {
      VpcEndpointType: 'Interface',
      ServiceName: { 'Fn::Join': ['', Match.arrayWith(['.secretsmanager'])] },
      PrivateDnsEnabled: true,
    });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Runtime: 'nodejs24.x',
      Architectures: ['arm64'],
      Timeout: 900,
      VpcConfig: Match.objectLike({ SubnetIds: Match.anyValue() }),
    });
  });

  it('denies any request to the exports bucket that does not use TLS', () => {
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Action: 's3:*',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ]),
      },
    });
    template.hasResourceProperties('AWS::S3::Bucket', {
      VersioningConfiguration: { Status: 'Enabled' },
      PublicAccessBlockConfiguration: Match.objectLike({
        BlockPublicAcls: true,
        RestrictPublicBuckets: true,
      }),
      LoggingConfiguration: Match.objectLike({ LogFilePrefix: 'exports/' }),
    });
  });

  it('loops over slices per project, bounded by the Map concurrency, and continues as new before the history limit', () => {
    const definition = stateMachineDefinition(template, 'formsdailyStateMachine');
    const states = definition.States as Record<string, Record<string, unknown>>;

    const map = states['Export projects'] as Record<string, unknown>;
    expect(map.MaxConcurrency).toBe(2);
    const inner = (map.ItemProcessor as { States: Record<string, Record<string, unknown>> }).States;
    const more = inner['More slices?'] as { Choices: { NumericGreaterThanEquals?: number; Next: string }[] };
    const limit = more.Choices.find(
      (c) => c.NumericGreaterThanEquals !== undefined,
    )?.NumericGreaterThanEquals;
    // Two projects share one history: 12 events per iteration each must stay below 25,000.
    expect(limit).toBeGreaterThanOrEqual(50);
    expect((limit as number) * 12 * 2).toBeLessThan(25_000);
    const retry = (inner['Export slice'] as { Retry: { ErrorEquals: string[]; MaxAttempts?: number }[] })
      .Retry;
    expect(retry).toContainEqual(expect.objectContaining({ ErrorEquals: ['States.ALL'], BackoffRate: 3 }));
    expect(retry).toContainEqual(
      expect.objectContaining({ ErrorEquals: expect.arrayContaining(['CommCareAuthError']), MaxAttempts: 0 }),
    );
    expect(states['Continue in new execution']).toMatchObject({
      Resource: expect.stringContaining('states:startExecution'),
      Parameters: expect.objectContaining({
        'Name.$': "States.Format('{}-g{}', States.Hash($.runId, 'MD5'), $.nextGeneration)",
      }),
    });
  });

  it('lets a state machine start only itself for continue-as-new', () => {
    const statements = roleStatements(template, 'formsdailyStateMachineRole');
    const start = statements.find((s) => actionsOf(s).includes('states:StartExecution'));
    expect(JSON.stringify(start?.Resource)).toContain(':stateMachine:CommCareExports-forms-daily');
  });

  it('alarms on failed and stale runs, the dead-letter queue and failed rotations, by e-mail', () => {
    template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'data-team@example.org',
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmDescription: Match.stringLikeRegexp('forms-daily: a run failed'),
    });
    // Daily schedule x staleRunMultiple 2 = 48 hours in 1-hour periods, all breaching.
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmDescription: Match.stringLikeRegexp('forms-daily: no run finished in the last 48 hours'),
      EvaluationPeriods: 48,
      DatapointsToAlarm: 48,
      TreatMissingData: 'breaching',
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmDescription: Match.stringLikeRegexp('could not start its export'),
    });
    template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['aws.secretsmanager'],
        'detail-type': ['AWS Service Event via CloudTrail'],
        detail: { eventName: ['RotationFailed', 'RotationAbandoned', 'TestRotationFailed'] },
      },
    });
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });
});

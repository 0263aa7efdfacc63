import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sns from 'aws-cdk-lib/aws-sns';
import { describe, expect, it } from 'vitest';
import { Credential } from '../../lib/credential';

// The first synthesis in a process loads most of aws-cdk-lib: over half a minute on a loaded 2-core
// machine. Done here, while the file loads, rather than in a test, where so long a block makes the
// vitest worker miss its own messages ("Timeout calling onTaskUpdate").
{
  const warm = new Stack(new App(), 'Warm');
  new sns.Topic(warm, 'Topic');
  Template.fromStack(warm);
}

function synth(props: Partial<ConstructorParameters<typeof Credential>[2]> = {}) {
  // Skip bundling: this test checks resources, not the Lambda bundle.
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
  const stack = new Stack(app, 'Test', { env: { account: '123456789012', region: 'eu-west-1' } });
  const vpc = new ec2.Vpc(stack, 'Vpc', { availabilityZones: ['eu-west-1a'], natGateways: 1 });
  const topic = new sns.Topic(stack, 'Alerts');
  const credential = new Credential(stack, 'HqKey', {
    credentialName: 'hq-main',
    provider: 'commcare',
    baseUrl: 'https://www.commcarehq.org',
    username: 'exporter@example.org',
    projects: ['demo'],
    vpc,
    notificationTopic: topic,
    timeZone: 'Africa/Nairobi',
    leadDays: 7,
    ...props,
  });
  const reader = new iam.Role(stack, 'Reader', {
    assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
  });
  credential.grantRead(reader);
  return { template: Template.fromStack(stack), credential };
}

// Synthesis on a loaded 2-core machine can take well over a minute for the first test.
describe('Credential construct', { timeout: 240_000 }, () => {
  it('rotates monthly on the rotation day at local noon with a cron override', () => {
    const { template } = synth();

    // Nairobi is UTC+3: local noon on the 22nd is 09:00 UTC.
    template.hasResourceProperties('AWS::SecretsManager::RotationSchedule', {
      RotationRules: { ScheduleExpression: 'cron(0 9 22 * ? *)', Duration: '4h' },
      RotateImmediatelyOnUpdate: false,
    });
  });

  it('encrypts the secret with a customer-managed KMS key and keeps the key out of the template', () => {
    const { template } = synth();

    template.resourceCountIs('AWS::KMS::Key', 1);
    template.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
    template.hasResourceProperties('AWS::SecretsManager::Secret', {
      Name: 'ccexport/credentials/hq-main',
      KmsKeyId: Match.anyValue(),
      SecretString: Match.stringLikeRegexp('"key":""'),
    });
  });

  it('lets Secrets Manager invoke the rotation Lambda, which runs on Node 22 arm64 in the VPC', () => {
    const { template } = synth();

    template.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      Principal: 'secretsmanager.amazonaws.com',
    });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Runtime: 'nodejs24.x',
      Architectures: ['arm64'],
      VpcConfig: Match.objectLike({ SubnetIds: Match.anyValue() }),
      Environment: { Variables: Match.objectLike({ CREDENTIAL_NAME: 'hq-main' }) },
    });
  });

  it('grants the rotation Lambda only its secret, and readers only GetSecretValue/DescribeSecret', () => {
    const { template } = synth();

    template.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Action: ['secretsmanager:ListSecretVersionIds', 'secretsmanager:TagResource'],
            Resource: { Ref: Match.stringLikeRegexp('HqKeySecret') },
          }),
        ]),
      },
    });
    const policies = template.findResources('AWS::IAM::Policy');
    const statements = Object.values(policies).flatMap(
      (p) =>
        (p as { Properties: { PolicyDocument: { Statement: { Action: unknown; Resource: unknown }[] } } })
          .Properties.PolicyDocument.Statement,
    );
    for (const s of statements) {
      const actions = ([] as unknown[]).concat(s.Action);
      if (
        actions.some(
          (a) => String(a).startsWith('secretsmanager:') && a !== 'secretsmanager:GetRandomPassword',
        )
      ) {
        expect(s.Resource).not.toBe('*');
      }
    }
  });

  it('runs maintenance daily in the credential time zone and alarms to the topic', () => {
    const { template } = synth();

    template.hasResourceProperties('AWS::Scheduler::Schedule', {
      ScheduleExpression: 'cron(0 9 * * ? *)',
      ScheduleExpressionTimezone: 'Africa/Nairobi',
      Target: Match.objectLike({
        Input: { 'Fn::Join': ['', Match.arrayWith([Match.stringLikeRegexp('"action":"maintain"')])] },
      }),
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Threshold: 1,
      AlarmActions: [{ Ref: Match.stringLikeRegexp('Alerts') }],
    });
    template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: Match.objectLike({
        detail: { eventName: ['RotationFailed', 'RotationAbandoned', 'TestRotationFailed'] },
      }),
    });
  });

  it('synthesizes the same secret whatever the projects, base URL and rotation settings', async () => {
    const a = synth();
    // Let the test runner's messages through between two synchronous syntheses.
    await new Promise((resolve) => setImmediate(resolve));
    const b = synth({
      projects: ['demo', 'another-project'],
      baseUrl: 'https://india.commcarehq.org',
      timeZone: 'Asia/Kolkata',
      leadDays: 5,
      graceDays: 3,
      reminderDays: 10,
      keyNamePrefix: 'hq',
    });

    const secret = (t: Template) => JSON.stringify(t.findResources('AWS::SecretsManager::Secret'));
    expect(secret(b.template)).toBe(secret(a.template));
    expect(secret(a.template)).not.toMatch(/demo|commcarehq|Nairobi|projects|policy/);
    b.template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({
          CREDENTIAL_SETTINGS: Match.serializedJson(
            Match.objectLike({
              projects: ['demo', 'another-project'],
              baseUrl: 'https://india.commcarehq.org',
            }),
          ),
        }),
      },
    });
  });

  it('fails on a credential name that cannot be part of a secret name', () => {
    expect(() => synth({ credentialName: 'bad name' })).toThrow(/credentialName "bad name"/);
  });
});

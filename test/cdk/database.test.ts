import { Match, Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { cfnLintErrors } from '../support/cfn-lint';
import { buildStack } from './app';
import { actionsOf, roleStatements } from './template';

const config = `
stackName: ExportsDb
alarmEmail: ops@example.org
network:
  elasticIps:
    allocationIds: [eipalloc-0123456789abcdef0]
database:
  type: create
credentials:
  - name: hq
    provider: commcare
    baseUrl: https://www.commcarehq.org
    username: exporter@example.org
    projects: [demo-project]
exports:
  - name: forms-pg
    projects: [demo-project]
    credential: hq
    queryFile: examples/queries/forms.xlsx
    output: { type: postgres, schema: commcare }
    schedule: { cron: "0 */6 * * ? *" }
`;

let template: Template;
let synthError: unknown;

beforeAll(() => {
  const { stack } = buildStack(config);
  try {
    template = Template.fromStack(stack);
  } catch (error) {
    synthError = error;
  }
});

describe('the stack with a new database and imported Elastic IPs', () => {
  it('reports no unacknowledged cdk-nag AwsSolutions finding', () => {
    expect(synthError).toBeUndefined();
  });

  it('passes cfn-lint without an error', async () => {
    expect(await cfnLintErrors(template)).toEqual([]);
  });

  it('puts the NAT gateway on the imported allocation id and creates no address', () => {
    template.resourceCountIs('AWS::EC2::EIP', 0);
    template.hasResourceProperties('AWS::EC2::NatGateway', { AllocationId: 'eipalloc-0123456789abcdef0' });
    template.hasOutput('EgressAllocationIds', { Value: 'eipalloc-0123456789abcdef0' });
  });

  it('creates an encrypted, backed-up PostgreSQL instance with deletion protection in isolated subnets', () => {
    template.hasResourceProperties('AWS::RDS::DBInstance', {
      Engine: 'postgres',
      StorageEncrypted: true,
      DeletionProtection: true,
      BackupRetentionPeriod: 7,
      PubliclyAccessible: false,
    });
    template.hasResourceProperties('AWS::RDS::DBSubnetGroup', {
      SubnetIds: Match.arrayWith([{ Ref: Match.stringLikeRegexp('dataSubnet') }]),
    });
  });

  it('keeps the PostgreSQL log three months in the group RDS exports it to, created before the instance, with no custom resource', () => {
    const instances = template.findResources('AWS::RDS::DBInstance');
    const [instanceId, instance] = Object.entries(instances)[0] ?? [];
    const identifier = instance?.Properties.DBInstanceIdentifier;
    const groups = template.findResources('AWS::Logs::LogGroup', {
      Properties: { LogGroupName: `/aws/rds/instance/${identifier}/postgresql` },
    });
    const [groupId, group] = Object.entries(groups)[0] ?? [];

    // RDS names the group after the instance identifier, which it keeps in lower case.
    expect(identifier).toBe('exportsdb-exports');
    expect(instance?.Properties).toMatchObject({
      EnableCloudwatchLogsExports: ['postgresql'],
      StorageType: 'gp3',
    });
    expect(group?.Properties.RetentionInDays).toBe(90);
    expect(instance?.DependsOn).toContain(groupId);
    expect(instanceId).toBeDefined();
    template.resourceCountIs('Custom::LogRetention', 0);
    expect(Object.keys(template.findResources('AWS::Lambda::Function')).join()).not.toMatch(/LogRetention/);
  });

  it('rotates the generated database password on its own schedule', () => {
    template.hasResourceProperties('AWS::SecretsManager::RotationSchedule', {
      SecretId: { Ref: Match.stringLikeRegexp('DatabaseInstanceSecret') },
      RotationRules: { ScheduleExpression: 'rate(30 days)' },
    });
  });

  it('opens the database port to the export function and the password rotation only', () => {
    const ingress = template.findResources('AWS::EC2::SecurityGroupIngress', {
      Properties: {
        GroupId: { 'Fn::GetAtt': [Match.stringLikeRegexp('DatabaseInstanceSecurityGroup'), 'GroupId'] },
      },
    });
    const sources = Object.values(ingress).map((r) => JSON.stringify(r.Properties.SourceSecurityGroupId));
    expect(sources.some((s) => s.includes('formspgSecurityGroup'))).toBe(true);
    expect(
      sources.every(
        (s) => s.includes('formspgSecurityGroup') || s.includes('RotationSingleUserSecurityGroup'),
      ),
    ).toBe(true);
    expect(Object.values(ingress).every((r) => r.Properties.CidrIp === undefined)).toBe(true);
  });

  it('lets the export function read the database secret and no bucket', () => {
    const statements = roleStatements(template, 'formspgFunctionServiceRole');
    const secretResources = statements
      .filter((s) => actionsOf(s).includes('secretsmanager:GetSecretValue'))
      .map((s) => JSON.stringify(s.Resource));

    expect(secretResources.some((r) => r.includes('DatabaseInstanceSecret'))).toBe(true);
    expect(statements.flatMap(actionsOf).some((a) => a.startsWith('s3:'))).toBe(false);
    template.resourceCountIs('AWS::S3::Bucket', 0);
  });

  it('watches a six-hourly schedule for staleness over twelve hours', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmDescription: Match.stringLikeRegexp('forms-pg: no run finished in the last 12 hours'),
      Period: 300,
      EvaluationPeriods: 144,
    });
  });
});

describe('a database created before the instance identifier was fixed (database.generatedIdentifier)', () => {
  it('keeps the instance under the same logical id without an identifier, and leaves its log group to RDS', () => {
    const upgraded = Template.fromStack(
      buildStack(config.replace('  type: create\n', '  type: create\n  generatedIdentifier: true\n')).stack,
    );
    const before = Object.keys(template.findResources('AWS::RDS::DBInstance'));
    const instances = upgraded.findResources('AWS::RDS::DBInstance');

    // The same logical id without DBInstanceIdentifier is what the stack deployed before: CloudFormation
    // updates that instance in place instead of replacing it with an empty one.
    expect(Object.keys(instances)).toEqual(before);
    expect(Object.values(instances)[0]?.Properties.DBInstanceIdentifier).toBeUndefined();
    expect(Object.values(instances)[0]?.Properties.EnableCloudwatchLogsExports).toEqual(['postgresql']);
    expect(
      upgraded.findResources('AWS::Logs::LogGroup', {
        Properties: { LogGroupName: Match.stringLikeRegexp('^/aws/rds/') },
      }),
    ).toEqual({});
  });
});

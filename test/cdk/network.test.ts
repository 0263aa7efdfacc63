/**
 * The network modes: a NAT instance on one Elastic IP (the cheap mode), the private subnets of an
 * existing VPC (to reach a database that lives there), and no VPC at all (the cheapest mode), each
 * synthesized from a config, checked by cdk-nag and cfn-lint.
 */
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseExportsConfig } from '../../functions/config/parse';
import { cfnLintErrors } from '../support/cfn-lint';
import { buildStack, repoRoot } from './app';
import { actionsOf, roleStatements } from './template';

const base = (network: string, database = 'database: { type: none }', rotation = '{}') => `
stackName: ExportsNet
alarmEmail: ops@example.org
${network}
${database}
credentials:
  - name: hq
    provider: commcare
    baseUrl: https://www.commcarehq.org
    username: exporter@example.org
    projects: [demo-project]
    rotation: ${rotation}
exports:
  - name: forms-net
    projects: [demo-project]
    credential: hq
    queryFile: examples/queries/forms.xlsx
    output: ${database.includes('none') ? '{ type: s3, format: csv, prefix: forms/ }' : '{ type: postgres, schema: commcare }'}
    schedule: { cron: "0 2 * * ? *" }
`;

describe('network mode nat-instance', () => {
  let template: Template;
  beforeAll(() => {
    template = Template.fromStack(buildStack(base('network: { mode: nat-instance }')).stack);
  });

  it('routes egress through one NAT instance holding a retained Elastic IP, with no NAT gateway', () => {
    template.resourceCountIs('AWS::EC2::NatGateway', 0);
    template.resourceCountIs('AWS::EC2::Instance', 1);
    template.hasResourceProperties('AWS::EC2::Instance', {
      InstanceType: 't4g.nano',
      SourceDestCheck: false,
    });
    template.hasResource('AWS::EC2::EIP', { DeletionPolicy: 'Retain' });
    template.hasResourceProperties('AWS::EC2::EIPAssociation', {
      AllocationId: { 'Fn::GetAtt': [Match.stringLikeRegexp('NatEip1'), 'AllocationId'] },
      InstanceId: { Ref: Match.stringLikeRegexp('NatInstance|PublicSubnet1') },
    });
    template.hasOutput('EgressIps', {
      Value: { 'Fn::GetAtt': [Match.stringLikeRegexp('NatEip1'), 'PublicIp'] },
    });
  });

  it('passes cfn-lint without an error', async () => {
    expect(await cfnLintErrors(template)).toEqual([]);
  });
});

describe('network mode existing', () => {
  let template: Template;
  const keyArn = 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
  beforeAll(() => {
    template = Template.fromStack(
      buildStack(
        base(
          'network: { mode: existing, vpcId: vpc-0abc1234def567890, subnetIds: [subnet-0aaa1111bbb222333, subnet-0ccc4444ddd555666], egressIps: [203.0.113.10] }',
          `database:
  type: existing
  secretArn: arn:aws:secretsmanager:eu-west-1:123456789012:secret:exports-db-AbCdEf
  securityGroupId: sg-0123456789abcdef0
  kmsKeyArn: ${keyArn}`,
        ),
      ).stack,
    );
  });

  it('creates no VPC, NAT or address and runs the functions in the given subnets', () => {
    for (const type of ['AWS::EC2::VPC', 'AWS::EC2::NatGateway', 'AWS::EC2::EIP', 'AWS::EC2::VPCEndpoint']) {
      template.resourceCountIs(type, 0);
    }
    template.hasResourceProperties('AWS::Lambda::Function', {
      VpcConfig: {
        SubnetIds: ['subnet-0aaa1111bbb222333', 'subnet-0ccc4444ddd555666'],
        SecurityGroupIds: Match.anyValue(),
      },
    });
    template.hasResourceProperties('AWS::EC2::SecurityGroup', { VpcId: 'vpc-0abc1234def567890' });
    template.hasOutput('EgressIps', { Value: '203.0.113.10' });
  });

  it("opens the database's security group to the export function and lets it decrypt the secret's key", () => {
    template.hasResourceProperties('AWS::EC2::SecurityGroupIngress', {
      GroupId: 'sg-0123456789abcdef0',
      FromPort: 5432,
    });
    const decrypt = roleStatements(template, 'formsnetFunctionServiceRole').find((s) =>
      actionsOf(s).includes('kms:Decrypt'),
    );
    expect(decrypt?.Resource).toBe(keyArn);
  });

  it('passes cfn-lint without an error', async () => {
    expect(await cfnLintErrors(template)).toEqual([]);
  });
});

describe('network mode none', () => {
  let template: Template;
  let warnings: string[];
  beforeAll(() => {
    const { stack } = buildStack(base('network: { mode: none }'));
    template = Template.fromStack(stack);
    warnings = Annotations.fromStack(stack)
      .findWarning('*', Match.anyValue())
      .map((w) => String(w.entry.data));
  });

  it('creates no VPC, NAT, address, endpoint or security group', () => {
    for (const type of [
      'AWS::EC2::VPC',
      'AWS::EC2::Subnet',
      'AWS::EC2::NatGateway',
      'AWS::EC2::Instance',
      'AWS::EC2::EIP',
      'AWS::EC2::VPCEndpoint',
      'AWS::EC2::FlowLog',
      'AWS::EC2::SecurityGroup',
    ]) {
      template.resourceCountIs(type, 0);
    }
    expect(template.toJSON().Outputs).not.toHaveProperty('EgressIps');
  });

  it('runs every function outside any VPC', () => {
    const functions = Object.values(template.findResources('AWS::Lambda::Function'));
    expect(functions.length).toBeGreaterThanOrEqual(2);
    for (const fn of functions) expect(fn.Properties).not.toHaveProperty('VpcConfig');
  });

  it('warns at synth that a CommCare key with an IP allow-list cannot work without fixed addresses', () => {
    expect(warnings.join('\n')).toMatch(/Credential hq: .*IP allow-list.*network\.mode "none"/);
  });

  it('does not warn for a key declared without an allow-list, and tells its owner to leave the list empty', () => {
    const { stack } = buildStack(base('network: { mode: none }', undefined, '{ ipAllowList: false }'));
    const quiet = Annotations.fromStack(stack)
      .findWarning('*', Match.stringLikeRegexp('allow-list'))
      .map((w) => String(w.entry.data));

    expect(quiet).toEqual([]);
    Template.fromStack(stack).hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({
          CREDENTIAL_SETTINGS: Match.serializedJson(Match.objectLike({ options: { allowListIps: [] } })),
        }),
      },
    });
  });

  it('passes cfn-lint without an error', async () => {
    expect(await cfnLintErrors(template)).toEqual([]);
  });
});

describe('network config', () => {
  it('fails on a created database without a VPC, naming the modes that have one', () => {
    const parse = () =>
      parseExportsConfig(base('network: { mode: none }', 'database: { type: create }'), `${repoRoot}/x.yaml`);

    expect(parse).toThrow(
      /database\.type: "create" makes a private RDS instance, which needs a VPC; network\.mode "none" has none/,
    );
  });

  it('fails on Elastic IPs or a database security group in mode none', () => {
    const parse = (network: string, database?: string) => () =>
      parseExportsConfig(base(network, database), `${repoRoot}/x.yaml`);

    expect(parse('network: { mode: none, elasticIps: { create: 1 } }')).toThrow(
      /network\.elasticIps: mode "none" has no NAT/,
    );
    expect(
      parse(
        'network: { mode: none }',
        'database: { type: existing, secretArn: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf", securityGroupId: sg-0123456789abcdef0 }',
      ),
    ).toThrow(/database\.securityGroupId: network\.mode "none" runs the functions outside any VPC/);
  });

  it('fails on mode existing without a VPC id and subnets, and on fields of another mode', () => {
    const parse = (network: string) => () => parseExportsConfig(base(network), `${repoRoot}/x.yaml`);

    expect(parse('network: { mode: existing }')).toThrow(
      /network\.vpcId: is missing[\s\S]*network\.subnetIds: is missing/,
    );
    expect(parse('network: { mode: nat, vpcId: vpc-0abc1234def567890 }')).toThrow(
      /network\.vpcId: only for mode "existing"/,
    );
    expect(parse('network: { mode: nat-instance, elasticIps: { create: 2 } }')).toThrow(/one Elastic IP/);
  });
});

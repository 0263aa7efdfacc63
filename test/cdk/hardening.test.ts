/**
 * Hardening a real account expects: the exports bucket (health data) encrypted with a key of its own
 * that only the export functions and the analysts' role may use, and every grant to an AWS service
 * principal in the alarm topic's and keys' policies limited to this account's resources.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadQueryFileTables } from '../../lib/analytics';
import { cfnLintErrors } from '../support/cfn-lint';
import { buildStack, repoRoot } from './app';
import { actionsOf, roleStatements, type Statement } from './template';

const example = readFileSync(`${repoRoot}/exports.config.example.yaml`, 'utf8');

/** The example config (its households-athena export is Parquet, with a Glue catalog and an Athena workgroup). */
function exampleWith(encryption: 'kms' | 's3-managed'): string {
  const changed = example.replace(/^( {2}encryption:) kms$/m, `$1 ${encryption}`);
  if (!changed.includes(`encryption: ${encryption}`))
    throw new Error('the example config changed: update exampleWith()');
  return changed;
}

function logicalIds(template: Template, type: string): string[] {
  return Object.keys(template.findResources(type));
}

/** The statement of `role*`'s policies that grants `action`. */
function grantOf(template: Template, rolePrefix: string, action: string): Statement | undefined {
  return roleStatements(template, rolePrefix).find((s) => actionsOf(s).includes(action));
}

let template: Template;

beforeAll(async () => {
  await loadQueryFileTables([join(repoRoot, 'examples/household-registration.xlsx')]);
  template = Template.fromStack(buildStack(exampleWith('kms')).stack);
});

describe('the exports bucket by default', () => {
  it('is encrypted with SSE-KMS under a retained key of its own, with S3 Bucket Keys', () => {
    const [bucketKey] = logicalIds(template, 'AWS::KMS::Key').filter((id) => id.startsWith('ExportsKey'));

    expect(bucketKey).toBeDefined();
    template.hasResource('AWS::KMS::Key', {
      Properties: Match.objectLike({ EnableKeyRotation: true }),
      DeletionPolicy: 'Retain',
    });
    template.hasResourceProperties('AWS::S3::Bucket', {
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [
          {
            ServerSideEncryptionByDefault: {
              SSEAlgorithm: 'aws:kms',
              KMSMasterKeyID: { 'Fn::GetAtt': [bucketKey, 'Arn'] },
            },
            BucketKeyEnabled: true,
          },
        ],
      },
    });
  });

  it('lets each export function encrypt and decrypt with the key through S3 only', () => {
    for (const role of [
      'formsdailyFunctionServiceRole',
      'casesweeklyFunctionServiceRole',
      'householdsathenaFunctionServiceRole',
    ]) {
      const grant = grantOf(template, role, 'kms:Decrypt');

      expect(actionsOf(grant as Statement).sort()).toEqual(['kms:Decrypt', 'kms:GenerateDataKey']);
      expect(JSON.stringify(grant?.Resource)).toMatch(/"ExportsKey[0-9A-F]+","Arn"/);
      expect(grant?.Condition).toEqual({
        StringEquals: {
          'kms:ViaService': { 'Fn::Join': ['', ['s3.', { Ref: 'AWS::Region' }, '.amazonaws.com']] },
        },
      });
    }
  });

  it("lets the analysts' Athena role read the files and write results under the key, and encrypts results with it", () => {
    const grant = grantOf(template, 'householdsathenaAnalyticsAnalystRole', 'kms:Decrypt');

    expect(actionsOf(grant as Statement).sort()).toEqual(['kms:Decrypt', 'kms:GenerateDataKey']);
    expect(JSON.stringify(grant?.Resource)).toMatch(/"ExportsKey[0-9A-F]+","Arn"/);
    template.hasResourceProperties('AWS::Athena::WorkGroup', {
      WorkGroupConfiguration: Match.objectLike({
        ResultConfiguration: Match.objectLike({
          EncryptionConfiguration: {
            EncryptionOption: 'SSE_KMS',
            KmsKey: { 'Fn::GetAtt': [Match.stringLikeRegexp('^ExportsKey'), 'Arn'] },
          },
        }),
      }),
    });
  });

  it('passes cfn-lint without an error', async () => {
    expect(await cfnLintErrors(template)).toEqual([]);
  });
});

describe('the exports bucket with bucket.encryption s3-managed', () => {
  it('uses SSE-S3 and creates or grants no bucket key', () => {
    const plain = Template.fromStack(buildStack(exampleWith('s3-managed')).stack);

    expect(logicalIds(plain, 'AWS::KMS::Key').filter((id) => id.startsWith('ExportsKey'))).toEqual([]);
    for (const bucket of Object.values(plain.findResources('AWS::S3::Bucket'))) {
      expect(
        bucket.Properties.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault,
      ).toEqual({ SSEAlgorithm: 'AES256' });
    }
    expect(grantOf(plain, 'formsdailyFunctionServiceRole', 'kms:GenerateDataKey')).toBeUndefined();
    plain.hasResourceProperties('AWS::Athena::WorkGroup', {
      WorkGroupConfiguration: Match.objectLike({
        ResultConfiguration: Match.objectLike({ EncryptionConfiguration: { EncryptionOption: 'SSE_S3' } }),
      }),
    });
  });
});

describe('grants to AWS service principals', () => {
  /** Every Allow statement of the topic policies and key policies that names a service principal. */
  function serviceGrants(): {
    where: string;
    statement: Statement & { Principal?: { Service?: unknown } };
  }[] {
    const found: { where: string; statement: Statement & { Principal?: { Service?: unknown } } }[] = [];
    for (const [id, r] of Object.entries(template.findResources('AWS::SNS::TopicPolicy'))) {
      for (const statement of r.Properties.PolicyDocument.Statement) found.push({ where: id, statement });
    }
    for (const [id, r] of Object.entries(template.findResources('AWS::KMS::Key'))) {
      for (const statement of r.Properties.KeyPolicy.Statement) found.push({ where: id, statement });
    }
    return found.filter((f) => f.statement.Effect === 'Allow' && f.statement.Principal?.Service);
  }

  it('hold for this account only (aws:SourceAccount) in the topic policy and every key policy', () => {
    const grants = serviceGrants();

    // CloudWatch alarms publish to the encrypted alarm topic: the topic policy and its key's policy.
    expect(grants.map((g) => g.statement.Principal?.Service)).toContain('cloudwatch.amazonaws.com');
    expect(grants.filter((g) => g.where.startsWith('MonitoringAlarmTopicPolicy'))).toHaveLength(1);
    for (const { where, statement } of grants) {
      expect(statement.Condition, `${where}: ${JSON.stringify(statement)}`).toMatchObject({
        StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } },
      });
    }
  });

  it('leave EventBridge out of the topic and key policies: its rules publish with a role only this account can assume', () => {
    expect(serviceGrants().map((g) => g.statement.Principal?.Service)).not.toContain('events.amazonaws.com');

    const rules = Object.values(template.findResources('AWS::Events::Rule'));
    expect(rules.length).toBeGreaterThan(0);
    for (const rule of rules) {
      for (const target of rule.Properties.Targets) {
        expect(JSON.stringify(target.RoleArn)).toMatch(
          /^\{"Fn::GetAtt":\["MonitoringEventsPublishRole[0-9A-F]+","Arn"\]\}$/,
        );
      }
    }
    template.hasResourceProperties('AWS::IAM::Role', {
      AssumeRolePolicyDocument: {
        Statement: [
          Match.objectLike({
            Principal: { Service: 'events.amazonaws.com' },
            Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } },
          }),
        ],
      },
    });
    const publish = grantOf(template, 'MonitoringEventsPublishRole', 'sns:Publish');
    expect(publish?.Resource).toEqual({ Ref: expect.stringMatching(/^MonitoringAlarmTopic/) });
  });
});

/**
 * Deploying again after a tear-down: the key secrets are retained under fixed names, so a new stack
 * cannot create them; `adoptSecret` makes it use the kept secret (and the key in it) instead.
 */
import { Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseExportsConfig } from '../../functions/config/parse';
import { cfnLintErrors } from '../support/cfn-lint';
import { buildStack, repoRoot } from './app';
import { actionsOf, roleStatements } from './template';

const SECRET_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:ccexport/credentials/hq-main-AbC123';
const KEY_ARN = 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';

const config = (secretArn = SECRET_ARN) => `
stackName: ExportsAgain
alarmEmail: ops@example.org
credentials:
  - name: hq-main
    provider: commcare
    baseUrl: https://www.commcarehq.org
    username: exporter@example.org
    projects: [demo-project]
    adoptSecret:
      secretArn: ${secretArn}
      kmsKeyArn: ${KEY_ARN}
exports:
  - name: forms-again
    projects: [demo-project]
    credential: hq-main
    queryFile: examples/queries/forms.xlsx
    output: { type: s3, format: csv, prefix: forms/ }
    schedule: { cron: "0 2 * * ? *" }
`;

let template: Template;

beforeAll(() => {
  template = Template.fromStack(buildStack(config()).stack);
});

describe('a credential that adopts the secret a torn-down stack kept', () => {
  it('creates no secret and no key for it, so CloudFormation never writes the kept key', () => {
    template.resourceCountIs('AWS::SecretsManager::Secret', 0);
    const keys = Object.keys(template.findResources('AWS::KMS::Key'));
    expect(keys.filter((id) => id.startsWith('Credential'))).toEqual([]);
    template.hasOutput('CredentialSecretHqMain', { Value: SECRET_ARN });
  });

  it('rotates the adopted secret with the new rotation function', () => {
    template.hasResourceProperties('AWS::SecretsManager::RotationSchedule', { SecretId: SECRET_ARN });
    const rotation = roleStatements(template, 'CredentialhqmainRotateKeyServiceRole');
    const write = rotation.find((s) => actionsOf(s).includes('secretsmanager:PutSecretValue'));
    expect(write?.Resource).toBe(SECRET_ARN);
    const encrypt = rotation.find((s) => s.Resource === KEY_ARN);
    expect(actionsOf(encrypt ?? { Effect: '', Action: [], Resource: '' }).sort()).toEqual([
      'kms:Decrypt',
      'kms:GenerateDataKey',
    ]);
    expect(JSON.stringify(encrypt?.Condition)).toContain('"kms:ViaService"');
  });

  it('lets the export function read it and decrypt it with the kept key, through Secrets Manager', () => {
    const statements = roleStatements(template, 'formsagainFunctionServiceRole');
    const read = statements.find((s) => actionsOf(s).includes('secretsmanager:GetSecretValue'));
    const decrypt = statements.find((s) => actionsOf(s).includes('kms:Decrypt') && s.Resource === KEY_ARN);

    expect(read?.Resource).toBe(SECRET_ARN);
    expect(actionsOf(decrypt ?? { Effect: '', Action: [], Resource: '' })).toEqual(['kms:Decrypt']);
    expect(JSON.stringify(decrypt?.Condition)).toContain('"kms:ViaService"');
  });

  it('passes cdk-nag and cfn-lint without an error', async () => {
    expect(await cfnLintErrors(template)).toEqual([]);
  });

  it("fails on an ARN that is not the credential's secret, or not a complete ARN", () => {
    const parse = (arn: string) => () => parseExportsConfig(config(arn), `${repoRoot}/x.yaml`);

    expect(
      parse('arn:aws:secretsmanager:eu-west-1:123456789012:secret:ccexport/credentials/other-AbC123'),
    ).toThrow(/adoptSecret\.secretArn: .* is not credential "hq-main"'s secret/);
    expect(
      parse('arn:aws:secretsmanager:eu-west-1:123456789012:secret:ccexport/credentials/hq-main'),
    ).toThrow(/is not a complete secret ARN/);
  });
});

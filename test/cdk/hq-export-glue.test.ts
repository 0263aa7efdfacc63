/**
 * A Parquet export defined in HQ (`query: { hqExport }`): the CDK app makes its Glue database, and its
 * export function creates and updates the tables at run time, with glue:GetTable, CreateTable and
 * UpdateTable on that database only. Other exports' functions get no Glue access.
 */
import { Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { cfnLintErrors } from '../support/cfn-lint';
import { buildStack } from './app';
import { actionsOf, roleStatements } from './template';

const config = `
stackName: HqAthena
alarmEmail: ops@example.org
network:
  mode: none
credentials:
  - name: hq
    provider: commcare
    baseUrl: https://www.commcarehq.org
    username: exporter@example.org
    projects: [demo-project]
    rotation: { ipAllowList: false }
exports:
  - name: registrations
    projects: [demo-project]
    credential: hq
    query: { hqExport: Household registrations }
    output: { type: s3, format: parquet, prefix: registrations/ }
    schedule: { cron: "0 */6 * * ? *" }
  - name: visits
    projects: [demo-project]
    credential: hq
    query: { hqExport: Visits }
    output: { type: s3, format: csv, prefix: visits/ }
    schedule: { cron: "0 */6 * * ? *" }
`;

let template: Template;
let synthError: unknown;

beforeAll(() => {
  try {
    template = Template.fromStack(buildStack(config).stack);
  } catch (error) {
    synthError = error;
  }
});

function functionOf(exportPrefix: string): { role: string; env: Record<string, string> } {
  const functions = template.findResources('AWS::Lambda::Function');
  const [id, fn] = Object.entries(functions).find(([k]) => k.startsWith(`${exportPrefix}Function`)) ?? [];
  if (!id || !fn) throw new Error(`no function ${exportPrefix}Function*`);
  return {
    role: (fn.Properties.Role as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0],
    env: fn.Properties.Environment.Variables as Record<string, string>,
  };
}

const arn = (resource: string) => ({
  'Fn::Join': [
    '',
    [
      'arn:',
      { Ref: 'AWS::Partition' },
      ':glue:',
      { Ref: 'AWS::Region' },
      ':',
      { Ref: 'AWS::AccountId' },
      resource,
    ],
  ],
});

describe('a Parquet export defined in HQ', () => {
  it('reports no unacknowledged cdk-nag AwsSolutions finding', () => {
    expect(synthError).toBeUndefined();
  });

  it('passes cfn-lint without an error', { timeout: 240_000 }, async () => {
    expect(await cfnLintErrors(template)).toEqual([]);
  });

  it('creates the Glue database and no tables (each run makes them), and names it to the function', () => {
    template.resourceCountIs('AWS::Glue::Database', 1);
    template.resourceCountIs('AWS::Glue::Table', 0);
    template.hasResourceProperties('AWS::Glue::Database', {
      DatabaseInput: { Name: 'hqathena_registrations' },
    });
    expect(functionOf('registrations').env.GLUE_DATABASE).toBe('hqathena_registrations');
    expect(functionOf('visits').env).not.toHaveProperty('GLUE_DATABASE');
  });

  it("grants the function exactly GetTable, CreateTable and UpdateTable on its database's tables", () => {
    const glue = roleStatements(template, functionOf('registrations').role).filter((s) =>
      actionsOf(s).some((a) => a.startsWith('glue:')),
    );
    expect(glue).toEqual([
      {
        Effect: 'Allow',
        Action: ['glue:CreateTable', 'glue:GetTable', 'glue:UpdateTable'],
        Resource: [
          arn(':catalog'),
          arn(':database/hqathena_registrations'),
          arn(':table/hqathena_registrations/*'),
        ],
      },
    ]);
  });

  it('gives the csv export defined in HQ no Glue access', () => {
    const glue = roleStatements(template, functionOf('visits').role).filter((s) =>
      actionsOf(s).some((a) => a.startsWith('glue:')),
    );
    expect(glue).toEqual([]);
  });
});

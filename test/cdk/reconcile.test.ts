import { Match, Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseExportsConfig } from '../../functions/config/parse';
import { cfnLintErrors } from '../support/cfn-lint';
import { buildStack, repoRoot } from './app';

const config = (reconcile: string) => `
stackName: ExportsReconcile
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
${reconcile}
`;

let template: Template;

beforeAll(() => {
  template = Template.fromStack(buildStack(config('')).stack);
});

function scheduleInputs(
  t: Template,
  exportId = 'formspg',
): { ScheduleExpression: string; input: { slices: { job: Record<string, unknown> }[] } }[] {
  return Object.values(t.findResources('AWS::Scheduler::Schedule'))
    .filter((r) => r.Properties.Target?.Arn?.Ref?.startsWith?.(exportId))
    .map((r) => ({
      ScheduleExpression: r.Properties.ScheduleExpression as string,
      input: JSON.parse(r.Properties.Target.Input as string),
    }));
}

describe('the reconcile schedule of a PostgreSQL export', () => {
  it('starts the same state machine weekly with reconcile jobs by default, deletions removed', () => {
    const schedules = scheduleInputs(template);

    const reconcile = schedules.find((s) => s.input.slices[0]?.job.task === 'reconcile');
    const run = schedules.find((s) => s.input.slices[0]?.job.task === undefined);
    expect(reconcile?.ScheduleExpression).toBe('cron(0 3 ? * SUN *)');
    expect(reconcile?.input.slices[0]?.job).toMatchObject({ deletions: 'remove', reconcileMaxShare: 0.2 });
    expect(run?.input.slices[0]?.job).toMatchObject({ deletions: 'remove' });
  });

  it('alarms when a reconcile would remove more than its share, and charts records removed or marked', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ReconcileGuardTripped',
      Threshold: 1,
      AlarmActions: Match.anyValue(),
    });
    const dashboards = JSON.stringify(template.findResources('AWS::CloudWatch::Dashboard'));
    expect(dashboards).toContain('RecordsRemoved');
    expect(dashboards).toContain('records removed or marked');
  });

  it('has no reconcile schedule with reconcile: off, and takes a cron, time zone and share', () => {
    const off = Template.fromStack(buildStack(config('    reconcile: off')).stack);
    expect(scheduleInputs(off).some((s) => s.input.slices[0]?.job.task === 'reconcile')).toBe(false);

    const parsed = parseExportsConfig(
      config('    reconcile: { cron: "0 4 1 * ? *", timezone: Africa/Nairobi, maxShare: 0.05 }'),
      `${repoRoot}/exports.config.test.yaml`,
    );
    expect(parsed.exports[0]?.reconcile).toEqual({
      cron: '0 4 1 * ? *',
      timezone: 'Africa/Nairobi',
      maxShare: 0.05,
    });
    expect(() =>
      parseExportsConfig(config('    reconcile: { cron: "0 4 1 * ? *", maxShare: 2 }'), `${repoRoot}/x.yaml`),
    ).toThrow(/maxShare/);
  });
});

const s3Config = (reconcile: string, format = 'csv') => `
stackName: ExportsReconcileS3
alarmEmail: ops@example.org
network:
  elasticIps:
    allocationIds: [eipalloc-0123456789abcdef0]
credentials:
  - name: hq
    provider: commcare
    baseUrl: https://www.commcarehq.org
    username: exporter@example.org
    projects: [demo-project]
exports:
  - name: forms-files
    projects: [demo-project]
    credential: hq
    queryFile: examples/queries/forms.xlsx
    output: { type: s3, format: ${format}, prefix: forms/ }
    schedule: { cron: "0 */6 * * ? *" }
${reconcile}
  - name: cases-parquet
    projects: [demo-project]
    credential: hq
    queryFile: examples/queries/cases.xlsx
    output: { type: s3, format: parquet, prefix: analytics/cases/ }
    schedule: { cron: "0 1 * * ? *" }
    deletions: mark
`;

function lifecycleRules(t: Template): { Id: string; Prefix?: string; ExpirationInDays?: number }[] {
  const buckets = Object.values(t.findResources('AWS::S3::Bucket'));
  return buckets.flatMap((b) => b.Properties.LifecycleConfiguration?.Rules ?? []);
}

describe('the reconcile schedule of an S3 export', () => {
  let s3Template: Template;
  beforeAll(() => {
    s3Template = Template.fromStack(buildStack(s3Config('')).stack);
  });

  it('starts the state machine weekly with reconcile jobs of the S3 output, for csv and Parquet', () => {
    for (const [exportId, format, deletions] of [
      ['formsfiles', 'csv', 'remove'],
      ['casesparquet', 'parquet', 'mark'],
    ] as const) {
      const reconcile = scheduleInputs(s3Template, exportId).find(
        (s) => s.input.slices[0]?.job.task === 'reconcile',
      );

      expect(reconcile?.ScheduleExpression, exportId).toBe('cron(0 3 ? * SUN *)');
      expect(reconcile?.input.slices[0]?.job).toMatchObject({
        output: { type: 's3', format },
        deletions,
        reconcileMaxShare: 0.2,
      });
    }
  });

  it('gives the function of an S3 export with a reconcile 4 GiB of /tmp for the last slice’s sort', () => {
    const functions = Object.values(s3Template.findResources('AWS::Lambda::Function')).filter((f) =>
      /CommCare export (forms-files|cases-parquet):/.test(f.Properties.Description),
    );

    expect(functions).toHaveLength(2);
    expect(functions.map((f) => f.Properties.EphemeralStorage)).toEqual([{ Size: 4096 }, { Size: 4096 }]);
  });

  it('expires the staging of failed reconciles under each export prefix after 7 days', () => {
    const rules = lifecycleRules(s3Template).filter((r) => r.Prefix?.endsWith('_reconcile/'));

    expect(rules.map((r) => r.Prefix).sort()).toEqual(['analytics/cases/_reconcile/', 'forms/_reconcile/']);
    expect(rules.every((r) => r.ExpirationInDays === 7)).toBe(true);
  });

  it('has no reconcile schedule or staging rule with reconcile: off, nor for markdown', () => {
    for (const config of [s3Config('    reconcile: off'), s3Config('', 'markdown')]) {
      const t = Template.fromStack(buildStack(config).stack);

      expect(scheduleInputs(t, 'formsfiles').map((s) => s.input.slices[0]?.job.task)).toEqual([undefined]);
      const fn = Object.values(t.findResources('AWS::Lambda::Function')).find((f) =>
        /CommCare export forms-files:/.test(f.Properties.Description),
      );
      expect(fn?.Properties.EphemeralStorage).toBeUndefined();
      expect(lifecycleRules(t).map((r) => r.Prefix)).not.toContain('forms/_reconcile/');
    }
  });

  it('passes cfn-lint without an error', async () => {
    expect(await cfnLintErrors(s3Template)).toEqual([]);
  });
});

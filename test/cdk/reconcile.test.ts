import { Match, Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseExportsConfig } from '../../functions/config/parse';
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
): { ScheduleExpression: string; input: { slices: { job: Record<string, unknown> }[] } }[] {
  return Object.values(t.findResources('AWS::Scheduler::Schedule'))
    .filter((r) => r.Properties.Target?.Arn?.Ref?.startsWith?.('formspg'))
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

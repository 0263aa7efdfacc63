import { Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { buildStack } from './app';

const config = `
stackName: ExportsFromHq
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
  - name: registrations
    projects: [demo-project]
    credential: hq
    query: { hqExport: Household registrations }
    output: { type: postgres, schema: commcare }
    schedule: { cron: "0 */6 * * ? *" }
`;

describe('an export defined in HQ (query: { hqExport })', () => {
  it('schedules jobs that name the HQ export and no query file', () => {
    const template = Template.fromStack(buildStack(config).stack);

    const jobs = Object.values(template.findResources('AWS::Scheduler::Schedule'))
      .filter((r) => r.Properties.Target?.Arn?.Ref?.startsWith?.('registrations'))
      .flatMap(
        (r) =>
          (JSON.parse(r.Properties.Target.Input as string) as { slices: { job: Record<string, unknown> }[] })
            .slices,
      )
      .map((s) => s.job);
    expect(jobs.length).toBeGreaterThan(0);
    for (const job of jobs) {
      expect(job.hqExport).toBe('Household registrations');
      expect(job).not.toHaveProperty('queryFile');
    }
  });
});

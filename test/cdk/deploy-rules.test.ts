/**
 * Rules AWS enforces at deploy time that synth alone does not: checked on the template a config
 * synthesizes.
 */
import { readFileSync } from 'node:fs';
import { Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { rotationRulesProblem } from '../../functions/config/schedule';
import { cfnLintErrors } from '../support/cfn-lint';
import { buildStack, repoRoot } from './app';

const example = readFileSync(`${repoRoot}/exports.config.example.yaml`, 'utf8');

/** The example config with one credential per time zone (same projects and exports otherwise). */
function withTimeZones(zones: readonly string[]): string {
  const credentials = zones
    .map(
      (zone, i) => `  - name: ${i === 0 ? 'hq-main' : `hq-${i}`}
    provider: commcare
    baseUrl: https://www.commcarehq.org
    username: exporter@example.org
    projects: [demo-project, demo-project-2]
    rotation: { timeZone: ${zone}, leadDays: ${i % 2 === 0 ? 7 : 28} }
`,
    )
    .join('');
  return example.replace(/credentials:\n[\s\S]*?\nexports:/, `credentials:\n${credentials}\nexports:`);
}

describe('the rotation schedule', () => {
  let template: Template;
  const zones = [
    'Asia/Kolkata',
    'Asia/Kathmandu',
    'Pacific/Auckland',
    'Pacific/Honolulu',
    'America/Anchorage',
  ];

  beforeAll(() => {
    template = Template.fromStack(buildStack(withTimeZones(zones)).stack);
  });

  it('is one Secrets Manager accepts in time zones off the whole hour or far from UTC', () => {
    const schedules = Object.values(template.findResources('AWS::SecretsManager::RotationSchedule')).filter(
      (r) => r.Properties.RotationRules?.ScheduleExpression,
    );
    expect(schedules).toHaveLength(zones.length);

    const problems = schedules.map((r) =>
      rotationRulesProblem({
        scheduleExpression: r.Properties.RotationRules.ScheduleExpression,
        duration: r.Properties.RotationRules.Duration,
      }),
    );

    expect(problems).toEqual(zones.map(() => null));
  });

  it('passes cfn-lint without an error', async () => {
    expect(await cfnLintErrors(template)).toEqual([]);
  });
});

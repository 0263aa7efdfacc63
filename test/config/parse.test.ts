import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { exportJobs } from '../../functions/config/job';
import { ConfigError, parseExportsConfig } from '../../functions/config/parse';
import { cronProblem, maxRunGapSeconds } from '../../functions/config/schedule';

const examplePath = resolve(__dirname, '../../exports.config.example.yaml');
const example = readFileSync(examplePath, 'utf8');

const minimal = `
alarmEmail: ops@example.org
credentials:
  - name: hq
    provider: commcare
    baseUrl: https://www.commcarehq.org
    username: exporter@example.org
    projects: [p1, p2]
exports:
  - name: forms
    projects: [p1]
    credential: hq
    queryFile: q/forms.xlsx
    output: { type: s3, format: csv, prefix: forms/ }
    schedule: { cron: "0 2 * * ? *", timezone: UTC }
  - name: cases
    projects: [p1, p2]
    credential: hq
    queryFile: q/cases.xlsx
    output: { type: s3, format: json, prefix: cases/ }
    schedule: { cron: "0 3 * * ? *", timezone: Africa/Nairobi }
`;

/** The message parseExportsConfig throws for `text`, or fails the test. */
function problemsOf(text: string): string {
  try {
    parseExportsConfig(text, 'exports.config.yaml');
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).message;
  }
  throw new Error('expected a ConfigError');
}

describe('parseExportsConfig', () => {
  it('parses the example config with defaults filled in', () => {
    const config = parseExportsConfig(example, examplePath);

    expect(config.stackName).toBe('CommCareExports');
    expect(config.network.elasticIps).toEqual({ create: 1 });
    expect(config.database).toEqual({ type: 'none' });
    expect(config.exports.map((e) => e.name)).toEqual(['forms-daily', 'cases-weekly', 'households-athena']);
    expect(config.exports[2]?.output).toEqual({
      type: 's3',
      format: 'parquet',
      prefix: 'analytics/households/',
    });
    expect(config.exports[0]?.queryFilePath).toBe(resolve(__dirname, '../../examples/queries/forms.xlsx'));
    expect(config.credentials[0]?.rotation).toMatchObject({ graceDays: 7 });
  });

  it('builds one job per project with the query file where the function bundles it', () => {
    const config = parseExportsConfig(example, examplePath);

    const jobs = exportJobs(config, 'forms-daily');

    expect(jobs.map((j) => j.project)).toEqual(['demo-project', 'demo-project-2']);
    expect(jobs[0]).toEqual({
      exportName: 'forms-daily',
      project: 'demo-project',
      credential: {
        name: 'hq-main',
        provider: 'commcare',
        baseUrl: 'https://www.commcarehq.org',
        username: 'exporter@example.org',
      },
      queryFile: 'query/forms.xlsx',
      output: { type: 's3', format: 'csv', prefix: 'forms/' },
      mode: 'incremental',
      deletions: 'remove',
    });
  });

  it('accepts several projects under one key and several exports per project', () => {
    const config = parseExportsConfig(minimal, '/srv/exports.config.yaml');

    expect(config.exports).toHaveLength(2);
    expect(config.exports[1]?.queryFilePath).toBe('/srv/q/cases.xlsx');
    expect(config.exports[0]?.concurrency).toBe(2);
    expect(config.exports[0]?.mode).toBe('incremental');
  });

  it('takes an export defined in HQ instead of a query file: its jobs name it and bundle no file', () => {
    const config = parseExportsConfig(
      minimal.replace('    queryFile: q/forms.xlsx\n', '    query: { hqExport: Household registrations }\n'),
      'exports.config.yaml',
    );

    expect(config.exports[0]?.queryFilePath).toBeNull();
    const [job] = exportJobs(config, 'forms');
    expect(job?.hqExport).toBe('Household registrations');
    expect(job?.queryFile).toBeUndefined();
  });

  it('fails when an export names both a query file and an HQ export, or neither', () => {
    expect(
      problemsOf(
        minimal.replace(
          '    queryFile: q/forms.xlsx\n',
          '    queryFile: q/forms.xlsx\n    query: { hqExport: x }\n',
        ),
      ),
    ).toContain('exports[0]: has both queryFile and query.hqExport; expected one of them');
    expect(problemsOf(minimal.replace('    queryFile: q/forms.xlsx\n', ''))).toContain(
      'exports[0]: names no query; expected queryFile (a DET query file) or query: { hqExport: <name or id> }',
    );
  });

  it('fails naming the time zone field of the second export', () => {
    const text = minimal.replace('timezone: Africa/Nairobi', 'timezone: Mars/Olympus');

    expect(problemsOf(text)).toContain(
      'exports[1].schedule.timezone: "Mars/Olympus" is not an IANA time zone',
    );
  });

  it('fails naming a five-field cron expression', () => {
    const text = minimal.replace('cron: "0 2 * * ? *"', 'cron: "0 2 * * *"');

    expect(problemsOf(text)).toContain('exports[0].schedule.cron: "0 2 * * *" has 5 fields; expected 6');
  });

  it('fails when both day fields of a cron expression are set', () => {
    const text = minimal.replace('cron: "0 2 * * ? *"', 'cron: "0 2 * * MON *"');

    expect(problemsOf(text)).toContain(
      'exports[0].schedule.cron: "0 2 * * MON *": exactly one of day-of-month',
    );
  });

  it('fails naming an unknown key provider', () => {
    expect(problemsOf(minimal.replace('provider: commcare', 'provider: dhis2'))).toContain(
      'credentials[0].provider: "dhis2" is not a key provider; expected "commcare", "conduce" or "civicrm"',
    );
  });

  it('fails naming a plain-http base URL', () => {
    expect(problemsOf(minimal.replace('https://www.commcarehq.org', 'http://www.commcarehq.org'))).toContain(
      'credentials[0].baseUrl: "http://www.commcarehq.org" is not an https URL',
    );
  });

  it('fails naming an unknown output format', () => {
    expect(problemsOf(minimal.replace('format: json', 'format: orc'))).toContain(
      'exports[1].output.format: "orc" is not an output format; expected csv, xlsx, json, markdown or parquet',
    );
  });

  it('fails naming a prefix without a trailing slash', () => {
    expect(problemsOf(minimal.replace('prefix: cases/', 'prefix: cases'))).toContain(
      'exports[1].output.prefix: expected a key prefix',
    );
  });

  it('fails when two exports share a prefix', () => {
    expect(problemsOf(minimal.replace('prefix: cases/', 'prefix: forms/daily/'))).toContain(
      'exports[1].output.prefix: "forms/daily/" overlaps exports[0].output.prefix "forms/"',
    );
  });

  it('fails naming a credential that does not exist', () => {
    expect(
      problemsOf(
        minimal.replace('credential: hq\n    queryFile: q/cases', 'credential: hq2\n    queryFile: q/cases'),
      ),
    ).toContain('exports[1].credential: "hq2" is not a credential; expected one of "hq"');
  });

  it("fails naming a project outside the credential's projects", () => {
    expect(
      problemsOf(minimal.replace('projects: [p1, p2]\n    credential', 'projects: [p1, p3]\n    credential')),
    ).toContain(`exports[1].projects[1]: "p3" is not among credential "hq"'s projects`);
  });

  it('fails naming a duplicate export name', () => {
    expect(problemsOf(minimal.replace('name: cases', 'name: forms'))).toContain(
      'exports[1].name: "forms" is used by an earlier export',
    );
  });

  it('fails when a PostgreSQL output has no database', () => {
    const text = minimal.replace(
      '{ type: s3, format: json, prefix: cases/ }',
      '{ type: postgres, schema: commcare }',
    );

    expect(problemsOf(text)).toContain('exports[1].output.type: "postgres" needs a database');
  });

  it('fails naming a missing field', () => {
    expect(problemsOf(minimal.replace('    credential: hq\n', ''))).toContain(
      'exports[0].credential: is missing; expected string',
    );
  });

  it('fails naming a misspelt key', () => {
    expect(problemsOf(minimal.replace('schedule: { cron: "0 3', 'shedule: { cron: "0 3'))).toContain(
      'exports[1]: Unrecognized key: "shedule"',
    );
  });

  it('fails naming a bad Elastic IP allocation id and a bad database secret ARN', () => {
    const text = `${minimal}
network:
  elasticIps:
    allocationIds: [eip-123]
database:
  type: existing
  secretArn: my-db-secret
`;

    const message = problemsOf(text);

    expect(message).toContain('network.elasticIps');
    expect(message).toContain('database.secretArn: "my-db-secret" is not a Secrets Manager secret ARN');
  });

  it('fails naming a bad alarm e-mail and too many Elastic IPs', () => {
    const text = `${minimal.replace('alarmEmail: ops@example.org', 'alarmEmail: ops')}
network:
  elasticIps:
    create: 3
`;

    const message = problemsOf(text);

    expect(message).toContain('alarmEmail: "ops" is not an e-mail address');
    expect(message).toContain('network.elasticIps');
  });

  it('fails with the YAML error when the text is not YAML', () => {
    expect(problemsOf('exports: [\n')).toMatch(/^exports\.config\.yaml: YAML: /);
  });

  it('fails when a civicrm credential lacks its two contacts', () => {
    expect(problemsOf(minimal.replace('provider: commcare', 'provider: civicrm'))).toContain(
      'credentials[0].civicrm: is missing',
    );
  });
});

describe('cron helpers', () => {
  it('accepts the Scheduler examples', () => {
    for (const cron of [
      '0 2 * * ? *',
      '30 3 ? * MON *',
      '0/15 * * * ? *',
      '0 8 ? * MON-FRI *',
      'cron(0 4 1 * ? *)',
    ]) {
      expect(cronProblem(cron)).toBeNull();
    }
  });

  it('bounds the gap between runs of daily, weekly, hourly and weekday schedules', () => {
    expect(maxRunGapSeconds('0 2 * * ? *')).toBe(86_400);
    expect(maxRunGapSeconds('30 3 ? * MON *')).toBe(7 * 86_400);
    expect(maxRunGapSeconds('0 * * * ? *')).toBe(3_600);
    expect(maxRunGapSeconds('0/15 * * * ? *')).toBe(900);
    expect(maxRunGapSeconds('0 8 ? * MON-FRI *')).toBe(3 * 86_400);
    expect(maxRunGapSeconds('0 */6 * * ? *')).toBe(6 * 3_600);
  });

  it('gives no bound for monthly schedules', () => {
    expect(maxRunGapSeconds('0 4 1 * ? *')).toBeNull();
  });
});

/** Hostile command lines: each is refused as a usage error, or with a message that says what to do. */

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateSecretCommand, DeleteSecretCommand } from '@aws-sdk/client-secrets-manager';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { calendarTime } from '../../functions/cli/run-command';
import { parseExportsConfig } from '../../functions/config/parse';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { CHAOS_KEY, CHAOS_USER } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { motoSecretsManager } from '../support/aws';
import { FORM_HEADINGS, workbook } from '../support/query-workbook';

let sandbox: RunningSandbox;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 4,
    projects: [{ name: 'usage', forms: 20, cases: 5 }],
    credentials: [{ username: CHAOS_USER, apiKey: CHAOS_KEY }],
  });
});

afterAll(async () => {
  await sandbox.close();
});

async function runWith(...flags: string[]) {
  const io = captureIO({ CCEXPORT_API_KEY: CHAOS_KEY });
  const before = sandbox.requestLog.length;
  const code = await main(
    [
      ...['--project', 'usage', '--commcare-hq', sandbox.url, '--username', CHAOS_USER],
      ...['--resource', 'form', '--output-format', 'jsonl', '--output', '/nonexistent/never', ...flags],
    ],
    io,
  );
  return { code, err: io.err(), requests: sandbox.requestLog.length - before };
}

describe('--since and --until', () => {
  for (const value of ['2024-13-45', '2023-02-29', '2024-01-01T24:00:00', '2024-04-31']) {
    it(`refuses --since ${value}, which is no date, as a usage error before any request`, async () => {
      const run = await runWith('--since', value);

      expect(run.code).toBe(2);
      expect(run.err).toContain(`--since expects a real date`);
      expect(run.err).toContain(value);
      expect(run.requests).toBe(0);
    });
  }

  it('refuses a window whose start is not before its end as a usage error, not "0 records"', async () => {
    const inverted = await runWith('--since', '2024-06-01', '--until', '2024-01-01');
    const empty = await runWith('--since', '2024-06-01T10:00:00', '--until', '2024-06-01T10:00');

    expect(inverted.code).toBe(2);
    expect(inverted.err).toMatch(/--since \(2024-06-01\) is not before --until \(2024-01-01\)/);
    expect(empty.code).toBe(2);
    expect(inverted.requests + empty.requests).toBe(0);
  });

  it('accepts real dates, leap days included', () => {
    expect(calendarTime('2024-02-29')).toBe(Date.UTC(2024, 1, 29));
    expect(calendarTime('2024-02-29T23:59:59.5')).toBe(Date.UTC(2024, 1, 29, 23, 59, 59, 500));
    expect(calendarTime('2024-02-30')).toBeNull();
  });
});

describe('commands that reach AWS without a region', () => {
  for (const command of [
    ['runs', 'households'],
    ['trigger', 'households'],
  ]) {
    it(`ccexport ${command[0]} says how to set the region instead of the SDK's bare "Region is missing"`, async () => {
      const saved = { ...process.env };
      for (const name of ['AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_PROFILE']) delete process.env[name];
      // No profile file either: the region has no source at all.
      process.env.AWS_CONFIG_FILE = '/nonexistent/aws-config';
      process.env.AWS_SHARED_CREDENTIALS_FILE = '/nonexistent/aws-credentials';
      const io = captureIO();
      try {
        const code = await main(command, io);

        expect(code).toBe(1);
        expect(io.err()).toContain('no AWS region is set');
        expect(io.err()).toContain('AWS_REGION');
      } finally {
        process.env = saved;
      }
    });
  }
});

describe('--secret-id naming a secret that cannot be read', () => {
  it('says the secret is scheduled for deletion and how to restore it, not only "(InvalidRequestException)"', async () => {
    const endpoint = inject('motoEndpoint');
    const secrets = motoSecretsManager(endpoint);
    const name = `doomed-${process.pid}`;
    await secrets.send(
      new CreateSecretCommand({
        Name: name,
        SecretString: JSON.stringify({ username: CHAOS_USER, key: CHAOS_KEY }),
      }),
    );
    await secrets.send(new DeleteSecretCommand({ SecretId: name, RecoveryWindowInDays: 7 }));
    const saved = { ...process.env };
    Object.assign(process.env, {
      AWS_ENDPOINT_URL_SECRETS_MANAGER: endpoint,
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_REGION: 'us-east-1',
    });
    const io = captureIO();
    try {
      const code = await main(
        [
          ...['--project', 'usage', '--commcare-hq', sandbox.url, '--secret-id', name],
          ...['--resource', 'form', '--output-format', 'jsonl', '--output', '/nonexistent/never'],
        ],
        io,
      );

      expect(code).toBe(1);
      expect(io.err()).toContain(`could not read secret "${name}"`);
      expect(io.err()).toMatch(/InvalidRequestException: .*deletion/);
      expect(io.err()).toContain(`aws secretsmanager restore-secret --secret-id ${name}`);
      expect(io.err()).not.toContain(CHAOS_KEY);
    } finally {
      process.env = saved;
    }
  });
});

describe('a config file with a YAML alias bomb', () => {
  it('is a ConfigError that names the file, not a ReferenceError', () => {
    let yaml = 'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n';
    let previous = 'a';
    for (const name of ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i']) {
      yaml += `${name}: &${name} [${Array.from({ length: 9 }, () => `*${previous}`).join(', ')}]\n`;
      previous = name;
    }

    expect(() => parseExportsConfig(yaml, 'bomb.config.yaml')).toThrow(
      expect.objectContaining({
        name: 'ConfigError',
        message: expect.stringMatching(/^bomb\.config\.yaml: YAML: .*alias/),
      }),
    );
  });
});

describe('a query sheet with only its header row', () => {
  it('says what is missing (the Data Source in row 2 and the Fields), not that the column is missing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ccexport-header-only-'));
    const file = join(dir, 'header-only.xlsx');
    writeFileSync(file, await workbook([{ name: 'Forms', rows: [FORM_HEADINGS] }]));
    const io = captureIO();

    const code = await main(['validate-query', file], io);

    expect(code).toBe(1);
    expect(io.err()).toContain('"Forms": Ignoring sheet: it has only its header row');
    expect(io.err()).toContain('"Data Source" in row 2');
    expect(io.err()).not.toContain('it has no "Data Source" column');
  });
});

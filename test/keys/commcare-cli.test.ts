import { randomUUID } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { CreateSecretCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { runKeysCommand } from '../../functions/cli/keys';
import { commcareProvider } from '../../functions/keys/providers';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { motoSecretsManager } from '../support/aws';
import { baseDoc, captureOutput, drivingClient, readCurrent, recordingLog, rotate, stages } from './fixtures';

const NOW = new Date('2026-01-24T12:00:00Z');
const now = () => NOW;
const USER = 'exporter@example.org';
const OLD_KEY = 'hq-january-key-000000000000';
const NEW_KEY = 'hq-february-key-11111111111';
let sm: SecretsManagerClient;
const sandboxes: RunningSandbox[] = [];

beforeAll(() => {
  sm = motoSecretsManager(inject('motoEndpoint'));
});
afterEach(async () => {
  await Promise.all(sandboxes.splice(0).map((s) => s.close()));
});

async function setup() {
  // The person has already created February's key in HQ; January's is still active.
  const hq = await startSandbox({
    projects: [{ name: 'demo', forms: 20, cases: 5 }],
    credentials: [
      { username: USER, apiKey: OLD_KEY, domain: 'demo' },
      { username: USER, apiKey: NEW_KEY, domain: 'demo' },
    ],
  });
  sandboxes.push(hq);
  const name = `hq-${randomUUID().slice(0, 8)}`;
  await sm.send(
    new CreateSecretCommand({
      Name: `ccexport/credentials/${name}`,
      SecretString: JSON.stringify(
        baseDoc('commcare', hq.url, OLD_KEY, { options: { allowListIps: ['203.0.113.10'] } }),
      ),
    }),
  );
  return { hq, name, id: `ccexport/credentials/${name}` };
}

function io(input: string, isTTY = false) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: string[] = [];
  stdout.on('data', (c) => out.push(String(c)));
  stderr.on('data', (c) => out.push(String(c)));
  return { io: { stdin: Readable.from([input]), stdout, stderr, isTTY }, text: () => out.join('') };
}

describe('CommCare HQ assisted rotation', () => {
  it('fails a scheduled rotation with no submitted key and leaves the current key and no pending', async () => {
    const { id } = await setup();

    await expect(rotate({ sm, now }, id)).rejects.toThrow(
      /no key for 2026-02 has been submitted: create "det-2026-02"/,
    );

    expect((await readCurrent(sm, id)).key).toBe(OLD_KEY);
    for (const v of Object.values(await stages(sm, id))) expect(v).not.toContain('AWSPENDING');
  });

  it('takes a key from stdin, tests it against HQ and promotes it, with expiry at the end of March', async () => {
    const { hq, name, id } = await setup();
    const client = drivingClient({ sm, now });
    const t = io(`${NEW_KEY}\n`);

    const code = await runKeysCommand(['keys', 'submit', name], t.io, { secretsManager: client, now });

    expect(code).toBe(0);
    const current = await readCurrent(sm, id);
    expect(current).toMatchObject({
      key: NEW_KEY,
      keyName: 'det-2026-02',
      expiresAt: '2026-04-01T00:00:00.000Z',
    });
    expect(current.previous).toEqual({ keyName: 'det-2026-01' });
    expect(hq.requestLog.some((r) => r.path === '/api/user_domains/v1/')).toBe(true);
    expect(hq.requestLog.some((r) => r.path === '/a/demo/api/form/v1/' && r.query.limit?.[0] === '1')).toBe(
      true,
    );
    await commcareProvider(current).test(OLD_KEY);
    expect(t.text()).not.toContain(NEW_KEY);
  });

  it('makes the scheduled rotation after a submission a no-op', async () => {
    const { name, id } = await setup();
    await runKeysCommand(['submit', name], io(`${NEW_KEY}\n`).io, {
      secretsManager: drivingClient({ sm, now }),
      now,
    });

    await rotate({ sm, now }, id);

    expect((await readCurrent(sm, id)).key).toBe(NEW_KEY);
  });

  it('keeps the old key when the submitted key fails its test, and shows the submission in status', async () => {
    const { name, id } = await setup();
    const client = drivingClient({ sm, now });

    const submit = io('not-a-key-hq-knows-000\n');
    const code = await runKeysCommand(['submit', name], submit.io, { secretsManager: client, now });
    const status = io('');
    await runKeysCommand(['status', name], status.io, { secretsManager: client, now });

    expect(code).toBe(1);
    expect(submit.text()).toMatch(
      /the key was not taken: det-2026-02: .*rejected: GET \/api\/user_domains\/v1\/ answered HTTP 401 .*allow-list/,
    );
    expect((await readCurrent(sm, id)).key).toBe(OLD_KEY);
    expect(status.text()).toMatch(/current key: +det-2026-01/);
    expect(status.text()).toMatch(/last submitted: \S+ rejected: det-2026-02: KeyTestError: .*HTTP 401/);
    expect(status.text()).not.toContain(OLD_KEY);
  });

  it('reads the key from a TTY without echoing it', async () => {
    const { name, id } = await setup();
    const stdin = new PassThrough();
    const t = io('', true);
    const run = runKeysCommand(
      ['submit', name],
      { ...t.io, stdin },
      { secretsManager: drivingClient({ sm, now }), now },
    );

    stdin.write(`${NEW_KEY}\r`);
    const code = await run;

    expect(code).toBe(0);
    expect((await readCurrent(sm, id)).key).toBe(NEW_KEY);
    expect(t.text()).toContain('input is hidden');
    expect(t.text()).not.toContain(NEW_KEY);
  });

  it('fails when a key is given on the command line, without echoing it', async () => {
    const { name, id } = await setup();
    for (const argv of [
      ['submit', name, NEW_KEY],
      ['submit', name, `--key=${NEW_KEY}`],
      ['submit', name, '--api-key', NEW_KEY],
    ]) {
      const t = io('');

      const code = await runKeysCommand(argv, t.io, { secretsManager: sm, now });

      expect(code).toBe(2);
      expect(t.text()).toMatch(/refusing/);
      expect(t.text()).not.toContain(NEW_KEY);
    }
    expect((await readCurrent(sm, id)).key).toBe(OLD_KEY);
  });

  it('fails to submit a key under the current key name (names are never reused)', async () => {
    const { name } = await setup();
    const t = io(`${NEW_KEY}\n`);

    const code = await runKeysCommand(['submit', name, '--name', 'det-2026-01'], t.io, {
      secretsManager: sm,
      now,
    });

    expect(code).toBe(2);
    expect(t.text()).toMatch(/is the current key's name; HQ refuses a name twice/);
  });

  it('generates strong alphanumeric keys and prints usage for unknown commands', async () => {
    const a = io('');
    const b = io('');
    const c = io('');

    expect(await runKeysCommand(['generate'], a.io, { secretsManager: sm })).toBe(0);
    await runKeysCommand(['generate'], b.io, { secretsManager: sm });
    expect(await runKeysCommand(['frobnicate'], c.io, { secretsManager: sm })).toBe(2);

    expect(a.text().trim()).toMatch(/^[A-Za-z0-9]{43}$/);
    expect(a.text()).not.toBe(b.text());
    expect(c.text()).toMatch(/usage:/);
  });

  it('never prints the keys anywhere during submit, status and a failed rotation', async () => {
    const { name, id } = await setup();
    const log = recordingLog();
    const t = io(`${NEW_KEY}\n`);

    const { output } = await captureOutput(async () => {
      await rotate({ sm, now, log }, id).catch(() => undefined);
      await runKeysCommand(['submit', name], t.io, { secretsManager: drivingClient({ sm, now, log }), now });
      await runKeysCommand(['status', name], t.io, { secretsManager: sm, now });
    });

    const everything = [output, t.text(), ...log.lines].join('\n');
    expect(everything).toContain('det-2026-02');
    expect(everything).not.toContain(NEW_KEY);
    expect(everything).not.toContain(OLD_KEY);
  });
});

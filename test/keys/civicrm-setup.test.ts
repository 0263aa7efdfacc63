/**
 * docs/keys/civicrm.md, "What a person does", followed as written: a freshly deployed secret (the
 * placeholder CloudFormation creates), the first key put on contact A by hand and submitted with
 * `ccexport keys submit <credential> --key-id <A>`, then the monthly rotations with nobody.
 */
import { randomUUID } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { CreateSecretCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { runKeysCommand } from '../../functions/cli/keys';
import { type CiviCrmSecret, PLACEHOLDER_SECRET, parseCredentialSettings } from '../../functions/keys/secret';
import { motoSecretsManager } from '../support/aws';
import { startCiviCrmServer } from '../support/providers/civicrm';
import type { RunningServer } from '../support/providers/common';
import { drivingClient, readCurrent, rotate } from './fixtures';

const FIRST_KEY = 'firstKeyPutOnContactA00000000000000';
const SITE_KEY = 'theCiviCrmSiteKey0000000000';
let sm: SecretsManagerClient;
const servers: RunningServer[] = [];

beforeAll(() => {
  sm = motoSecretsManager(inject('motoEndpoint'));
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

function io(input: string) {
  const out: string[] = [];
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.on('data', (c) => out.push(String(c)));
  stderr.on('data', (c) => out.push(String(c)));
  return { io: { stdin: Readable.from([input]), stdout, stderr, isTTY: false }, text: () => out.join('') };
}

async function deployed(guard: 'permission' | 'site key' = 'permission') {
  const perms = guard === 'permission' ? ['edit api keys', 'authenticate with api key'] : ['edit api keys'];
  const server = await startCiviCrmServer({
    ...(guard === 'site key' ? { siteKey: SITE_KEY } : {}),
    contacts: [
      { id: 100, display_name: 'Exporter A', api_key: FIRST_KEY, permissions: perms },
      { id: 101, display_name: 'Exporter B', api_key: null, permissions: perms },
    ],
  });
  servers.push(server);
  const name = `civi-${randomUUID().slice(0, 8)}`;
  await sm.send(
    new CreateSecretCommand({ Name: `ccexport/credentials/${name}`, SecretString: PLACEHOLDER_SECRET }),
  );
  const settings = parseCredentialSettings(
    JSON.stringify({
      provider: 'civicrm',
      baseUrl: server.url,
      username: 'exporter',
      projects: ['crm'],
      policy: { namePrefix: name },
      options: { contactIds: { a: 100, b: 101 } },
    }),
    'CREDENTIAL_SETTINGS',
  );
  return { server, name, id: `ccexport/credentials/${name}`, settings };
}

describe('CiviCRM first key, as docs/keys/civicrm.md says', () => {
  it('takes the first key on contact A, then rotates to B and back without touching the key in use', async () => {
    const { server, name, id, settings } = await deployed();
    let now = new Date('2026-01-10T12:00:00Z');
    const client = drivingClient({ sm, now: () => now, settings });

    const submit = io(`${FIRST_KEY}\n`);
    const code = await runKeysCommand(['submit', name, '--key-id', '100'], submit.io, {
      secretsManager: client,
      now: () => now,
    });

    expect(submit.text()).toMatch(new RegExp(`key ${name}-2026-01 passed its test`));
    expect(code).toBe(0);
    const first = (await readCurrent(sm, id)) as CiviCrmSecret;
    expect(first.options.activeContact).toBe('a');
    expect(first.providerKeyId).toBe('100');

    now = new Date('2026-01-24T12:00:00Z');
    await rotate({ sm, now: () => now, settings }, id);
    const second = (await readCurrent(sm, id)) as CiviCrmSecret;
    expect(second.providerKeyId).toBe('101');
    expect(server.contact(100)?.api_key).toBe(FIRST_KEY);
    expect(server.contact(101)?.api_key).toBe(second.key);

    now = new Date('2026-02-24T12:00:00Z');
    await rotate({ sm, now: () => now, settings }, id);
    const third = (await readCurrent(sm, id)) as CiviCrmSecret;
    expect(third.providerKeyId).toBe('100');
    expect(server.contact(101)?.api_key).toBe(second.key);
  });

  it('refuses a first key submitted for the wrong contact, and says so', async () => {
    const { name, settings } = await deployed();
    const now = new Date('2026-01-10T12:00:00Z');
    const client = drivingClient({ sm, now: () => now, settings });

    const submit = io(`${FIRST_KEY}\n`);
    const code = await runKeysCommand(['submit', name, '--key-id', '101'], submit.io, {
      secretsManager: client,
      now: () => now,
    });

    expect(code).toBe(1);
    expect(submit.text()).toMatch(/authenticates contact 100,? but it was submitted for contact 101/);
  });

  it('takes the site key with --site-key when the contacts authenticate through it', async () => {
    const { server, name, id, settings } = await deployed('site key');
    let now = new Date('2026-01-10T12:00:00Z');
    const client = drivingClient({ sm, now: () => now, settings });

    const submit = io(`${FIRST_KEY}\n${SITE_KEY}\n`);
    const code = await runKeysCommand(['submit', name, '--key-id', '100', '--site-key'], submit.io, {
      secretsManager: client,
      now: () => now,
    });
    now = new Date('2026-01-24T12:00:00Z');
    await rotate({ sm, now: () => now, settings }, id);

    expect(code).toBe(0);
    expect(submit.text()).not.toContain(SITE_KEY);
    expect(((await readCurrent(sm, id)) as CiviCrmSecret).providerKeyId).toBe('101');
    expect(server.contact(101)?.api_key).toBe((await readCurrent(sm, id)).key);
  });
});

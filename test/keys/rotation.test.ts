import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { civicrmProvider, conduceProvider, defaultProviderFactory } from '../../functions/keys/providers';
import { rotateStep } from '../../functions/keys/rotation';
import type { CiviCrmSecret } from '../../functions/keys/secret';
import { motoSecretsManager } from '../support/aws';
import { startCiviCrmServer } from '../support/providers/civicrm';
import type { RunningServer } from '../support/providers/common';
import { startConduceServer } from '../support/providers/conduce';
import {
  baseDoc,
  beginRotation,
  captureOutput,
  createCredential,
  deps,
  errorText,
  readCurrent,
  recordingLog,
  rotate,
  stages,
} from './fixtures';

const NOW = new Date('2026-01-24T12:00:00Z'); // on the rotation day (22nd with leadDays 7): key for 2026-02
const now = () => NOW;
let sm: SecretsManagerClient;
const servers: RunningServer[] = [];

beforeAll(() => {
  sm = motoSecretsManager(inject('motoEndpoint'));
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

const OLD_CONDUCE = 'conduce-old-key-0000000000000000';
const CIVI_A = 'civiKeyOfContactA0000000000000000000';
const SITE_KEY = 'site-key-0000000000';

async function conduceSetup(extraKeys: { apikey: string; description: string }[] = []) {
  const server = await startConduceServer({
    keys: [{ apikey: OLD_CONDUCE, description: 'det-2026-01' }, ...extraKeys],
  });
  servers.push(server);
  const id = await createCredential(sm, baseDoc('conduce', server.url, OLD_CONDUCE));
  return { server, id };
}

async function civiSetup() {
  const perms = ['edit api keys', 'authenticate with api key'];
  const server = await startCiviCrmServer({
    siteKey: SITE_KEY,
    contacts: [
      { id: 100, display_name: 'Exporter A', api_key: CIVI_A, permissions: perms },
      { id: 101, display_name: 'Exporter B', api_key: null, permissions: perms },
    ],
  });
  servers.push(server);
  const id = await createCredential(
    sm,
    baseDoc('civicrm', server.url, CIVI_A, {
      providerKeyId: '100',
      options: { contactIds: { a: 100, b: 101 }, activeContact: 'a', siteKey: SITE_KEY },
    }),
  );
  return { server, id };
}

describe('Conduce-style rotation', () => {
  it('rotates to a month-named key with every step run twice and creates it once', async () => {
    const { server, id } = await conduceSetup();

    await rotate({ sm, now }, id, 2);

    const current = await readCurrent(sm, id);
    expect(current.keyName).toBe('det-2026-02');
    expect(current.previous).toEqual({ keyName: 'det-2026-01' });
    expect(current.issued).toEqual([
      { keyName: 'det-2026-02', providerKeyId: current.providerKeyId, createdAt: NOW.toISOString() },
    ]);
    expect(current.providerKeyId).toMatch(/^sha256:[0-9a-f]{16}$/);
    expect(server.createdCount()).toBe(1);
    expect(server.descriptions()).toEqual(['det-2026-01', expect.stringMatching(/^det-2026-02 ccexport:/)]);
    await conduceProvider({ baseUrl: server.url, key: current.key }).test(current.key);
    await conduceProvider({ baseUrl: server.url, key: current.key }).test(OLD_CONDUCE);
    const s = Object.values(await stages(sm, id));
    expect(s).toContainEqual(['AWSPREVIOUS']);
    expect(s.filter((v) => v.includes('AWSCURRENT'))).toHaveLength(1);
  });

  it('never adopts a key someone else created under the same name', async () => {
    const { server, id } = await conduceSetup([
      { apikey: 'someone-elses-feb-key-0000', description: 'det-2026-02' },
    ]);

    await rotate({ sm, now }, id);

    expect((await readCurrent(sm, id)).key).not.toBe('someone-elses-feb-key-0000');
    expect(server.createdCount()).toBe(1);
  });

  it('makes a second rotation in the same month a no-op that keeps the key', async () => {
    const { server, id } = await conduceSetup();
    await rotate({ sm, now }, id);
    const first = await readCurrent(sm, id);

    await rotate({ sm, now }, id);

    expect(await readCurrent(sm, id)).toEqual(first);
    expect(server.createdCount()).toBe(1);
  });

  it('fails a step whose token is not pending, and names the version', async () => {
    const { id } = await conduceSetup();
    await beginRotation(sm, id, '11111111-1111-4111-8111-111111111111');

    const run = rotateStep(
      { SecretId: id, ClientRequestToken: '22222222-2222-4222-8222-222222222222', Step: 'createSecret' },
      deps({ sm, now }),
    );

    await expect(run).rejects.toThrow(/has no version 22222222/);
  });
});

describe('CiviCRM rotation', () => {
  it('puts a generated alphanumeric key on the other contact and keeps the old one valid', async () => {
    const { server, id } = await civiSetup();

    await rotate({ sm, now }, id, 2);

    const current = (await readCurrent(sm, id)) as CiviCrmSecret;
    expect(current.keyName).toBe('det-2026-02');
    expect(current.options.activeContact).toBe('b');
    expect(current.providerKeyId).toBe('101');
    expect(current.previous).toEqual({ keyName: 'det-2026-01', providerKeyId: '100' });
    expect(current.key).toMatch(/^[A-Za-z0-9]{43,}$/);
    expect(server.contact(101)?.api_key).toBe(current.key);
    expect(server.contact(100)?.api_key).toBe(CIVI_A);
    await civicrmProvider(current).test(current.key);
    await civicrmProvider(current).test(CIVI_A);
  });

  it('keeps contact A working when the test of the new key fails, then succeeds', async () => {
    const { server, id } = await civiSetup();
    server.failNext('/civicrm/authx/id', 401, 2); // the set step's own check, then the test

    await expect(rotate({ sm, now }, id)).rejects.toThrow(/testSecret/);
    expect((await readCurrent(sm, id)).key).toBe(CIVI_A);

    await rotate({ sm, now }, id);
    expect(((await readCurrent(sm, id)) as CiviCrmSecret).options.activeContact).toBe('b');
  });
});

describe('exports during rotation', () => {
  it('never fail while the key rotates, for Conduce and CiviCRM', async () => {
    for (const setup of [conduceSetup, civiSetup]) {
      const { id } = await setup();
      let running = true;
      let calls = 0;
      const failures: unknown[] = [];
      const exporter = (async () => {
        while (running) {
          try {
            const secret = await readCurrent(sm, id);
            await defaultProviderFactory(secret as never).test(secret.key);
            calls += 1;
          } catch (e) {
            failures.push(e);
          }
        }
      })();

      await rotate({ sm, now }, id);
      await new Promise((r) => setTimeout(r, 50));
      running = false;
      await exporter;

      expect(failures).toEqual([]);
      expect(calls).toBeGreaterThan(1);
    }
  });
});

describe('secrecy', () => {
  it('never writes a key to output, logs or errors, even when steps fail', async () => {
    const log = recordingLog();
    const errors: unknown[] = [];
    const keys: string[] = [OLD_CONDUCE, CIVI_A, SITE_KEY];

    const { output } = await captureOutput(async () => {
      const c = await conduceSetup();
      c.server.failNext('/conduce/api/v1/apikeys/list', 401);
      await rotate({ sm, now, log }, c.id).catch((e) => errors.push(e));
      await rotate({ sm, now, log }, c.id);
      keys.push((await readCurrent(sm, c.id)).key);
      const v = await civiSetup();
      v.server.failNext('/civicrm/ajax/api4/Contact/update', 403);
      await rotate({ sm, now, log }, v.id).catch((e) => errors.push(e));
      await rotate({ sm, now, log }, v.id);
      keys.push((await readCurrent(sm, v.id)).key);
    });

    expect(errors).toHaveLength(2);
    const everything = [output, ...log.lines, ...errors.map(errorText)].join('\n');
    for (const key of keys) expect(everything).not.toContain(key);
    expect(log.lines.some((l) => l.includes('rotation step failed'))).toBe(true);
  });
});

/**
 * The rotation as Secrets Manager runs it: moto keeps the versions and stages, the local provider
 * servers play Conduce, CiviCRM and CommCare HQ, and the test bed (fixtures.serviceRotation) invokes
 * the four steps and, after a failure, the whole sequence again with the same ClientRequestToken.
 * One transient failure or one crash, wherever it falls, must still end the month with exactly one
 * new key in use.
 */
import { randomUUID } from 'node:crypto';
import {
  PutSecretValueCommand,
  type SecretsManagerClient,
  UpdateSecretVersionStageCommand,
} from '@aws-sdk/client-secrets-manager';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { type RotationStep, rotateStep, STEPS } from '../../functions/keys/rotation';
import { type CiviCrmSecret, PLACEHOLDER_SECRET, parseCredentialSettings } from '../../functions/keys/secret';
import { motoSecretsManager } from '../support/aws';
import { startCiviCrmServer } from '../support/providers/civicrm';
import type { RunningServer } from '../support/providers/common';
import { startConduceServer } from '../support/providers/conduce';
import { startHqKeyServer } from '../support/providers/hq';
import {
  baseDoc,
  beginRotation,
  createCredential,
  deps,
  readCurrent,
  type StepHook,
  serviceRotation,
  stages,
} from './fixtures';

const NOW = new Date('2026-01-24T12:00:00Z'); // after the rotation day (22nd): the key for 2026-02
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
const HQ_OLD = 'hq-key-of-january-000000';
const HQ_NEW = 'hq-key-of-february-00000';

async function conduce() {
  const server = await startConduceServer({ keys: [{ apikey: OLD_CONDUCE, description: 'det-2026-01' }] });
  servers.push(server);
  const id = await createCredential(sm, baseDoc('conduce', server.url, OLD_CONDUCE));
  return { server, id, newKeys: () => server.createdCount() };
}

async function civicrm() {
  const perms = ['edit api keys', 'authenticate with api key'];
  const server = await startCiviCrmServer({
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
      options: { contactIds: { a: 100, b: 101 }, activeContact: 'a' },
    }),
  );
  return { server, id, newKeys: () => server.keyUpdates() };
}

async function commcare() {
  const server = await startHqKeyServer({
    projects: ['demo'],
    credentials: [
      { username: 'exporter@example.org', apiKey: HQ_OLD },
      { username: 'exporter@example.org', apiKey: HQ_NEW },
    ],
  });
  servers.push(server);
  const id = await createCredential(sm, baseDoc('commcare', server.url, HQ_OLD));
  // What `ccexport keys submit` stores: the key only, under its own label.
  await sm.send(
    new PutSecretValueCommand({
      SecretId: id,
      ClientRequestToken: randomUUID(),
      VersionStages: ['CCEXPORT_SUBMITTED'],
      SecretString: JSON.stringify({ kind: 'submission', key: HQ_NEW, submittedAt: NOW.toISOString() }),
    }),
  );
  return { server, id, newKeys: () => 1 };
}

/** A client whose first UpdateSecretVersionStage that moves AWSCURRENT answers like a Secrets Manager 500. */
function finishFailsOnce(client: SecretsManagerClient): SecretsManagerClient {
  let failed = false;
  const proxy = Object.create(client) as SecretsManagerClient;
  // biome-ignore lint/suspicious/noExplicitAny: overriding the overloaded send() for one command
  (proxy as any).send = async (command: any) => {
    if (!failed && command instanceof UpdateSecretVersionStageCommand && command.input.MoveToVersionId) {
      failed = true;
      throw Object.assign(new Error('We encountered an internal error. Please try again.'), {
        name: 'InternalServiceError',
        $metadata: { httpStatusCode: 500 },
      });
    }
    return await client.send(command);
  };
  return proxy;
}

/** The first attempt of `step` meets `inject` before it runs. */
function onFirst(step: RotationStep, inject: () => void): StepHook {
  return (s, attempt, phase) => {
    if (s === step && attempt === 1 && phase === 'before') inject();
  };
}

async function expectMonthDone(id: string, newKeys: () => number, keyName = 'det-2026-02') {
  expect((await readCurrent(sm, id)).keyName).toBe(keyName);
  expect(newKeys()).toBe(1);
  for (const v of Object.values(await stages(sm, id))) {
    expect(v.includes('AWSPENDING') && !v.includes('AWSCURRENT')).toBe(false);
  }
}

describe('one transient provider failure, retried by the service with the same token', () => {
  type Setup = () => Promise<{ server: RunningServer; id: string; newKeys: () => number }>;
  const cases: { name: string; setup: Setup; step: RotationStep; path?: string }[] = [
    { name: 'Conduce', setup: conduce, step: 'createSecret', path: '/conduce/api/v1/apikeys/create' },
    { name: 'Conduce', setup: conduce, step: 'testSecret', path: '/conduce/api/v1/apikeys/list' },
    { name: 'Conduce', setup: conduce, step: 'finishSecret' },
    { name: 'CiviCRM', setup: civicrm, step: 'setSecret', path: '/civicrm/ajax/api4/Contact/update' },
    { name: 'CiviCRM', setup: civicrm, step: 'testSecret', path: '/civicrm/authx/id' },
    { name: 'CiviCRM', setup: civicrm, step: 'finishSecret' },
    { name: 'CommCare', setup: commcare, step: 'testSecret', path: '/api/user_domains/v1/' },
    { name: 'CommCare', setup: commcare, step: 'finishSecret' },
  ];
  for (const c of cases) {
    it(`completes the month with one new key after a ${c.path ? '503' : 'Secrets Manager 500'} in ${c.name} ${c.step}`, async () => {
      const { server, id, newKeys } = await c.setup();
      const client = c.path ? sm : finishFailsOnce(sm);
      const hook = c.path ? onFirst(c.step, () => server.failNext(c.path as string, 503)) : undefined;

      const run = await serviceRotation({ sm: client, now }, id, { ...(hook ? { hook } : {}) });

      expect(run.failures).toHaveLength(1);
      await expectMonthDone(id, newKeys);
    });
  }
});

describe('a crash between two steps, retried by the service with the same token', () => {
  for (const [name, setup] of [
    ['Conduce', conduce],
    ['CiviCRM', civicrm],
    ['CommCare', commcare],
  ] as const) {
    for (const step of STEPS) {
      it(`completes the ${name} month with one new key when the Lambda dies right after ${step}`, async () => {
        const { id, newKeys } = await setup();
        const hook: StepHook = (s, attempt, phase) => {
          if (s === step && attempt === 1 && phase === 'after')
            throw new Error('Task timed out after 120.00 seconds');
        };

        const run = await serviceRotation({ sm, now }, id, { hook });

        expect(run.failures).toHaveLength(1);
        await expectMonthDone(id, newKeys);
      });
    }
  }
});

describe('terminal failures', () => {
  it('abandons at once when the new key is rejected, and revokes the key it had created', async () => {
    const { server, id } = await conduce();
    const hook = onFirst('testSecret', () => server.failNext('/conduce/api/v1/apikeys/list', 401));

    await expect(serviceRotation({ sm, now }, id, { hook, attempts: 1 })).rejects.toThrow(/rejected.*401/);

    expect((await readCurrent(sm, id)).key).toBe(OLD_CONDUCE);
    for (const v of Object.values(await stages(sm, id))) expect(v).not.toContain('AWSPENDING');
    expect(server.descriptions()).toEqual(['det-2026-01']);
  });

  it('keeps CiviCRM contact A in use when the key set on B is rejected, and scrambles B', async () => {
    const { server, id } = await civicrm();
    const hook = onFirst('testSecret', () => server.failNext('/civicrm/authx/id', 401));

    await expect(serviceRotation({ sm, now }, id, { hook, attempts: 1 })).rejects.toThrow(/testSecret/);

    const current = (await readCurrent(sm, id)) as CiviCrmSecret;
    expect(current.key).toBe(CIVI_A);
    expect(server.contact(100)?.api_key).toBe(CIVI_A);
    expect(server.keyUpdates()).toBe(2); // the new key on B, then a value nobody keeps
  });
});

describe('first deploy', () => {
  it('passes the configuration test Secrets Manager runs on the empty placeholder', async () => {
    // CloudFormation creates the secret with the placeholder; with RotateImmediately=false the service
    // then runs testSecret alone on an AWSPENDING copy of the current value.
    const id = await createCredential(sm, JSON.parse(PLACEHOLDER_SECRET));
    const token = randomUUID();
    await beginRotation(sm, id, token);
    await sm.send(
      new PutSecretValueCommand({
        SecretId: id,
        ClientRequestToken: token,
        VersionStages: ['AWSPENDING'],
        SecretString: PLACEHOLDER_SECRET,
      }),
    );
    const settings = parseCredentialSettings(
      JSON.stringify({
        provider: 'commcare',
        baseUrl: 'http://127.0.0.1:9',
        username: 'u@example.org',
        projects: ['demo'],
      }),
      'CREDENTIAL_SETTINGS',
    );

    const outcome = await rotateStep(
      { SecretId: id, ClientRequestToken: token, Step: 'testSecret' },
      deps({ sm, now, settings }),
    );

    expect(outcome).toBe('no key yet: nothing to test');
  });
});

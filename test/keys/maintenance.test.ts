import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { UpdateSecretCommand } from '@aws-sdk/client-secrets-manager';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { runMaintenance } from '../../functions/keys/maintenance';
import type { Notifier } from '../../functions/keys/notify';
import { defaultProviderFactory } from '../../functions/keys/providers';
import { fingerprint } from '../../functions/keys/providers/conduce';
import { PLACEHOLDER_SECRET } from '../../functions/keys/secret';
import { recordSuccessfulExport } from '../../functions/keys/usage';
import { motoSecretsManager } from '../support/aws';
import type { RunningServer } from '../support/providers/common';
import { startConduceServer } from '../support/providers/conduce';
import { startHqKeyServer } from '../support/providers/hq';
import { baseDoc, createCredential, readCurrent, recordingLog, rotate } from './fixtures';

let sm: SecretsManagerClient;
const servers: RunningServer[] = [];
beforeAll(() => {
  sm = motoSecretsManager(inject('motoEndpoint'));
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

function recorder(): Notifier & { sent: { subject: string; body: string }[] } {
  const sent: { subject: string; body: string }[] = [];
  return {
    sent,
    async publish(m) {
      sent.push(m);
    },
  };
}

const maintain = (id: string, at: string, notifier = recorder()) =>
  runMaintenance(id, {
    sm,
    providers: defaultProviderFactory,
    notifier,
    now: () => new Date(at),
    log: recordingLog(),
  });

describe('grace period', () => {
  it('revokes the previous Conduce key only after the grace period and an export with the new key', async () => {
    const server = await startConduceServer({
      keys: [{ apikey: 'old-conduce-key-000000', description: 'det-2026-01' }],
    });
    servers.push(server);
    const id = await createCredential(
      sm,
      baseDoc('conduce', server.url, 'old-conduce-key-000000', {
        providerKeyId: fingerprint('old-conduce-key-000000'),
      }),
    );
    await rotate({ sm, now: () => new Date('2026-01-24T12:00:00Z') }, id);
    const current = await readCurrent(sm, id);

    const early = await maintain(id, '2026-01-30T09:00:00Z');
    const noExport = await maintain(id, '2026-02-02T09:00:00Z');
    await recordSuccessfulExport(sm, id, current.keyName, new Date('2026-02-02T10:00:00Z'));
    const done = await maintain(id, '2026-02-03T09:00:00Z');
    const again = await maintain(id, '2026-02-04T09:00:00Z');

    expect(early).toEqual({});
    expect(noExport).toEqual({ waitingForExport: true });
    expect(done).toEqual({ retired: 'det-2026-01' });
    expect(again).toEqual({});
    expect(server.descriptions()).toEqual([expect.stringMatching(/^det-2026-02 ccexport:/)]);
  });

  it('revokes keys this credential created in failed months, and never a key it did not create', async () => {
    const server = await startConduceServer({
      keys: [
        { apikey: 'key-in-use-0000000000', description: 'det-2026-01' },
        { apikey: 'failed-december-key-00', description: 'det-2025-12 ccexport:1234abcd' },
        { apikey: 'someone-elses-key-0000', description: 'det-2025-12' },
      ],
    });
    servers.push(server);
    const id = await createCredential(
      sm,
      baseDoc('conduce', server.url, 'key-in-use-0000000000', {
        providerKeyId: fingerprint('key-in-use-0000000000'),
        issued: [
          {
            keyName: 'det-2025-12',
            providerKeyId: fingerprint('failed-december-key-00'),
            createdAt: '2025-12-22T12:00:00Z',
          },
          {
            keyName: 'det-2026-01',
            providerKeyId: fingerprint('key-in-use-0000000000'),
            createdAt: '2025-12-23T12:00:00Z',
          },
        ],
      }),
    );

    const first = await maintain(id, '2026-01-05T09:00:00Z');
    const second = await maintain(id, '2026-01-06T09:00:00Z');

    expect(first).toEqual({ revokedStale: ['det-2025-12'] });
    expect(second).toEqual({});
    expect(server.descriptions()).toEqual(['det-2026-01', 'det-2025-12']);
  });
});

describe('upgrade from a stack that kept the settings in the secret', () => {
  it('puts the key back when the first deploy of this version wrote the placeholder over it', async () => {
    const server = await startConduceServer({
      keys: [{ apikey: 'live-conduce-key-000000', description: 'det-2026-01' }],
    });
    servers.push(server);
    const id = await createCredential(sm, baseDoc('conduce', server.url, 'live-conduce-key-000000'));
    // What CloudFormation does with a changed SecretString: a new version that takes AWSCURRENT.
    await sm.send(new UpdateSecretCommand({ SecretId: id, SecretString: PLACEHOLDER_SECRET }));

    const result = await maintain(id, '2026-01-05T09:00:00Z');

    expect(result).toMatchObject({ restored: 'det-2026-01' });
    expect((await readCurrent(sm, id)).key).toBe('live-conduce-key-000000');
  });
});

describe('CommCare HQ reminders', () => {
  async function hqCredential() {
    const hq = await startHqKeyServer({
      credentials: [{ username: 'exporter@example.org', apiKey: 'hq-old-key-0000' }],
      projects: ['demo'],
    });
    servers.push(hq);
    const id = await createCredential(
      sm,
      baseDoc('commcare', hq.url, 'hq-old-key-0000', {
        expiresAt: '2026-03-01T00:00:00.000Z',
        options: { allowListIps: ['203.0.113.10', '203.0.113.11'] },
      }),
    );
    return { hq, id };
  }

  it('sends no reminder before the reminder window opens', async () => {
    const { id } = await hqCredential();
    const notifier = recorder();

    const result = await maintain(id, '2026-01-10T09:00:00Z', notifier);

    expect(result.reminder).toBeUndefined();
    expect(notifier.sent).toEqual([]);
  });

  it('tells the owner exactly what to create, and escalates while no key arrives', async () => {
    const { id } = await hqCredential();
    const first = recorder();
    const later = recorder();

    const a = await maintain(id, '2026-01-18T09:00:00Z', first);
    const b = await maintain(id, '2026-01-28T09:00:00Z', later);

    expect(a.reminder).toBe('reminder');
    expect(b.reminder).toBe('overdue');
    const body = first.sent[0]?.body ?? '';
    expect(first.sent[0]?.subject).toContain('det-2026-02');
    expect(body).toContain('named exactly: det-2026-02');
    expect(body).toContain('the project "demo"');
    expect(body).toContain('203.0.113.10, 203.0.113.11');
    expect(body).toContain('31 March 2026');
    expect(body).toContain('ccexport keys submit');
    expect(body).not.toContain('hq-old-key-0000');
    expect(later.sent[0]?.subject).toContain('Overdue');
  });

  it('asks the owner to deactivate the old key in HQ once, after the grace period and an export', async () => {
    const { hq, id } = await hqCredential();
    hq.addKey({ username: 'exporter@example.org', apiKey: 'hq-new-key-1111' });
    const doc = { ...(await readCurrent(sm, id)) };
    // The February key is current since 24 January (as after "keys submit").
    const { PutSecretValueCommand } = await import('@aws-sdk/client-secrets-manager');
    await sm.send(
      new PutSecretValueCommand({
        SecretId: id,
        SecretString: JSON.stringify({
          ...doc,
          key: 'hq-new-key-1111',
          keyName: 'det-2026-02',
          createdAt: '2026-01-24T12:00:00.000Z',
          expiresAt: '2026-04-01T00:00:00.000Z',
          previous: { keyName: 'det-2026-01' },
        }),
        VersionStages: ['AWSCURRENT'],
      }),
    );
    await recordSuccessfulExport(sm, id, 'det-2026-02', new Date('2026-01-25T00:00:00Z'));
    const notifier = recorder();

    const first = await maintain(id, '2026-02-01T09:00:00Z', notifier);
    const second = await maintain(id, '2026-02-02T09:00:00Z', notifier);

    expect(first.retired).toBe('det-2026-01');
    expect(second.retired).toBeUndefined();
    expect(notifier.sent).toHaveLength(1);
    expect(notifier.sent[0]?.subject).toContain('Deactivate old CommCare API key det-2026-01');
  });
});

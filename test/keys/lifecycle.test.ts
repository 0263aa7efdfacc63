/**
 * The month-to-month life of a credential: stale state left by people and by failed months, the
 * emergency rotation, and a whole year simulated month by month with failures in three months.
 */
import { randomUUID } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import {
  CreateSecretCommand,
  DescribeSecretCommand,
  type SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { runKeysCommand } from '../../functions/cli/keys';
import { runMaintenance } from '../../functions/keys/maintenance';
import type { Notifier } from '../../functions/keys/notify';
import { defaultProviderFactory } from '../../functions/keys/providers';
import { fingerprint } from '../../functions/keys/providers/conduce';
import type { RotationStep } from '../../functions/keys/rotation';
import { type CiviCrmSecret, type CredentialSecret, PLACEHOLDER_SECRET } from '../../functions/keys/secret';
import { recordSuccessfulExport } from '../../functions/keys/usage';
import { motoSecretsManager } from '../support/aws';
import { startCiviCrmServer } from '../support/providers/civicrm';
import type { RunningServer } from '../support/providers/common';
import { startConduceServer } from '../support/providers/conduce';
import { startHqKeyServer } from '../support/providers/hq';
import {
  baseDoc,
  createCredential,
  drivingClient,
  readCurrent,
  recordingLog,
  rotate,
  type StepHook,
  serviceRotation,
  stages,
} from './fixtures';

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

function recorder(): Notifier & { sent: { subject: string; body: string }[] } {
  const sent: { subject: string; body: string }[] = [];
  return {
    sent,
    async publish(m) {
      sent.push(m);
    },
  };
}

const CIVI_A = 'civiKeyOfContactA0000000000000000000';
const CIVI_B_OLD = 'civiKeyOfContactB0000000000000000000';

describe('stale state', () => {
  it('never writes to the contact whose key is in use, even when activeContact says otherwise', async () => {
    // The state `keys submit --key-id` used to leave: the key is A's, activeContact still says "b".
    const perms = ['edit api keys', 'authenticate with api key'];
    const server = await startCiviCrmServer({
      contacts: [
        { id: 100, display_name: 'A', api_key: CIVI_A, permissions: perms },
        { id: 101, display_name: 'B', api_key: CIVI_B_OLD, permissions: perms },
      ],
    });
    servers.push(server);
    const id = await createCredential(
      sm,
      baseDoc('civicrm', server.url, CIVI_A, {
        providerKeyId: '100',
        options: { contactIds: { a: 100, b: 101 }, activeContact: 'b' },
      }),
    );

    await rotate({ sm, now: () => new Date('2026-01-24T12:00:00Z') }, id);

    const current = (await readCurrent(sm, id)) as CiviCrmSecret;
    expect(server.contact(100)?.api_key).toBe(CIVI_A);
    expect(current.providerKeyId).toBe('101');
    expect(server.contact(101)?.api_key).toBe(current.key);
  });

  it('ignores a submission that already failed when the scheduled run comes', async () => {
    const hq = await startHqKeyServer({
      projects: ['demo'],
      credentials: [{ username: 'exporter@example.org', apiKey: 'hq-key-2027-01-000000' }],
    });
    servers.push(hq);
    const id = await createCredential(
      sm,
      baseDoc('commcare', hq.url, 'hq-key-2027-01-000000', { keyName: 'det-2027-01' }),
    );
    const now = () => new Date('2026-12-10T12:00:00Z');
    const client = drivingClient({ sm, now });
    const bad = io('mistyped-key-for-february\n');
    expect(
      await runKeysCommand(['submit', id, '--name', 'det-2027-02'], bad.io, { secretsManager: client, now }),
    ).toBe(1);

    const december = () => new Date('2026-12-22T12:00:00Z');
    await rotate({ sm, now: december }, id);

    expect((await readCurrent(sm, id)).keyName).toBe('det-2027-01');
    const meta = await sm.send(new DescribeSecretCommand({ SecretId: id }));
    expect(meta.Tags?.find((t) => t.Key === 'ccexport:last-rotation')?.Value).toMatch(/kept det-2027-01$/);
    for (const v of Object.values(await stages(sm, id))) expect(v).not.toContain('AWSPENDING');
  });

  it('keeps AWSCURRENT and AWSPREVIOUS where they are when a second rotation finds the month served', async () => {
    const server = await startConduceServer({
      keys: [{ apikey: 'conduce-jan-key-0000', description: 'det-2026-01' }],
    });
    servers.push(server);
    const id = await createCredential(sm, baseDoc('conduce', server.url, 'conduce-jan-key-0000'));
    const now = () => new Date('2026-01-24T12:00:00Z');
    await rotate({ sm, now }, id);
    const before = await stages(sm, id);

    await rotate({ sm, now }, id);

    const after = await stages(sm, id);
    const holder = (s: Record<string, string[]>, label: string) =>
      Object.entries(s).find(([, v]) => v.includes(label))?.[0];
    expect(holder(after, 'AWSCURRENT')).toBe(holder(before, 'AWSCURRENT'));
    expect(holder(after, 'AWSPREVIOUS')).toBe(holder(before, 'AWSPREVIOUS'));
  });
});

describe('ccexport keys rotate --now', () => {
  it('replaces a leaked Conduce key with a fresh one of a new name and revokes the leaked one', async () => {
    const leaked = 'conduce-leaked-key-000000';
    const server = await startConduceServer({ keys: [{ apikey: leaked, description: 'det-2026-01' }] });
    servers.push(server);
    const id = await createCredential(
      sm,
      baseDoc('conduce', server.url, leaked, {
        providerKeyId: fingerprint(leaked),
        createdAt: '2026-01-01T00:00:00Z',
      }),
    );
    const now = () => new Date('2026-01-10T12:00:00Z');
    const t = io('');

    const code = await runKeysCommand(['rotate', id, '--now'], t.io, {
      secretsManager: drivingClient({ sm, now }),
      now,
    });

    expect(t.text()).toMatch(/key det-2026-01-b passed its test/);
    expect(code).toBe(0);
    const current = await readCurrent(sm, id);
    expect(current.keyName).toBe('det-2026-01-b');
    expect(current.previous).toMatchObject({ keyName: 'det-2026-01', revokedAt: '2026-01-10T12:00:00.000Z' });
    expect(server.descriptions()).toEqual([expect.stringMatching(/^det-2026-01-b ccexport:/)]);
    await expect(defaultProviderFactory(current).test(leaked)).rejects.toThrow(/401/);
  });
});

describe('ccexport keys rotate --now on CommCare HQ', () => {
  it('fails with what the person must do, since HQ keys are made by hand', async () => {
    const id = await createCredential(sm, baseDoc('commcare', 'http://127.0.0.1:9', 'hq-key-0000000000'));
    const t = io('');

    const code = await runKeysCommand(['rotate', id, '--now'], t.io, {
      secretsManager: sm,
      now: () => new Date('2026-01-10T12:00:00Z'),
    });

    expect(code).toBe(2);
    expect(t.text()).toMatch(
      /create "det-2026-01-b" in HQ, run "ccexport keys submit <credential> --name det-2026-01-b"/,
    );
  });
});

describe('small things', () => {
  it('prints the usage and exits 0 for keys --help', async () => {
    const t = io('');

    const code = await runKeysCommand(['--help'], t.io, { secretsManager: sm });

    expect(code).toBe(0);
    expect(t.text()).toMatch(/usage:/);
  });

  it('says "none yet" in status before the first key', async () => {
    const name = `new-${randomUUID().slice(0, 8)}`;
    await sm.send(
      new CreateSecretCommand({ Name: `ccexport/credentials/${name}`, SecretString: PLACEHOLDER_SECRET }),
    );
    const t = io('');

    const code = await runKeysCommand(['status', name], t.io, { secretsManager: sm, now: () => new Date() });

    expect(code).toBe(0);
    expect(t.text()).toMatch(/current key: +none yet/);
    expect(t.text()).not.toMatch(/day\(s\) old/);
  });

  it('says the current Conduce key is rejected and must be resubmitted', async () => {
    const server = await startConduceServer({ keys: [] });
    servers.push(server);
    const id = await createCredential(sm, baseDoc('conduce', server.url, 'key-deleted-elsewhere-00'));

    await expect(rotate({ sm, now: () => new Date('2026-01-24T12:00:00Z') }, id)).rejects.toThrow(
      /the current key is rejected .* submit a working key with "ccexport keys submit/,
    );
  });

  it('after a failed test, reminds with a new name, the reason, and no "level" log field', async () => {
    const hq = await startHqKeyServer({
      projects: ['demo'],
      credentials: [{ username: 'exporter@example.org', apiKey: 'hq-key-2026-01-000000' }],
    });
    servers.push(hq);
    const id = await createCredential(sm, baseDoc('commcare', hq.url, 'hq-key-2026-01-000000'));
    const now = () => new Date('2026-01-20T09:00:00Z');
    await runKeysCommand(['submit', id], io('typo-in-the-key-00000\n').io, {
      secretsManager: drivingClient({ sm, now }),
      now,
    });
    const notifier = recorder();
    const log = recordingLog();

    await runMaintenance(id, { sm, providers: defaultProviderFactory, notifier, now, log });

    const body = notifier.sent[0]?.body ?? '';
    expect(body).toMatch(/The key submitted as det-2026-02 failed its test: .*HTTP 401/);
    expect(body).toContain('named exactly: det-2026-02-b');
    expect(body).toContain('--name det-2026-02-b');
    expect(log.lines.join('\n')).not.toMatch(/"level"/);
  });
});

// Twelve months of two credentials against moto: minutes on a loaded 2-core machine.
describe('a year, month by month', { timeout: 300_000 }, () => {
  it('keeps one live key per provider besides the one in its grace period, and exports never see a 401', async () => {
    const conduceKey = 'conduce-key-2026-01-000000';
    const conduce = await startConduceServer({ keys: [{ apikey: conduceKey, description: 'det-2026-01' }] });
    const perms = ['edit api keys', 'authenticate with api key'];
    const civi = await startCiviCrmServer({
      contacts: [
        { id: 100, display_name: 'A', api_key: CIVI_A, permissions: perms },
        { id: 101, display_name: 'B', api_key: null, permissions: perms },
      ],
    });
    servers.push(conduce, civi);
    const credentials = [
      {
        name: 'conduce',
        server: conduce,
        id: await createCredential(
          sm,
          baseDoc('conduce', conduce.url, conduceKey, { providerKeyId: fingerprint(conduceKey) }),
        ),
        failPath: '/conduce/api/v1/apikeys/list',
      },
      {
        name: 'civicrm',
        server: civi,
        id: await createCredential(
          sm,
          baseDoc('civicrm', civi.url, CIVI_A, {
            providerKeyId: '100',
            options: { contactIds: { a: 100, b: 101 } },
          }),
        ),
        failPath: '/civicrm/authx/id',
      },
    ];
    const exportFailures: string[] = [];
    const seen = new Map<string, Set<string>>(credentials.map((c) => [c.id, new Set<string>()]));
    /** What an export does: read AWSCURRENT, call the provider with it, record success. */
    async function exportWith(id: string, at: Date) {
      const secret = await readCurrent(sm, id);
      seen.get(id)?.add(secret.key);
      try {
        await defaultProviderFactory(secret).test(
          secret.key,
          secret.provider === 'civicrm' ? secret.providerKeyId : undefined,
        );
        await recordSuccessfulExport(sm, id, secret.keyName, at);
      } catch (e) {
        exportFailures.push(`${at.toISOString()} ${(e as Error).message}`);
      }
    }
    // Failures in three months: a 503 during testSecret (March), the new key rejected (June), the
    // Lambda dying right after setSecret (September).
    const failure = (month: number, failPath: string, server: RunningServer): StepHook | undefined => {
      if (month === 3)
        return (s, attempt, phase) =>
          void (s === 'testSecret' && attempt === 1 && phase === 'before' && server.failNext(failPath, 503));
      if (month === 6)
        return (s, attempt, phase) =>
          void (s === 'testSecret' && attempt === 1 && phase === 'before' && server.failNext(failPath, 401));
      if (month === 9)
        return (s: RotationStep, attempt, phase) => {
          if (s === 'setSecret' && attempt === 1 && phase === 'after') throw new Error('Task timed out');
        };
      return undefined;
    };

    for (let month = 1; month <= 12; month += 1) {
      const rotationDay = new Date(Date.UTC(2026, month - 1, 22, 12));
      /** Days after the rotation (negative: before it), at 09:00 UTC. */
      const at = (days: number) => new Date(Date.UTC(2026, month - 1, 22 + days, 9));
      for (const c of credentials) {
        await exportWith(c.id, at(-12));
        await runMaintenance(c.id, {
          sm,
          providers: defaultProviderFactory,
          notifier: recorder(),
          now: () => at(-12),
          log: recordingLog(),
        });
        if (c.name === 'conduce') expect(conduce.descriptions()).toHaveLength(1);
        const before = await readCurrent(sm, c.id);
        const hook = failure(month, c.failPath, c.server);
        await serviceRotation({ sm, now: () => rotationDay }, c.id, {
          ...(hook ? { hook } : {}),
          attempts: month === 6 ? 1 : 3,
        }).catch(() => undefined);
        // Not revoked early: the key of the month before still works the day after the switch.
        const after = await readCurrent(sm, c.id);
        await defaultProviderFactory(after).test(
          before.key,
          after.provider === 'civicrm' ? before.providerKeyId : undefined,
        );
        // The day after (the previous key still in its grace period), and after the grace period.
        for (const days of [1, 8]) {
          await exportWith(c.id, at(days));
          await runMaintenance(c.id, {
            sm,
            providers: defaultProviderFactory,
            notifier: recorder(),
            now: () => at(days),
            log: recordingLog(),
          });
        }
      }
    }

    // Before each rotation, only the key in use; after it, that key stays through its grace period.
    for (const c of credentials) {
      const at = new Date('2027-01-02T09:00:00Z');
      await exportWith(c.id, at);
      await runMaintenance(c.id, {
        sm,
        providers: defaultProviderFactory,
        notifier: recorder(),
        now: () => at,
        log: recordingLog(),
      });
    }

    expect(exportFailures).toEqual([]);
    // Conduce: after the last grace period, the key in use and nothing else.
    const conduceNow = (await readCurrent(sm, credentials[0]!.id)) as CredentialSecret;
    expect(conduceNow.keyName).toBe('det-2027-01');
    expect(conduce.descriptions()).toEqual([expect.stringMatching(/^det-2027-01 ccexport:/)]);
    // June's rejected key was deleted at once; no month made two keys.
    expect(conduce.createdCount()).toBe(12);
    // CiviCRM: the other contact holds nothing an export ever used once the grace period is over.
    const civiNow = (await readCurrent(sm, credentials[1]!.id)) as CiviCrmSecret;
    expect(civiNow.keyName).toBe('det-2027-01');
    const other = civiNow.providerKeyId === '100' ? 101 : 100;
    expect(seen.get(credentials[1]!.id)?.has(civi.contact(other)?.api_key ?? '')).toBe(false);
  });
});

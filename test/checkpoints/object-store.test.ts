import { mkdtempSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  ExportLease,
  type LeaseBody,
  leaseObjectKey,
  legacyLeaseObjectKey,
  ObjectCheckpointStore,
} from '../../functions/checkpoints/object-store';
import { ConcurrentRunError, LeaseLostError, PreconditionFailedError } from '../../functions/sinks/errors';
import { LocalObjectStore } from '../../functions/sinks/store/local';
import type { ObjectStore } from '../../functions/sinks/store/types';
import { checkpoint, deadPid } from '../sinks/helpers';

function store(): LocalObjectStore {
  return new LocalObjectStore(mkdtempSync(join(tmpdir(), 'ccexport-ckpt-')));
}

describe('object checkpoints', () => {
  it('merges checkpoints of several projects and data sources under one key', async () => {
    const checkpoints = new ObjectCheckpointStore(store());
    await checkpoints.write('k', [checkpoint('2024-01-01T00:00:00', { checkpointKey: 'k' })], {
      runId: 'r1',
      manifest: 'm1',
    });
    await checkpoints.write('k', [checkpoint('2024-02-01T00:00:00', { checkpointKey: 'k', project: 'p2' })], {
      runId: 'r2',
      manifest: 'm2',
    });
    await checkpoints.write('k', [checkpoint('2024-03-01T00:00:00', { checkpointKey: 'k' })], {
      runId: 'r3',
      manifest: 'm3',
    });
    expect((await checkpoints.read('k', 'demo', 'form'))?.position.indexedOn).toBe('2024-03-01T00:00:00');
    expect((await checkpoints.read('k', 'p2', 'form'))?.position.indexedOn).toBe('2024-02-01T00:00:00');
    expect(await checkpoints.read('k', 'demo', 'case')).toBeNull();
    expect((await checkpoints.readDocument('k'))?.doc).toMatchObject({
      version: 3,
      runId: 'r3',
      manifest: 'm3',
    });
  });

  it('refuses a conditional write against a version that changed', async () => {
    const objects = store();
    const { etag } = await objects.put('a.json', '1', 'application/json', { ifNoneMatch: '*' });
    await expect(objects.put('a.json', '2', 'application/json', { ifNoneMatch: '*' })).rejects.toThrow(
      PreconditionFailedError,
    );
    await objects.put('a.json', '3', 'application/json', { ifMatch: etag });
    await expect(objects.put('a.json', '4', 'application/json', { ifMatch: etag })).rejects.toThrow(
      PreconditionFailedError,
    );
    expect((await objects.get('a.json'))?.body).toBe('3');
  });

  it('holds a lease until released and lets another run take it only after expiry', async () => {
    const objects = store();
    let now = 1_000_000;
    const first = new ExportLease(objects, 'k', 'p', 'run-1', 60, { now: () => now });
    await first.acquire();
    await expect(
      new ExportLease(objects, 'k', 'p', 'run-2', 60, { now: () => now }).acquire(),
    ).rejects.toThrow(ConcurrentRunError);
    now += 61_000;
    const third = new ExportLease(objects, 'k', 'p', 'run-3', 60, { now: () => now });
    await third.acquire();
    await expect(first.renew()).rejects.toThrow(/lost its lease/);
    await first.release();
    await expect(
      new ExportLease(objects, 'k', 'p', 'run-4', 60, { now: () => now }).acquire(),
    ).rejects.toThrow(/run-3/);
    await third.release();
    await new ExportLease(objects, 'k', 'p', 'run-5', 60, { now: () => now }).acquire();
  });

  it('takes over at once the lease of a run on this host whose process is gone', async () => {
    const objects = store();
    const killed = new ExportLease(objects, 'k', 'p', 'run-killed', 120, {
      holder: { pid: await deadPid() },
    });
    await killed.acquire();
    const next = new ExportLease(objects, 'k', 'p', 'run-next', 120);
    await next.acquire();
    expect(next.takeover).toMatchObject({ reason: 'holder-not-running', previous: { runId: 'run-killed' } });
    const held = JSON.parse((await objects.get(leaseObjectKey('k', 'p')))!.body) as LeaseBody;
    expect(held).toMatchObject({ runId: 'run-next', host: hostname(), pid: process.pid });
    await expect(killed.renew()).rejects.toThrow(LeaseLostError);
    await next.release();
  });

  it('refuses while the holder on this host is still running, naming it, the lease object and the time', async () => {
    const objects = store();
    const first = new ExportLease(objects, 'k', 'p', 'run-1', 120);
    await first.acquire();
    const held = JSON.parse((await objects.get(leaseObjectKey('k', 'p')))!.body) as LeaseBody;
    const refused = await new ExportLease(objects, 'k', 'p', 'run-2', 120).acquire().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ConcurrentRunError);
    const message = (refused as Error).message;
    expect(message).toContain('Another run (run-1) of this export is in progress for project "p"');
    expect(message).toContain(
      `process ${process.pid} on this host (${hostname()}), started ${held.startedAt}`,
    );
    expect(message).toContain(`held until ${held.expiresAt}`);
    expect(message).toContain(`delete ${first.uri}`);
    expect(first.uri).toMatch(/checkpoints\/k\.p\.lease\.json$/);
    await first.release();
  });

  it('refuses a holder on another host until its lease expires, then takes it over', async () => {
    const objects = store();
    let now = Date.parse('2024-06-01T10:00:00Z');
    const remote = new ExportLease(objects, 'k', 'p', 'run-remote', 120, {
      now: () => now,
      holder: { host: 'build-box-2', pid: await deadPid(), machine: 'elsewhere' },
    });
    await remote.acquire();
    const local = () => new ExportLease(objects, 'k', 'p', 'run-local', 120, { now: () => now });
    const refused = await local()
      .acquire()
      .catch((e: unknown) => e as Error);
    expect(refused).toBeInstanceOf(ConcurrentRunError);
    expect(refused?.message).toContain('on host "build-box-2"');
    expect(refused?.message).toContain('Wait until 2024-06-01T10:02:00.000Z');
    expect(refused?.message).toContain(`delete ${remote.uri}`);
    now += 121_000;
    const next = local();
    await next.acquire();
    expect(next.takeover?.reason).toBe('expired');
  });

  it('does not take a lease of this host name from another container or boot, even when its pid is unused', async () => {
    const objects = store();
    await new ExportLease(objects, 'k', 'p', 'run-container', 120, {
      holder: { pid: await deadPid(), machine: 'another-boot/pid:[1]' },
    }).acquire();
    await expect(new ExportLease(objects, 'k', 'p', 'run-2', 120).acquire()).rejects.toThrow(
      /another container or boot/,
    );
  });

  it('lets only one of two runs starting at once take over the lease of a killed run', async () => {
    const objects = store();
    await new ExportLease(objects, 'k', 'p', 'run-killed', 120, {
      holder: { pid: await deadPid() },
    }).acquire();
    const contenders = ['run-a', 'run-b', 'run-c'].map((id) => new ExportLease(objects, 'k', 'p', id, 120));
    const outcomes = await Promise.allSettled(contenders.map((l) => l.acquire()));
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    for (const o of outcomes)
      if (o.status === 'rejected') expect(o.reason).toBeInstanceOf(ConcurrentRunError);
  });

  it('treats a lease written by an older version, without host and pid, as held until it expires', async () => {
    const objects = store();
    const expiresAt = new Date(Date.now() + 60_000).toISOString();
    await objects.put(
      leaseObjectKey('k', 'p'),
      JSON.stringify({ holder: 'x', runId: 'run-old', expiresAt }),
      'a',
    );
    await expect(new ExportLease(objects, 'k', 'p', 'run-2', 120).acquire()).rejects.toThrow(
      `Wait until ${expiresAt}`,
    );
  });

  it('renews the lease on a timer while held and stops when released', async () => {
    const { store: objects, leaseWrites } = countingStore(store());
    const lease = new ExportLease(objects, 'k', 'p', 'run-slow', 1.5);
    await lease.acquire();
    const first = JSON.parse((await objects.get(leaseObjectKey('k', 'p')))!.body) as LeaseBody;
    lease.startHeartbeat();
    await sleep(3_000); // twice the lease
    // Without renewals the lease would have expired and another run would take it.
    await expect(new ExportLease(objects, 'k', 'p', 'run-2', 1.5).acquire()).rejects.toThrow(/run-slow/);
    const later = JSON.parse((await objects.get(leaseObjectKey('k', 'p')))!.body) as LeaseBody;
    expect(Date.parse(later.expiresAt)).toBeGreaterThan(Date.parse(first.expiresAt) + 1_500);
    expect(later.startedAt).toBe(first.startedAt);
    await lease.renew(); // a commit's renewal does not collide with the heartbeat's
    await lease.release();
    const written = leaseWrites();
    await sleep(1_200);
    expect(leaseWrites()).toBe(written);
    expect(await objects.get(leaseObjectKey('k', 'p'))).toBeNull();
  });

  it('keeps a lease lost between heartbeats for the next renewal, which fails', async () => {
    const objects = store();
    const lease = new ExportLease(objects, 'k', 'p', 'run-1', 0.3);
    await lease.acquire();
    lease.startHeartbeat();
    await objects.put(
      leaseObjectKey('k', 'p'),
      JSON.stringify({ holder: 'y', runId: 'run-9', expiresAt: 'x' }),
      'a',
    );
    await sleep(400);
    expect(() => lease.throwIfLost()).toThrow(LeaseLostError);
    await expect(lease.renew()).rejects.toThrow(/run-1 lost its lease/);
    await lease.release();
    expect(JSON.parse((await objects.get(leaseObjectKey('k', 'p')))!.body).runId).toBe('run-9');
  });
});

describe('lease names', () => {
  it('gives exports whose checkpoint key and project join alike ("a.b" + "c", "a" + "b.c") their own leases', async () => {
    const objects = store();
    expect(leaseObjectKey('a.b', 'c')).not.toBe(leaseObjectKey('a', 'b.c'));
    const first = new ExportLease(objects, 'a.b', 'c', 'run-1', 120);
    const second = new ExportLease(objects, 'a', 'b.c', 'run-2', 120);

    await first.acquire();
    await second.acquire();

    expect(JSON.parse((await objects.get(leaseObjectKey('a.b', 'c')))!.body).runId).toBe('run-1');
    expect(JSON.parse((await objects.get(leaseObjectKey('a', 'b.c')))!.body).runId).toBe('run-2');
    await first.release();
    await second.release();
  });

  it('keeps the name earlier versions used when neither the key nor the project holds a dot', () => {
    expect(leaseObjectKey('k', 'p')).toBe('checkpoints/k.p.lease.json');
    expect(leaseObjectKey('3f2a9c', 'my-project')).toBe('checkpoints/3f2a9c.my-project.lease.json');
    expect(legacyLeaseObjectKey('k', 'p')).toBeNull();
    // A name with a hash can never be one without (it has two dots or more before ".lease.json").
    expect(leaseObjectKey('k.x', 'p')).toMatch(/^checkpoints\/k\.x\.p-[0-9a-f]{16}\.lease\.json$/);
  });

  it('refuses while a live lease of an earlier version sits under the old name, and not once it expired', async () => {
    const objects = store();
    let now = Date.parse('2024-06-01T10:00:00Z');
    const old = legacyLeaseObjectKey('forms.v2', 'demo')!;
    expect(old).toBe('checkpoints/forms.v2.demo.lease.json');
    const held: LeaseBody = {
      holder: 'old-holder',
      runId: 'run-old',
      expiresAt: new Date(now + 120_000).toISOString(),
      host: 'build-box-2',
      pid: 4242,
    };
    await objects.put(old, JSON.stringify(held), 'application/json', { ifNoneMatch: '*' });

    const refused = await new ExportLease(objects, 'forms.v2', 'demo', 'run-new', 120, { now: () => now })
      .acquire()
      .catch((e: unknown) => e as Error);

    expect(refused).toBeInstanceOf(ConcurrentRunError);
    expect((refused as Error).message).toContain('run-old');
    expect((refused as Error).message).toContain(objects.uri(old));
    // Its own lease is not left behind.
    expect(await objects.get(leaseObjectKey('forms.v2', 'demo'))).toBeNull();
    now += 121_000;
    const later = new ExportLease(objects, 'forms.v2', 'demo', 'run-later', 120, { now: () => now });
    await later.acquire();
    await later.release();
  });
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The store, counting the writes of lease objects. */
function countingStore(inner: ObjectStore): { store: ObjectStore; leaseWrites: () => number } {
  let writes = 0;
  const store: ObjectStore = {
    uri: (key) => inner.uri(key),
    openUpload: (key, type) => inner.openUpload(key, type),
    put: (key, body, type, condition) => {
      if (key.endsWith('.lease.json')) writes++;
      return inner.put(key, body, type, condition);
    },
    get: (key) => inner.get(key),
    openRead: (key) => inner.openRead(key),
    delete: (key, ifMatch) => inner.delete(key, ifMatch),
    list: (prefix) => inner.list(prefix),
  };
  return { store, leaseWrites: () => writes };
}

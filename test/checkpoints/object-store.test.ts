import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExportLease, ObjectCheckpointStore } from '../../functions/checkpoints/object-store';
import { ConcurrentRunError, PreconditionFailedError } from '../../functions/sinks/errors';
import { LocalObjectStore } from '../../functions/sinks/store/local';
import { checkpoint } from '../sinks/helpers';

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
    const first = new ExportLease(objects, 'k', 'p', 'run-1', 60, () => now);
    await first.acquire();
    await expect(new ExportLease(objects, 'k', 'p', 'run-2', 60, () => now).acquire()).rejects.toThrow(
      ConcurrentRunError,
    );
    now += 61_000;
    const third = new ExportLease(objects, 'k', 'p', 'run-3', 60, () => now);
    await third.acquire();
    await expect(first.renew()).rejects.toThrow(/lost its lease/);
    await first.release();
    await expect(new ExportLease(objects, 'k', 'p', 'run-4', 60, () => now).acquire()).rejects.toThrow(
      /run-3/,
    );
    await third.release();
    await new ExportLease(objects, 'k', 'p', 'run-5', 60, () => now).acquire();
  });
});

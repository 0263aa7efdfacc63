import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConcurrentRunError, createSink, openEmbeddedDatabase } from '../../functions/sinks';
import { checkpoint, run } from './helpers';

describe('embedded PostgreSQL (PGlite) output', () => {
  it('round-trips rows and checkpoints through a folder, across runs', async () => {
    const folder = mkdtempSync(join(tmpdir(), 'ccexport-embedded-'));
    const spec = {
      name: 'cases',
      headings: ['id', 'n', 'when', 'note'],
      dataTypes: [null, null, null, null],
    };
    const first = await createSink({ format: 'sql', output: folder });
    await first.begin([spec], run('r1'));
    await first.writeRows('cases', [
      ['c1', 1, new Date(Date.UTC(2024, 4, 1, 12)), 'a "quoted", note'],
      ['c2', 2, null, ''],
    ]);
    await first.commit([checkpoint('2024-05-01T12:00:00')]);
    await first.finish();

    const second = await createSink({ format: 'sql', output: folder });
    await second.begin(
      [{ ...spec, headings: [...spec.headings, 'extra'], dataTypes: [...spec.dataTypes, null] }],
      run('r2'),
    );
    await second.writeRows('cases', [['c2', null, null, null, true]]);
    await second.commit([checkpoint('2024-05-02T00:00:00')]);
    await second.writeRows('cases', [['c3', 3, null, 'lost', null]]);
    await second.abort(new Error('stopped'));

    const reader = await createSink({ format: 'sql', output: folder });
    expect((await reader.readCheckpoint('key-1', 'demo', 'form'))?.position.indexedOn).toBe(
      '2024-05-02T00:00:00',
    );
    const db = await openEmbeddedDatabase(folder);
    try {
      const { rows } = await db.query('SELECT id, n, "when", note, extra FROM cases ORDER BY id');
      expect(rows).toEqual([
        { id: 'c1', n: 1, when: new Date(Date.UTC(2024, 4, 1, 12)), note: 'a "quoted", note', extra: null },
        { id: 'c2', n: 2, when: null, note: '', extra: true },
      ]);
      await expect(openEmbeddedDatabase(folder)).rejects.toThrow(ConcurrentRunError);
    } finally {
      await db.close();
    }
  });
});

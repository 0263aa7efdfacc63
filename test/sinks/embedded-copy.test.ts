import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openEmbeddedDatabase } from '../../functions/sinks';
import { CopyBuffer } from '../../functions/sinks/postgres/pglite';

const text = (buffer: ArrayBuffer) => new TextDecoder().decode(new Uint8Array(buffer));

describe('the COPY buffer of the embedded database', () => {
  it('holds exactly the bytes of each batch, shorter ones after longer ones included', () => {
    const buffer = new CopyBuffer(1024);
    expect(text(buffer.fill(['a,é\n', Buffer.from('b,日本\n'), 'c,"x"\n']))).toBe('a,é\nb,日本\nc,"x"\n');
    const second = buffer.fill(['d,1\n']);
    expect(second.byteLength).toBe(4);
    expect(text(second)).toBe('d,1\n');
    expect(buffer.fill([]).byteLength).toBe(0);
  });

  it('grows past its first size when a batch is bigger', () => {
    const buffer = new CopyBuffer(16);
    const line = `${'x'.repeat(40)}\n`;
    const filled = buffer.fill([line, line, line]);
    expect(filled.byteLength).toBe(123);
    expect(text(filled)).toBe(line.repeat(3));
    expect(text(buffer.fill(['y\n']))).toBe('y\n');
  });
});

describe('embedded PostgreSQL (PGlite) settings and COPY', () => {
  it('starts with a small buffer pool and loads overlapping COPY calls in order, each with its own rows', async () => {
    const db = await openEmbeddedDatabase(mkdtempSync(join(tmpdir(), 'ccexport-embedded-copy-')));
    try {
      const { rows } = await db.query<{ shared_buffers: string }>('SHOW shared_buffers');
      expect(rows[0]?.shared_buffers).toBe('16MB');
      await db.query('CREATE TABLE t (id text PRIMARY KEY, note text)');
      // Not awaited one by one: the second call must not overwrite the buffer the first is reading.
      const big = Array.from({ length: 2000 }, (_, i) => `a${i},long note ${'z'.repeat(100)} ${i}\n`);
      await Promise.all([
        db.copyCsv('t (id, note)', [big.join('')]),
        db.copyCsv('t (id, note)', ['b1,"with ""quotes"", and ü"\n', Buffer.from('b2,日本\n')]),
      ]);
      const count = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM t');
      expect(count.rows[0]?.n).toBe(2002);
      const some = await db.query("SELECT id, note FROM t WHERE id IN ('a1999', 'b1', 'b2') ORDER BY id");
      expect(some.rows).toEqual([
        { id: 'a1999', note: `long note ${'z'.repeat(100)} 1999` },
        { id: 'b1', note: 'with "quotes", and ü' },
        { id: 'b2', note: '日本' },
      ]);
    } finally {
      await db.close();
    }
  });
});

/**
 * `readBody`: an answer's body read into one buffer, with the `Content-Length` of an uncompressed answer
 * as the buffer's size, a limit past which it is refused, and the bodies a size says nothing of; and
 * what releasing a page read from such a buffer frees.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readBody } from '../../functions/commcare/http';
import { rawJsonOf, readListBody } from '../../functions/commcare/page-body';

const body = Buffer.from(
  JSON.stringify({ objects: Array.from({ length: 500 }, (_, i) => ({ id: `f-${i}` })) }),
);

function chunked(bytes: Buffer, size = 1000): Readable {
  const parts: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += size) parts.push(bytes.subarray(at, at + size));
  return Readable.from(parts, { objectMode: false });
}

describe('readBody', () => {
  it('reads a body of its declared size into one buffer of that size', async () => {
    const read = await readBody(chunked(body), 1 << 20, body.length);
    expect(read.equals(body)).toBe(true);
    expect(read.buffer.byteLength).toBe(body.length);
  });

  it('reads a body longer than the size given (the length of a compressed answer) whole', async () => {
    const read = await readBody(chunked(body), 1 << 20, 1500);
    expect(read.equals(body)).toBe(true);
  });

  it('hands over what came of a body shorter than its size, for the JSON check to refuse', async () => {
    const read = await readBody(chunked(body), 1 << 20, body.length + 10);
    expect(read.equals(body)).toBe(true);
  });

  it('reads a body of unknown size', async () => {
    expect((await readBody(chunked(body), 1 << 20, null)).equals(body)).toBe(true);
    expect((await readBody(chunked(body, body.length), 1 << 20, null)).equals(body)).toBe(true);
  });

  it('refuses a body past the limit and stops reading it, whatever size it declared', async () => {
    for (const size of [null, 100, body.length]) {
      const stream = chunked(body);
      await expect(readBody(stream, body.length - 1, size)).rejects.toThrow(/larger than/);
      expect(stream.destroyed).toBe(true);
    }
  });

  it('passes on the error of a body that breaks off', async () => {
    const stream = new Readable({ read() {} });
    stream.push(body.subarray(0, 100));
    setImmediate(() => stream.destroy(new Error('socket hang up')));
    await expect(readBody(stream, 1 << 20, body.length)).rejects.toThrow('socket hang up');
  });
});

describe('letting go of a page read by readBody', () => {
  const page = async (declared: number | null, pieces = 1000, keepRaw = false) => {
    const read = await readBody(chunked(body, pieces), 1 << 20, declared);
    const { items } = readListBody(read, 'objects', { fields: ['id'], keepRaw });
    return { read, records: items!.select(Array.from({ length: items!.length }, (_, k) => k)) };
  };

  it('frees the body of a released page and refuses to read its records afterwards', async () => {
    const { read, records } = await page(body.length);
    expect([...records].map((r) => r.id)).toEqual(Array.from({ length: 500 }, (_, i) => `f-${i}`));
    records.release();
    // Detached: its memory now belongs to an unreferenced ArrayBuffer, freed by the next scavenge.
    expect(read.buffer.byteLength).toBe(0);
    expect(() => [...records]).toThrow(/read after their page was released/);
    expect(() => records.value(0, 'id')).toThrow(/read after their page was released/);
    records.release(); // twice: nothing more to do
  });

  it('frees a body gathered from the chunks of an answer of unknown size', async () => {
    const { read, records } = await page(null);
    records.release();
    expect(read.buffer.byteLength).toBe(0);
  });

  it('leaves a body it does not own alone: a chunk handed over as it came, a short body, raw records', async () => {
    // One chunk of unknown size is the stream's own buffer; a body shorter than declared is a slice.
    for (const [declared, pieces] of [
      [null, body.length],
      [body.length + 10, 1000],
    ] as const) {
      const { read, records } = await page(declared, pieces);
      const size = read.buffer.byteLength;
      records.release();
      expect(read.buffer.byteLength).toBe(size);
      expect(() => [...records]).toThrow(/released/);
    }
    // Raw records keep views of the body (rawJsonOf), for a writer that may not have written them yet.
    const raw = await page(body.length, 1000, true);
    const first = [...raw.records][0]!;
    raw.records.release();
    expect(raw.read.buffer.byteLength).toBe(body.length);
    expect(Buffer.from(rawJsonOf(first)!).toString()).toBe('{"id":"f-0"}');
  });
});

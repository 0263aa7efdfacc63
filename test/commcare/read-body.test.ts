/**
 * `readBody`: an answer's body read into one buffer, with the `Content-Length` of an uncompressed answer
 * as the buffer's size, a limit past which it is refused, and the bodies a size says nothing of.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readBody } from '../../functions/commcare/http';

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

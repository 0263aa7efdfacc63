import { Transform, type Writable } from 'node:stream';

/**
 * A byte-counting pass-through in front of the real destination, with a `write` that honours
 * backpressure: the caller waits whenever the destination is slower than the producer.
 */
export class CountingStream extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: (e?: Error | null, d?: Buffer) => void) {
    this.bytes += chunk.length;
    callback(null, chunk);
  }
}

export async function writeWithBackpressure(stream: Writable, chunk: string | Uint8Array): Promise<void> {
  // A stream destroyed with an error (a failed upload) reports that error, not only that it closed.
  if (stream.destroyed) throw stream.errored ?? new Error('the object stream was closed before the write');
  if (stream.write(chunk)) return;
  await new Promise<void>((resolve, reject) => {
    const done = (error?: Error) => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
      if (error) reject(error);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () =>
      done(stream.errored ?? new Error('the object stream closed while waiting to write'));
    stream.on('drain', onDrain);
    stream.on('close', onClose);
  });
}

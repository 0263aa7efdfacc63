import type { PGlite } from '@electric-sql/pglite';
import type { SqlConnection } from './connection';

/** Room reserved (address space, not memory) for the COPY buffer before a bigger one is made. */
const INITIAL_MAX_BYTES = 64 * 1024 * 1024;

/** ES2024's resizable ArrayBuffer (node 20 has it; the repo's TypeScript lib is ES2023). */
interface ResizableArrayBuffer extends ArrayBuffer {
  readonly maxByteLength: number;
  resize(byteLength: number): void;
}

function resizableBuffer(maxByteLength: number): ResizableArrayBuffer {
  const Ctor = ArrayBuffer as unknown as new (
    length: number,
    options: { maxByteLength: number },
  ) => ResizableArrayBuffer;
  return new Ctor(0, { maxByteLength });
}

/**
 * One buffer for every COPY of a connection. PGlite reads `/dev/blob` from `blob.arrayBuffer()`, so
 * a `new Blob(chunks)` per batch cost two copies of the batch outside the JavaScript heap (the Blob,
 * then its ArrayBuffer), freed only when the garbage collector got to them: ~45 MB of dead batches at
 * 100k rows. A resizable ArrayBuffer, resized to each batch's exact length (PGlite's device reads to
 * the end of the buffer), keeps one batch's bytes at a time.
 */
export class CopyBuffer {
  private buffer: ResizableArrayBuffer;
  private readonly encoder = new TextEncoder();

  constructor(initialMaxBytes = INITIAL_MAX_BYTES) {
    this.buffer = resizableBuffer(initialMaxBytes);
  }

  /** The chunks' UTF-8 bytes, in the shared buffer (valid until the next fill). */
  fill(chunks: readonly (string | Uint8Array)[]): ArrayBuffer {
    let bytes = 0;
    for (const chunk of chunks)
      bytes += typeof chunk === 'string' ? Buffer.byteLength(chunk, 'utf8') : chunk.byteLength;
    if (bytes > this.buffer.maxByteLength) {
      let max = Math.max(1, this.buffer.maxByteLength);
      while (max < bytes) max *= 2;
      this.buffer = resizableBuffer(max);
    }
    this.buffer.resize(bytes);
    const view = new Uint8Array(this.buffer, 0, bytes);
    let at = 0;
    for (const chunk of chunks) {
      if (typeof chunk === 'string') at += this.encoder.encodeInto(chunk, view.subarray(at)).written;
      else {
        view.set(chunk, at);
        at += chunk.byteLength;
      }
    }
    return this.buffer;
  }

  /** Gives the memory back (a zero-length buffer holds none). */
  release(): void {
    this.buffer.resize(0);
  }
}

/** Wraps an open PGlite database. */
export function pgliteConnection(db: PGlite, onClose?: () => Promise<void>): SqlConnection {
  const copyBuffer = new CopyBuffer();
  // The buffer is shared: a COPY fills it only after the previous one has finished reading it.
  let lastCopy: Promise<unknown> = Promise.resolve();
  const copy = async (target: string, chunks: readonly (string | Uint8Array)[]) => {
    // PGlite has no COPY FROM STDIN; it reads a Blob passed with the query as the file /dev/blob. It
    // only calls the Blob's arrayBuffer(), so the shared buffer is passed in a Blob's place.
    const bytes = copyBuffer.fill(chunks);
    const blob = { arrayBuffer: async () => bytes } as unknown as Blob;
    await db.query(`COPY ${target} FROM '/dev/blob' WITH (FORMAT csv)`, [], { blob });
  };
  return {
    kind: 'pglite',
    async query<R>(text: string, params?: readonly unknown[]) {
      const result = await db.query<R>(text, params as unknown[] | undefined);
      return { rows: result.rows, rowCount: result.affectedRows ?? result.rows.length };
    },
    copyCsv(target, chunks: readonly (string | Uint8Array)[]) {
      const done = lastCopy.then(() => copy(target, chunks));
      lastCopy = done.catch(() => undefined);
      return done;
    },
    async close() {
      copyBuffer.release();
      await db.close();
      await onClose?.();
    },
  };
}

import { once } from 'node:events';
import type { Writable } from 'node:stream';
import zlib from 'node:zlib';
import { SinkError } from '../errors';
import { writeWithBackpressure } from '../store/upload';

/** Sizes and offsets in a zip without zip64 stay below 4 GiB. */
export const ZIP32_LIMIT = 0xffff_ffff;

const CRC_TABLE = (() => {
  const table = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c;
  }
  return table;
})();

/** CRC-32 of zip; node's own (zlib.crc32, node >= 20.15) when present. */
function crc32(data: Buffer, previous: number): number {
  const native = (zlib as { crc32?: (data: Buffer, value?: number) => number }).crc32;
  if (native) return native(data, previous);
  let crc = ~previous;
  for (let i = 0; i < data.length; i++) crc = CRC_TABLE[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

/** DOS date and time of a Date, as zip headers hold them. */
function dosTime(date: Date): { time: number; date: number } {
  return {
    time: (date.getHours() << 11) | (date.getMinutes() << 5) | Math.floor(date.getSeconds() / 2),
    date: ((date.getFullYear() - 1980) << 9) | ((date.getMonth() + 1) << 5) | date.getDate(),
  };
}

interface EntryRecord {
  readonly name: Buffer;
  readonly offset: number;
  readonly crc: number;
  readonly compressed: number;
  readonly size: number;
}

/**
 * A zip archive written front to back into a stream, one deflated entry at a time, with the sizes in
 * a data descriptor after each entry (so nothing is held to learn them first) and backpressure from
 * the destination all the way to `write`. No zip64: an entry or the archive reaching 4 GiB is an
 * error (the xlsx writer starts a new sheet long before a sheet gets there).
 */
export class ZipWriter {
  private offset = 0;
  private readonly entries: EntryRecord[] = [];
  private readonly stamp = dosTime(new Date());
  private failure: unknown;

  constructor(private readonly out: Writable) {
    out.on('error', (error) => {
      this.failure ??= error;
    });
  }

  /** Bytes written to the destination so far. */
  get bytes(): number {
    return this.offset;
  }

  private async emit(chunk: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.out.destroyed) {
      throw this.out.errored ?? new SinkError('The object stream was closed while the zip was written');
    }
    this.offset += chunk.length;
    if (this.offset > ZIP32_LIMIT) {
      throw new SinkError(`The zip archive reached 4 GiB, more than a zip without zip64 can hold`);
    }
    // Unlike once('drain'), this also returns when the stream is destroyed without an error.
    await writeWithBackpressure(this.out, chunk);
  }

  /** Starts an entry; write its content with `write`, then `end` it before the next one. */
  async entry(name: string): Promise<ZipEntry> {
    const nameBytes = Buffer.from(name, 'utf8');
    const header = Buffer.alloc(30);
    header.writeUInt32LE(0x04034b50, 0);
    header.writeUInt16LE(20, 4); // version needed: 2.0 (deflate)
    header.writeUInt16LE(0x0808, 6); // sizes in a data descriptor; UTF-8 name
    header.writeUInt16LE(8, 8); // deflate
    header.writeUInt16LE(this.stamp.time, 10);
    header.writeUInt16LE(this.stamp.date, 12);
    header.writeUInt16LE(nameBytes.length, 26);
    const offset = this.offset;
    await this.emit(Buffer.concat([header, nameBytes]));
    return new ZipEntry(this, nameBytes, offset);
  }

  /** @internal */
  async pipeDeflated(deflate: zlib.DeflateRaw): Promise<void> {
    for await (const chunk of deflate) await this.emit(chunk as Buffer);
  }

  /** @internal */
  async closeEntry(record: EntryRecord): Promise<void> {
    if (record.size > ZIP32_LIMIT) {
      throw new SinkError(`A zip entry reached 4 GiB, more than a zip without zip64 can hold`);
    }
    const descriptor = Buffer.alloc(16);
    descriptor.writeUInt32LE(0x08074b50, 0);
    descriptor.writeUInt32LE(record.crc, 4);
    descriptor.writeUInt32LE(record.compressed, 8);
    descriptor.writeUInt32LE(record.size, 12);
    await this.emit(descriptor);
    this.entries.push(record);
  }

  /** Writes the central directory and ends the destination stream. */
  async finish(): Promise<void> {
    const start = this.offset;
    for (const e of this.entries) {
      const header = Buffer.alloc(46);
      header.writeUInt32LE(0x02014b50, 0);
      header.writeUInt16LE(20, 4); // made by: 2.0
      header.writeUInt16LE(20, 6);
      header.writeUInt16LE(0x0808, 8);
      header.writeUInt16LE(8, 10);
      header.writeUInt16LE(this.stamp.time, 12);
      header.writeUInt16LE(this.stamp.date, 14);
      header.writeUInt32LE(e.crc, 16);
      header.writeUInt32LE(e.compressed, 20);
      header.writeUInt32LE(e.size, 24);
      header.writeUInt16LE(e.name.length, 28);
      header.writeUInt32LE(e.offset, 42);
      await this.emit(Buffer.concat([header, e.name]));
    }
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(this.entries.length, 8);
    end.writeUInt16LE(this.entries.length, 10);
    end.writeUInt32LE(this.offset - start, 12);
    end.writeUInt32LE(start, 16);
    await this.emit(end);
    if (this.failure) throw this.failure;
    this.out.end();
  }
}

/** One entry being written: text or bytes go through deflate straight to the archive. */
export class ZipEntry {
  private crc = 0;
  private size = 0;
  private readonly deflate = zlib.createDeflateRaw({ level: 6 });
  private readonly drained: Promise<void>;
  private compressed = 0;

  constructor(
    private readonly zip: ZipWriter,
    private readonly name: Buffer,
    private readonly offset: number,
  ) {
    const before = zip.bytes;
    this.drained = zip.pipeDeflated(this.deflate).then(() => {
      this.compressed = zip.bytes - before;
    });
    // A failure surfaces through write/end; this keeps node from reporting it as unhandled meanwhile.
    this.drained.catch(() => undefined);
  }

  /** Adds content, waiting while deflate and the destination are behind (memory stays flat). */
  async write(text: string | Buffer): Promise<void> {
    const data = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
    this.crc = crc32(data, this.crc);
    this.size += data.length;
    if (!this.deflate.write(data)) {
      await Promise.race([once(this.deflate, 'drain'), this.drained]);
    }
  }

  /** Uncompressed bytes written so far. */
  get bytes(): number {
    return this.size;
  }

  async end(): Promise<void> {
    this.deflate.end();
    await this.drained;
    await this.zip.closeEntry({
      name: this.name,
      offset: this.offset,
      crc: this.crc,
      compressed: this.compressed,
      size: this.size,
    });
  }
}

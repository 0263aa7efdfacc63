/**
 * Raw mode: no query file, one data source, every HQ record written as one JSON line. This is what
 * `ccexport run --resource form` does, and what the client benchmark measures.
 */

import { createWriteStream, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { ExportLease } from '../checkpoints/object-store';
import { rawJsonOf } from '../commcare/page-body';
import type { ResourceName } from '../commcare/types';
import type { JsonObject } from '../common/json';
import type { Cell, SourcePlan, TableSpec } from '../query/types';
import { LocalObjectStore } from '../sinks/store/local';
import type { ObjectStore, ObjectUpload } from '../sinks/store/types';
import type { ExportSink, RunContext, SourceCheckpoint } from '../sinks/types';

/** A source plan whose single table holds each record whole. */
export function rawRecordsPlan(resource: ResourceName, params: Record<string, string[]> = {}): SourcePlan {
  return {
    resource,
    params,
    tables: [
      {
        name: resource,
        headings: ['record'],
        dataTypes: ['json'],
        rowsFor: (record: JsonObject): Cell[][] => [[record]],
      },
    ],
  };
}

/** Bytes gathered before one write to the file: few large writes instead of one per record. */
const CHUNK_BYTES = 1 << 20;

/** How long a run's lease outlives its last renewal (renewed every third of it), as for table outputs. */
const LEASE_SECONDS = 120;

interface Target {
  readonly stream: Writable;
  /** Local file: the temporary name, renamed to `final` by `finish`. */
  readonly temp: string | null;
  /** Object store (S3): the upload, which shows the object only once it is complete. */
  readonly upload: ObjectUpload | null;
  /** The final path or object URI. */
  readonly final: string;
  /** The chunk being filled; handed to the stream whole and never reused. */
  chunk: Buffer;
  used: number;
  /** The other chunk, once the stream has written it. */
  spare: Buffer | null;
  /** The write of the last chunk handed to the stream. */
  inFlight: Promise<void> | null;
}

/**
 * Writes `<folder>/<table>.jsonl`, one record per line, or the object `<table>.jsonl` under an
 * `s3://bucket/prefix` (a streamed multipart upload). Files are written under a temporary name and
 * renamed on `finish`, and an S3 object appears only when its upload completes, so a failed run leaves
 * no half file. Checkpoints are not kept (raw mode always pulls everything, or the `--since`/`--until`
 * window).
 *
 * Two runs into one folder or prefix would write the same files: a run holds the export's lease (the
 * one table outputs take, `ExportLease`, keyed by the run's checkpoint key and project) from `begin`
 * until its files are in place, so a second run stops with `ConcurrentRunError` before writing
 * anything, and each run writes under its own temporary name (`<table>.jsonl.<run-id>.partial`).
 *
 * A record the client read from a page is written as the bytes HQ sent for it (`rawJsonOf`): parsing
 * gave the client its object, and re-serialising it would cost as much again for the same JSON. Anything
 * else (a row of cells, an object built by a query) is `JSON.stringify`d. Lines gather in 1 MiB chunks.
 */
export class JsonLinesSink implements ExportSink {
  private readonly streams = new Map<string, Target>();
  private lease: ExportLease | undefined;
  readonly written: string[] = [];

  /** `destination`: a folder path, or the object store of an `s3://` output. */
  constructor(private readonly destination: string | ObjectStore) {}

  async begin(tables: readonly TableSpec[], run: RunContext): Promise<void> {
    const store = typeof this.destination === 'string' ? null : this.destination;
    const folder = typeof this.destination === 'string' ? this.destination : null;
    if (folder !== null) mkdirSync(folder, { recursive: true });
    this.lease = new ExportLease(
      store ?? new LocalObjectStore(folder as string),
      run.checkpointKey,
      run.project,
      run.runId,
      LEASE_SECONDS,
    );
    await this.lease.acquire();
    this.lease.startHeartbeat();
    for (const table of tables) {
      const name = `${table.name}.jsonl`;
      let target: Pick<Target, 'stream' | 'temp' | 'upload' | 'final'>;
      if (store) {
        const upload = store.openUpload(name, 'application/x-ndjson');
        target = { stream: upload.stream, temp: null, upload, final: store.uri(name) };
      } else {
        const final = join(folder as string, name);
        const temp = `${final}.${run.runId}.partial`;
        const stream = createWriteStream(temp);
        // Write errors reach the caller through the write and end callbacks; without a listener the
        // stream's 'error' event (also emitted when `abort` destroys it with a write in flight) would
        // end the process instead of failing the run.
        stream.on('error', () => undefined);
        target = { stream, temp, upload: null, final };
      }
      this.streams.set(table.name, {
        ...target,
        chunk: Buffer.allocUnsafe(CHUNK_BYTES),
        used: 0,
        spare: null,
        inFlight: null,
      });
    }
  }

  async writeRows(table: string, rows: readonly Cell[][]): Promise<void> {
    // Another run has the export now: stop rather than write a file it is writing too.
    this.lease?.throwIfLost();
    const target = this.streams.get(table);
    if (!target) throw new Error(`table "${table}" was not declared in begin()`);
    for (const row of rows) {
      const value = row.length === 1 ? row[0] : row;
      const raw = typeof value === 'object' && value !== null ? rawJsonOf(value) : undefined;
      const text = raw === undefined ? (JSON.stringify(value) ?? 'null') : '';
      // UTF-8 takes at most 3 bytes per UTF-16 unit; the newline one more.
      const most = (raw === undefined ? text.length * 3 : raw.length) + 1;
      if (target.used + most > target.chunk.length) {
        await this.flush(target);
        if (most > target.chunk.length) target.chunk = Buffer.allocUnsafe(most);
      }
      if (raw === undefined) {
        target.used += target.chunk.write(text, target.used, 'utf8');
      } else {
        target.chunk.set(raw, target.used);
        target.used += raw.length;
      }
      target.chunk[target.used] = 0x0a;
      target.used += 1;
    }
  }

  /**
   * Hands the filled part of the chunk to the stream and goes on in the other of two chunks, once the
   * stream is done with it. Reusing two chunks keeps the file's bytes from piling up as dead external
   * memory, which V8 frees only at its next full collection.
   */
  private async flush(target: Target): Promise<void> {
    if (target.used === 0) return;
    const full = target.chunk;
    const written = new Promise<void>((resolve, reject) => {
      target.stream.write(full.subarray(0, target.used), (error) => {
        if (error) {
          reject(error);
          return;
        }
        // An upload's stream hands the same buffer on to the uploader, which reads it later: only a
        // file's chunk is free again once written.
        if (full.length === CHUNK_BYTES && target.upload === null) target.spare = full;
        resolve();
      });
    });
    // The stream also emits the error; whoever awaits `written` next sees it.
    written.catch(() => undefined);
    target.used = 0;
    if (target.spare === null && target.inFlight !== null) await target.inFlight;
    target.chunk = target.spare ?? Buffer.allocUnsafe(CHUNK_BYTES);
    target.spare = null;
    target.inFlight = written;
  }

  async commit(_checkpoints: readonly SourceCheckpoint[]): Promise<void> {}

  async finish(): Promise<void> {
    // The files take their final names only while the lease is still ours.
    await this.lease?.renew();
    for (const target of this.streams.values()) {
      await this.flush(target);
      await target.inFlight;
      const { stream, temp, upload, final } = target;
      if (upload) {
        await upload.complete();
      } else {
        await new Promise<void>((resolve, reject) =>
          stream.end((err?: Error | null) => (err ? reject(err) : resolve())),
        );
        renameSync(temp as string, final);
      }
      this.written.push(final);
    }
    this.streams.clear();
    await this.lease?.release();
  }

  async abort(): Promise<void> {
    const targets = [...this.streams.values()];
    this.streams.clear();
    for (const { stream, temp, upload } of targets) {
      if (upload) {
        await upload.abort().catch(() => undefined);
      } else {
        // The file may still be opening, or a write in flight: removed only once the stream has
        // closed, or the open would create it again after the removal.
        await new Promise<void>((resolve) => {
          if (stream.closed) resolve();
          else stream.once('close', () => resolve());
          stream.destroy();
        });
        rmSync(temp as string, { force: true });
      }
    }
    await this.lease?.release().catch(() => undefined);
  }

  async readCheckpoint(): Promise<SourceCheckpoint | null> {
    return null;
  }
}

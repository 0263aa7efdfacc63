import type { Readable, Writable } from 'node:stream';

/** One object being written. It becomes visible only after `complete()`; `abort()` leaves nothing. */
export interface ObjectUpload {
  /** Byte stream of the object (for writers that stream into it, such as the xlsx zip). */
  readonly stream: Writable;
  /** Write a chunk, waiting when the stream is backed up (keeps memory flat). */
  write(chunk: string | Uint8Array): Promise<void>;
  /** Ends the stream if the writer did not, and waits until the object is stored. */
  complete(): Promise<{ bytes: number }>;
  abort(): Promise<void>;
}

export interface StoredObject {
  readonly body: string;
  /** Opaque version token for conditional writes (S3 ETag, or a content hash for local files). */
  readonly etag: string;
}

/** Condition for `put`: create only (`ifNoneMatch: '*'`) or replace only that version (`ifMatch`). */
export interface PutCondition {
  readonly ifNoneMatch?: '*';
  readonly ifMatch?: string;
}

/** A folder or an S3 prefix. Keys are relative to it and use `/`. */
export interface ObjectStore {
  /** `s3://bucket/prefix/key` or an absolute path, for manifests and messages. */
  uri(key: string): string;
  openUpload(key: string, contentType: string): ObjectUpload;
  /** Small whole-object write; throws `PreconditionFailedError` when the condition does not hold. */
  put(key: string, body: string, contentType: string, condition?: PutCondition): Promise<{ etag: string }>;
  get(key: string): Promise<StoredObject | null>;
  /** The object's bytes as a stream (for data objects, which can be large or binary). */
  openRead(key: string): Promise<Readable>;
  delete(key: string, ifMatch?: string): Promise<void>;
  /** Keys under a relative prefix, sorted. */
  list(prefix: string): Promise<string[]>;
  /**
   * Removes what killed runs left under `folders` (relative): temporary files of a process of this
   * machine that is gone, and S3 multipart uploads started more than `olderThanMs` ago. Best effort;
   * returns what was removed.
   */
  removeAbandoned?(folders: readonly string[], olderThanMs: number): Promise<string[]>;
}

/** An upload or temporary file older than this belongs to no live run (a Lambda slice lasts 15 minutes). */
export const ABANDONED_AFTER_MS = 24 * 60 * 60 * 1000;

/**
 * The archived records a pull has seen since its last commit, waiting for `ExportSink.recordDeletions`
 * at the next commit. A file output commits once, at the end of the run, so a run of a large project
 * would otherwise hold every archived form of it in memory (its id, its rows' ids and a `Date`: a Map
 * of 20,000 of them held ~13 MB of heap; a 1M-form sandbox project has ~24,000 archived forms).
 *
 * Memory holds only a fixed amount, whatever the number of archived records:
 * - each deletion is kept as one line of text (JSON), up to `spillBytes` of them in memory; beyond
 *   that they are appended to a temporary file, unlinked as soon as it is opened where the system
 *   allows it, so a killed run leaves nothing behind; `drain` reads the lines back at the commit;
 * - the rule that the last version of a record in the pull wins (a later live version cancels an
 *   archived one, a later archived version replaces it) needs to know, for a live record, whether a
 *   deletion of it is waiting. A fixed-size Bloom filter of the ids written answers "certainly not"
 *   for nearly every live record; only the ids it does not rule out (the record seen again, or a rare
 *   false positive) are remembered exactly, with the number of their last sighting.
 *
 * The interface keeps `Map`'s names (`set`, `delete`, `size`) so the export loop reads as it did.
 */
import { closeSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { DeletionReason, RecordDeletion } from '../sinks/types';

/** Text of pending deletions held in memory before it goes to the temporary file. */
export const DEFAULT_SPILL_BYTES = 64 * 1024;

/** Bits of the Bloom filter (1 MiB), allocated at the first deletion of a pull. */
const FILTER_BITS = 8 * 1024 * 1024;
/** Bit positions per id: under one false positive per 10^7 lookups up to ~50,000 archived ids between two commits. */
const FILTER_HASHES = 4;
/** Deletions per `drain` batch. */
const DRAIN_BATCH = 1000;

export interface DeletionLogOptions {
  /** @default DEFAULT_SPILL_BYTES */
  readonly spillBytes?: number;
  /** Folder of the temporary file. @default the system's temporary folder */
  readonly folder?: string;
}

/** A deletion as one line: `[id, deletedAt ms, reason, rowIds]`. */
type DeletionLine = [string, number, DeletionReason, Record<string, readonly string[]> | null];

export class DeletionLog {
  private readonly spillBytes: number;
  private readonly folder: string;
  /** Deletions written since the last drain; the line number of each is its sighting. */
  private written = 0;
  /** Lines not yet in the file. */
  private pending: string[] = [];
  private pendingBytes = 0;
  private file: { fd: number; path: string | null } | null = null;
  /** Bytes of lines in the file. */
  private fileBytes = 0;
  private filter: Uint32Array | null = null;
  /**
   * Ids the filter did not rule out when they were seen again: the sighting of their last version
   * (`written` at that point). A deletion line counts only if it is that sighting.
   */
  private readonly lastSeen = new Map<string, number>();

  constructor(options: DeletionLogOptions = {}) {
    this.spillBytes = options.spillBytes ?? DEFAULT_SPILL_BYTES;
    this.folder = options.folder ?? tmpdir();
  }

  /** Deletions written since the last drain (an id written twice counts twice). */
  get size(): number {
    return this.written;
  }

  /** An archived version of `id` (the deletion's id): its deletion replaces any earlier one of the same id. */
  set(id: string, deletion: RecordDeletion): this {
    const sighting = this.written;
    if (this.mightHave(id)) this.lastSeen.set(id, sighting);
    else this.remember(id);
    const line: DeletionLine = [
      deletion.id,
      deletion.deletedAt.getTime(),
      deletion.reason,
      (deletion.rowIds as Record<string, readonly string[]> | undefined) ?? null,
    ];
    const text = `${JSON.stringify(line)}\n`;
    this.pending.push(text);
    this.pendingBytes += text.length;
    this.written += 1;
    if (this.pendingBytes >= this.spillBytes) this.spill();
    return this;
  }

  /** A live version of `id`: a deletion of it written before is cancelled. */
  delete(id: string): boolean {
    if (this.written === 0 || !this.mightHave(id)) return false;
    this.lastSeen.set(id, this.written);
    return true;
  }

  /**
   * The deletions that count (the last version of each id, when archived), in the order they were
   * written, in batches; then the log is empty. Read the batches one at a time.
   */
  *drain(): Generator<RecordDeletion[]> {
    try {
      let batch: RecordDeletion[] = [];
      let sighting = 0;
      for (const text of this.lines()) {
        const [id, at, reason, rowIds] = JSON.parse(text) as DeletionLine;
        const last = this.lastSeen.get(id);
        if (last === undefined || last === sighting)
          batch.push({ id, deletedAt: new Date(at), reason, ...(rowIds ? { rowIds } : {}) });
        sighting += 1;
        if (batch.length >= DRAIN_BATCH) {
          yield batch;
          batch = [];
        }
      }
      if (batch.length > 0) yield batch;
    } finally {
      this.clear();
    }
  }

  /** Forgets every deletion written (the file is kept, emptied, for the next ones). */
  clear(): void {
    this.written = 0;
    this.pending = [];
    this.pendingBytes = 0;
    this.fileBytes = 0;
    this.filter?.fill(0);
    this.lastSeen.clear();
  }

  /**
   * Closes (and removes) the temporary file; best effort, so that a run's own outcome (or error) is
   * what its caller sees. The log can still be used; a new file opens if needed.
   */
  close(): void {
    const file = this.file;
    this.file = null;
    this.clear();
    if (!file) return;
    try {
      closeSync(file.fd);
      if (file.path !== null) unlinkSync(file.path);
    } catch {
      // Nothing to do: the descriptor goes with the process, and a kept file is in the temporary folder.
    }
  }

  private *lines(): Generator<string> {
    if (this.file && this.fileBytes > 0) {
      const decoder = new StringDecoder('utf8');
      const chunk = Buffer.allocUnsafe(Math.max(this.spillBytes, 4096));
      let carry = '';
      for (let position = 0; position < this.fileBytes; ) {
        const read = readSync(
          this.file.fd,
          chunk,
          0,
          Math.min(chunk.length, this.fileBytes - position),
          position,
        );
        if (read === 0) throw new Error('the temporary file of deletions ended early');
        position += read;
        const text = carry + decoder.write(chunk.subarray(0, read));
        const parts = text.split('\n');
        carry = parts.pop()!;
        yield* parts;
      }
      carry += decoder.end();
      if (carry !== '') throw new Error('the temporary file of deletions ends in the middle of a line');
    }
    for (const text of this.pending) yield text.slice(0, -1);
  }

  private spill(): void {
    if (this.pending.length === 0) return;
    const bytes = Buffer.from(this.pending.join(''), 'utf8');
    const file = this.file ?? this.openFile();
    for (let offset = 0; offset < bytes.length; )
      offset += writeSync(file.fd, bytes, offset, bytes.length - offset, this.fileBytes + offset);
    this.fileBytes += bytes.length;
    this.pending = [];
    this.pendingBytes = 0;
  }

  private openFile(): { fd: number; path: string | null } {
    const path = join(
      this.folder,
      `ccexport-deletions-${process.pid}-${Math.random().toString(36).slice(2)}`,
    );
    const fd = openSync(path, 'wx+', 0o600);
    let kept: string | null = null;
    try {
      // Unlinked while open (POSIX): the data stays until the descriptor closes, even on a kill.
      unlinkSync(path);
    } catch {
      kept = path; // Windows: an open file cannot be removed; `close` removes it.
    }
    this.file = { fd, path: kept };
    return this.file;
  }

  private mightHave(id: string): boolean {
    const filter = this.filter;
    if (filter === null) return false;
    let [h1, h2] = hashes(id);
    for (let i = 0; i < FILTER_HASHES; i += 1) {
      const bit = h1 & (FILTER_BITS - 1);
      if ((filter[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
      h1 = (h1 + h2) | 0;
    }
    return true;
  }

  private remember(id: string): void {
    this.filter ??= new Uint32Array(FILTER_BITS / 32);
    const filter = this.filter;
    let [h1, h2] = hashes(id);
    for (let i = 0; i < FILTER_HASHES; i += 1) {
      const bit = h1 & (FILTER_BITS - 1);
      const word = bit >>> 5;
      filter[word] = (filter[word] ?? 0) | (1 << (bit & 31));
      h1 = (h1 + h2) | 0;
    }
  }
}

/** Two independent 32-bit hashes of a string (FNV-1a with two bases, then a murmur3 finalizer). */
function hashes(text: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x9747b28c;
  for (let i = 0; i < text.length; i += 1) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  return [mix(a), mix(b) | 1];
}

function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h;
}

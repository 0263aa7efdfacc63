import { randomUUID } from 'node:crypto';
import { safeKeySegment } from '../sinks/cells';
import { ConcurrentRunError, LeaseLostError, PreconditionFailedError } from '../sinks/errors';
import type { ObjectStore } from '../sinks/store/types';
import type { SourceCheckpoint } from '../sinks/types';

/** The checkpoint object of one export: `<prefix>/checkpoints/<key>.json`. */
export interface CheckpointDocument {
  readonly format: 'ccexport-checkpoints/1';
  readonly checkpointKey: string;
  /** Incremented by every write; lets a reader see that a write happened. */
  readonly version: number;
  readonly updatedAt: string;
  /** Run and manifest of the last write: every object that manifest lists was complete before this write. */
  readonly runId: string;
  readonly manifest: string;
  readonly sources: readonly SourceCheckpoint[];
}

export function checkpointObjectKey(checkpointKey: string): string {
  return `checkpoints/${safeKeySegment(checkpointKey)}.json`;
}

export function leaseObjectKey(checkpointKey: string, project: string): string {
  return `checkpoints/${safeKeySegment(checkpointKey)}.${safeKeySegment(project)}.lease.json`;
}

function sameSource(a: SourceCheckpoint, b: { project: string; dataSource: string }): boolean {
  return a.project === b.project && a.dataSource === b.dataSource;
}

/** Checkpoints kept as an object next to the data (folder or S3), updated with conditional writes. */
export class ObjectCheckpointStore {
  constructor(private readonly store: ObjectStore) {}

  async readDocument(checkpointKey: string): Promise<{ doc: CheckpointDocument; etag: string } | null> {
    const found = await this.store.get(checkpointObjectKey(checkpointKey));
    if (!found) return null;
    return { doc: JSON.parse(found.body) as CheckpointDocument, etag: found.etag };
  }

  async read(checkpointKey: string, project: string, dataSource: string): Promise<SourceCheckpoint | null> {
    const found = await this.readDocument(checkpointKey);
    return found?.doc.sources.find((s) => sameSource(s, { project, dataSource })) ?? null;
  }

  /**
   * Merges `checkpoints` into the export's document with a read-compare-write: the write is
   * conditional on the version read (S3 `If-Match`, or `If-None-Match: *` when there is none), and a
   * lost race is re-read and retried, so a run for another project under the same key is never
   * overwritten. Runs of the same export are kept apart by the lease.
   */
  async write(
    checkpointKey: string,
    checkpoints: readonly SourceCheckpoint[],
    run: { runId: string; manifest: string },
  ): Promise<CheckpointDocument> {
    for (let attempt = 1; ; attempt++) {
      const current = await this.readDocument(checkpointKey);
      const kept = (current?.doc.sources ?? []).filter((s) => !checkpoints.some((c) => sameSource(s, c)));
      const doc: CheckpointDocument = {
        format: 'ccexport-checkpoints/1',
        checkpointKey,
        version: (current?.doc.version ?? 0) + 1,
        updatedAt: new Date().toISOString(),
        runId: run.runId,
        manifest: run.manifest,
        sources: [...kept, ...checkpoints],
      };
      try {
        await this.store.put(
          checkpointObjectKey(checkpointKey),
          `${JSON.stringify(doc, null, 2)}\n`,
          'application/json',
          current ? { ifMatch: current.etag } : { ifNoneMatch: '*' },
        );
        return doc;
      } catch (error) {
        if (!(error instanceof PreconditionFailedError) || attempt >= 5) throw error;
      }
    }
  }
}

interface LeaseBody {
  readonly holder: string;
  readonly runId: string;
  readonly expiresAt: string;
}

/**
 * A lease on one export (checkpoint key + project) so two runs cannot write at once: created with
 * `If-None-Match: *`, renewed and released with `If-Match` on our own version, and taken over only
 * after it expired (a crashed run cannot block the export for longer than `seconds`).
 */
export class ExportLease {
  private etag: string | undefined;
  private readonly holder = randomUUID();
  private readonly key: string;

  constructor(
    private readonly store: ObjectStore,
    checkpointKey: string,
    private readonly project: string,
    private readonly runId: string,
    private readonly seconds: number,
    private readonly now: () => number = Date.now,
  ) {
    this.key = leaseObjectKey(checkpointKey, project);
  }

  private body(): string {
    const lease: LeaseBody = {
      holder: this.holder,
      runId: this.runId,
      expiresAt: new Date(this.now() + this.seconds * 1000).toISOString(),
    };
    return JSON.stringify(lease);
  }

  async acquire(): Promise<void> {
    try {
      ({ etag: this.etag } = await this.store.put(this.key, this.body(), 'application/json', {
        ifNoneMatch: '*',
      }));
      return;
    } catch (error) {
      if (!(error instanceof PreconditionFailedError)) throw error;
    }
    const current = await this.store.get(this.key);
    if (current) {
      const held = JSON.parse(current.body) as LeaseBody;
      if (Date.parse(held.expiresAt) > this.now()) {
        throw new ConcurrentRunError(
          `Another run (${held.runId}) of this export is in progress for project "${this.project}" ` +
            `(lease ${this.store.uri(this.key)} held until ${held.expiresAt}); this run stops without writing`,
        );
      }
    }
    try {
      ({ etag: this.etag } = await this.store.put(
        this.key,
        this.body(),
        'application/json',
        current ? { ifMatch: current.etag } : { ifNoneMatch: '*' },
      ));
    } catch (error) {
      if (error instanceof PreconditionFailedError) {
        throw new ConcurrentRunError(
          `Another run of this export took the expired lease ${this.store.uri(this.key)} first; this run stops`,
          { cause: error },
        );
      }
      throw error;
    }
  }

  /** Extends the lease; fails if another run took it over (then this run must not checkpoint). */
  async renew(): Promise<void> {
    try {
      ({ etag: this.etag } = await this.store.put(this.key, this.body(), 'application/json', {
        ifMatch: this.etag!,
      }));
    } catch (error) {
      if (error instanceof PreconditionFailedError) {
        throw new LeaseLostError(
          `Run ${this.runId} lost its lease ${this.store.uri(this.key)} (it expired and another run took it)`,
          { cause: error },
        );
      }
      throw error;
    }
  }

  async release(): Promise<void> {
    if (!this.etag) return;
    const etag = this.etag;
    this.etag = undefined;
    // If somebody else holds it now, leave theirs alone.
    await this.store.delete(this.key, etag).catch((error: unknown) => {
      if (!(error instanceof PreconditionFailedError)) throw error;
    });
  }
}

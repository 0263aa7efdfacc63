import { randomUUID } from 'node:crypto';
import { safeKeySegment, shortHash } from '../sinks/cells';
import { ConcurrentRunError, LeaseLostError, PreconditionFailedError } from '../sinks/errors';
import type { ObjectStore } from '../sinks/store/types';
import type { SourceCheckpoint } from '../sinks/types';
import { currentProcess, type HolderProcess, processIsAlive } from './process';

export { currentProcess, type HolderProcess, processIsAlive } from './process';

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

/**
 * `checkpoints/<key>.json`. A key ending in `.lease` (any case) gets a hash suffix: its object would
 * otherwise be named like the lease of another export (`checkpoints/<k>.<project>.lease.json`), and a
 * lease write would replace the checkpoint.
 */
export function checkpointObjectKey(checkpointKey: string): string {
  const segment = safeKeySegment(checkpointKey);
  const safe = /\.lease$/i.test(segment) ? `${segment}-${shortHash(checkpointKey)}` : segment;
  return `checkpoints/${safe}.json`;
}

/**
 * `checkpoints/<key>.<project>.lease.json` when neither part holds a `.`; otherwise
 * `checkpoints/<key>.<project>-<hash>.lease.json`, with 16 hex of a hash of the pair. Joined with a dot
 * alone, key `a.b` with project `c` and key `a` with project `b.c` named one lease, so two different
 * exports refused (or took over) each other's lease. A name without the hash has exactly one dot before
 * `.lease.json` and so says where the key ends; one with the hash names its pair through the hash. The
 * names of pairs without a dot (most: HQ project names have none) are those earlier versions used.
 */
export function leaseObjectKey(checkpointKey: string, project: string): string {
  const key = safeKeySegment(checkpointKey);
  const space = safeKeySegment(project);
  if (!key.includes('.') && !space.includes('.')) return `checkpoints/${key}.${space}.lease.json`;
  return `checkpoints/${key}.${space}-${shortHash(JSON.stringify([checkpointKey, project]), 16)}.lease.json`;
}

/**
 * The name earlier versions gave the lease (`<key>.<project>.lease.json`, ambiguous when a part holds a
 * dot), or null when it is the current name. `acquire` refuses while a live lease sits there: it may be
 * a run of this export by an earlier version of the program.
 */
export function legacyLeaseObjectKey(checkpointKey: string, project: string): string | null {
  const legacy = `checkpoints/${safeKeySegment(checkpointKey)}.${safeKeySegment(project)}.lease.json`;
  return legacy === leaseObjectKey(checkpointKey, project) ? null : legacy;
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

  /**
   * Removes the checkpoints of `project` from the export's document (`ccexport checkpoint`), with the
   * same read-compare-write as `write`, so that a run of another project under the key is not undone;
   * the object is deleted when no project is left. Returns what was removed.
   */
  async removeProject(checkpointKey: string, project: string): Promise<SourceCheckpoint[]> {
    for (let attempt = 1; ; attempt++) {
      const current = await this.readDocument(checkpointKey);
      if (!current) return [];
      const removed = current.doc.sources.filter((s) => s.project === project);
      if (removed.length === 0) return [];
      const kept = current.doc.sources.filter((s) => s.project !== project);
      const key = checkpointObjectKey(checkpointKey);
      try {
        if (kept.length === 0) await this.store.delete(key, current.etag);
        else {
          const doc: CheckpointDocument = {
            ...current.doc,
            version: current.doc.version + 1,
            updatedAt: new Date().toISOString(),
            sources: kept,
          };
          await this.store.put(key, `${JSON.stringify(doc, null, 2)}\n`, 'application/json', {
            ifMatch: current.etag,
          });
        }
        return removed;
      } catch (error) {
        if (!(error instanceof PreconditionFailedError) || attempt >= 5) throw error;
      }
    }
  }
}

/** `<prefix>/checkpoints/<key>.<project>.lease.json`. Fields other than the first three were added later. */
export interface LeaseBody {
  /** Random id of this lease instance. */
  readonly holder: string;
  readonly runId: string;
  readonly expiresAt: string;
  readonly host?: string;
  readonly pid?: number;
  readonly machine?: string;
  /** When the holder acquired the lease. */
  readonly startedAt?: string;
  readonly renewedAt?: string;
}

export interface ExportLeaseOptions {
  /** Clock for expiry times. @default Date.now */
  readonly now?: () => number;
  /** Identity written into the lease; tests stand in for other processes and hosts. @default currentProcess() */
  readonly holder?: Partial<HolderProcess>;
  /** Whether a process of this machine is running. @default processIsAlive */
  readonly isProcessAlive?: (pid: number) => boolean;
  /** Interval of `startHeartbeat`. @default a third of the lease */
  readonly heartbeatMs?: number;
}

/** How `acquire` got the lease when another run's lease was there. */
export interface LeaseTakeover {
  readonly reason: 'expired' | 'holder-not-running';
  readonly previous: LeaseBody;
}

function parseLease(body: string): LeaseBody | null {
  try {
    const lease = JSON.parse(body) as LeaseBody;
    return typeof lease?.expiresAt === 'string' && typeof lease.runId === 'string' ? lease : null;
  } catch {
    return null;
  }
}

/**
 * A lease on one export (checkpoint key + project) so two runs cannot write at once: created with
 * `If-None-Match: *`, renewed (by `startHeartbeat` and at every commit) and released with `If-Match`
 * on our own version. Another run takes it over with `If-Match` on the version it read, so of two
 * runs taking over at once only one wins: when it expired, or at once when its holder was a process
 * of this machine that is no longer running (a run killed with SIGKILL, an OOM kill, a closed laptop).
 */
export class ExportLease {
  private etag: string | undefined;
  private readonly holder = randomUUID();
  private readonly key: string;
  /** Where an earlier version of the program named this lease, when that differs (see `legacyLeaseObjectKey`). */
  private readonly legacyKey: string | null;
  private readonly now: () => number;
  private readonly me: HolderProcess;
  private readonly isProcessAlive: (pid: number) => boolean;
  private readonly heartbeatMs: number;
  private startedAt = '';
  /** Renewals run one at a time: two concurrent `If-Match` writes on our own version would fail one. */
  private queue: Promise<unknown> = Promise.resolve();
  private beating = false;
  private timer: NodeJS.Timeout | undefined;
  private lost: LeaseLostError | undefined;
  /** Set when `acquire` took over another run's lease. */
  takeover: LeaseTakeover | undefined;

  constructor(
    private readonly store: ObjectStore,
    checkpointKey: string,
    private readonly project: string,
    private readonly runId: string,
    private readonly seconds: number,
    options: ExportLeaseOptions = {},
  ) {
    this.key = leaseObjectKey(checkpointKey, project);
    this.legacyKey = legacyLeaseObjectKey(checkpointKey, project);
    this.now = options.now ?? Date.now;
    this.me = { ...currentProcess(), ...options.holder };
    this.isProcessAlive = options.isProcessAlive ?? processIsAlive;
    this.heartbeatMs = options.heartbeatMs ?? (seconds * 1000) / 3;
  }

  /** `s3://…/checkpoints/….lease.json` or the file's path. */
  get uri(): string {
    return this.store.uri(this.key);
  }

  private body(): string {
    const now = this.now();
    const lease: LeaseBody = {
      holder: this.holder,
      runId: this.runId,
      expiresAt: new Date(now + this.seconds * 1000).toISOString(),
      host: this.me.host,
      pid: this.me.pid,
      machine: this.me.machine,
      startedAt: this.startedAt,
      renewedAt: new Date(now).toISOString(),
    };
    return JSON.stringify(lease, null, 2);
  }

  /**
   * A conditional write of our lease; false when the condition did not hold. A refused condition may
   * be our own write: when S3's answer to a write that went through is lost (a 500 or a reset after
   * the object was stored), the SDK sends the same request again, and its condition (the old ETag, or
   * "no object yet") now fails against our own new version. So on a refusal the lease is read back,
   * and a lease that carries this instance's holder id was written by us: it is ours, at that version.
   */
  private async tryPut(condition: { ifNoneMatch: '*' } | { ifMatch: string }): Promise<boolean> {
    try {
      ({ etag: this.etag } = await this.store.put(this.key, this.body(), 'application/json', condition));
      return true;
    } catch (error) {
      if (!(error instanceof PreconditionFailedError)) throw error;
      const current = await this.store.get(this.key);
      if (current && parseLease(current.body)?.holder === this.holder) {
        this.etag = current.etag;
        return true;
      }
      return false;
    }
  }

  /** Is the holder a process of this machine that we can see is gone? */
  private holderIsDeadHere(held: LeaseBody): boolean {
    if (held.host !== this.me.host || typeof held.pid !== 'number' || !Number.isInteger(held.pid))
      return false;
    if (held.machine && this.me.machine && held.machine !== this.me.machine) return false;
    return held.pid > 0 && !this.isProcessAlive(held.pid);
  }

  private refusal(held: LeaseBody | null): ConcurrentRunError {
    const uri = this.uri;
    if (!held) {
      return new ConcurrentRunError(
        `The lease ${uri} of this export for project "${this.project}" cannot be read (it is not a lease this ` +
          `program wrote); this run stops without writing. If you are sure no run of this export is active, delete ${uri}.`,
      );
    }
    const since = held.startedAt ? `, started ${held.startedAt}` : '';
    const sameMachine =
      held.host === this.me.host && !(held.machine && this.me.machine && held.machine !== this.me.machine);
    let who: string;
    let wait: string;
    if (held.host === undefined || held.pid === undefined) {
      who = 'its holder is not recorded (a lease written by an older version)';
      wait = `Wait until ${held.expiresAt}, when the lease expires if that run is gone, and run again`;
    } else if (sameMachine) {
      who = `process ${held.pid} on this host (${held.host})${since}, is still running`;
      wait =
        `Wait for that run to finish (it renews the lease while it runs; if it stops, the lease expires at ` +
        `${held.expiresAt}) and run again`;
    } else {
      who =
        `it runs as process ${held.pid} on host "${held.host}"${since}` +
        (held.host === this.me.host ? ' (another container or boot of this host name)' : '') +
        ', which cannot be checked from here';
      wait = `Wait until ${held.expiresAt}, when the lease expires if that run is gone, and run again`;
    }
    return new ConcurrentRunError(
      `Another run (${held.runId}) of this export is in progress for project "${this.project}": ${who}. ` +
        `Its lease ${uri} is held until ${held.expiresAt}. ${wait}, or, if you are sure no run of this ` +
        `export is active, delete ${uri}. This run stops without writing.`,
    );
  }

  async acquire(): Promise<void> {
    await this.acquireOwn();
    try {
      await this.checkLegacyLease();
    } catch (error) {
      await this.release().catch(() => undefined);
      throw error;
    }
  }

  /**
   * A run of an earlier version of the program names this export's lease `legacyKey`: while a live lease
   * is there (unexpired, its holder not a process of this machine that is gone), this run refuses as it
   * would for its own lease. That lease may also belong to another export whose key and project join
   * to the same name; it expires or is released by itself, and the message says so. Nothing is written
   * under the old name.
   */
  private async checkLegacyLease(): Promise<void> {
    if (this.legacyKey === null) return;
    const found = await this.store.get(this.legacyKey);
    if (!found) return;
    const held = parseLease(found.body);
    if (!held || !(Date.parse(held.expiresAt) > this.now()) || this.holderIsDeadHere(held)) return;
    const uri = this.store.uri(this.legacyKey);
    throw new ConcurrentRunError(
      `Another run (${held.runId}) may be in progress for this export and project "${this.project}": a live ` +
        `lease ${uri} is held until ${held.expiresAt} under the name earlier versions of ccexport gave this ` +
        `export's lease (a run of an earlier version, or of another export whose checkpoint key and project ` +
        `join to the same name). Wait until ${held.expiresAt} and run again, or, if you are sure no such run ` +
        `is active, delete ${uri}. This run stops without writing.`,
    );
  }

  private async acquireOwn(): Promise<void> {
    this.startedAt = new Date(this.now()).toISOString();
    for (let attempt = 1; ; attempt++) {
      if (await this.tryPut({ ifNoneMatch: '*' })) return;
      const current = await this.store.get(this.key);
      // Released between our create and our read: create again. Otherwise judge the holder.
      if (current) {
        const held = parseLease(current.body);
        if (!held) throw this.refusal(null);
        let reason: LeaseTakeover['reason'] | undefined;
        if (!(Date.parse(held.expiresAt) > this.now())) reason = 'expired';
        else if (this.holderIsDeadHere(held)) reason = 'holder-not-running';
        else throw this.refusal(held);
        if (await this.tryPut({ ifMatch: current.etag })) {
          this.takeover = { reason, previous: held };
          return;
        }
      }
      // Somebody changed the lease since we read it (another run taking it over, most likely): read again.
      if (attempt >= 5) {
        throw new ConcurrentRunError(
          `Another run of this export for project "${this.project}" changed the lease ${this.uri} at every ` +
            `attempt to take it; this run stops without writing`,
        );
      }
    }
  }

  /** Extends the lease; fails if another run took it over (then this run must not checkpoint). */
  renew(): Promise<void> {
    const next = this.queue.then(() => this.renewNow());
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async renewNow(): Promise<void> {
    if (this.lost) throw this.lost;
    if (!this.etag) {
      throw new LeaseLostError(
        `Run ${this.runId} does not hold the lease ${this.uri} (never acquired or released)`,
      );
    }
    // Other failures (network) leave the lease as it was: the heartbeat retries, a commit fails with them.
    if (!(await this.tryPut({ ifMatch: this.etag }))) {
      this.lost = new LeaseLostError(
        `Run ${this.runId} lost its lease ${this.uri} (it was not renewed in time and another run took it ` +
          `over, or the lease was deleted); this run stops without writing a checkpoint`,
      );
      this.stopHeartbeat();
      throw this.lost;
    }
  }

  /** Throws the `LeaseLostError` a renewal saw, so a run that lost its lease stops early. */
  throwIfLost(): void {
    if (this.lost) throw this.lost;
  }

  /**
   * Renews the lease every `heartbeatMs` until `release` (or until it is lost), so a run that is
   * alive keeps it however long it runs between commits. The timer does not keep the process alive.
   * A failed renewal (network) is retried at the next beat; a lost lease is kept for the next commit.
   */
  startHeartbeat(): void {
    if (this.beating || !this.etag) return;
    this.beating = true;
    const schedule = () => {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.renew()
          .catch(() => undefined)
          .finally(() => {
            if (this.beating && !this.lost) schedule();
          });
      }, this.heartbeatMs);
      this.timer.unref();
    };
    schedule();
  }

  stopHeartbeat(): void {
    this.beating = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  async release(): Promise<void> {
    this.stopHeartbeat();
    await this.queue; // a renewal in flight would otherwise change the version we delete
    if (!this.etag) return;
    const etag = this.etag;
    this.etag = undefined;
    // If somebody else holds it now, leave theirs alone.
    await this.store.delete(this.key, etag).catch((error: unknown) => {
      if (!(error instanceof PreconditionFailedError)) throw error;
    });
  }
}

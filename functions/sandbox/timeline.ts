/**
 * The indexed_on timeline of one event-sourced resource (forms or cases), computed arithmetically.
 *
 * Events are laid out in blocks of `perBlock` originals followed (when re-indexing is on) by one
 * re-index event, so "what is event j" and "which events touch record i" are O(1) and a lookup by
 * time is O(1) too (the time of a tie group is an affine function plus bounded jitter). Nothing is
 * stored per record: a 1,000,000-form project costs the same memory as a 10-form one.
 *
 * - Event j of block b at position p < perBlock is the first version of record b*perBlock+p.
 * - The re-index event of block b edits one record of block b (if b < lag) or of block b-lag, so a
 *   record comes back later in indexed_on order with changed fields (HQ: "If any cases are updated
 *   during the data pull, they may appear again towards the end of the results set", cases-v2 docs).
 * - Live events (records updated during a pull) come after every base event; the server hides them
 *   until enough data requests have been served. They edit the last slot of a block, which base
 *   re-index events never touch, so each record has at most three versions, all computable.
 * - Runs of `tieRun` consecutive events share one indexed_on value, so ties straddle page boundaries.
 * - Change events (a form archived or unarchived while the sandbox runs, `addChange`) come after the
 *   live ones, one tie group each, so they are the latest versions of their records.
 */
import { hash } from './prng';

export type EventKind = 'original' | 'reindex' | 'live' | 'change';

export interface TimelineEvent {
  readonly record: number;
  readonly kind: EventKind;
}

export interface TimelineConfig {
  /** Number of records. */
  readonly count: number;
  /** Share of records re-indexed later, clamped to 0..0.5. */
  readonly reindexedShare: number;
  /** Consecutive events sharing one indexed_on value (>= 1). */
  readonly tieRun: number;
  /** Whether live (during-the-pull) re-index events exist. */
  readonly live: boolean;
  /** Per project and resource, so two timelines differ. */
  readonly salt: number;
}

/** 2024-01-01T00:00:00Z in microseconds. */
const START_MICROS = Date.UTC(2024, 0, 1) * 1000;
/** The base timeline spans about 18 months whatever the record count. */
const SPAN_MICROS = 540 * 86_400 * 1_000_000;
/** Keeps received_on (indexed_on minus < 1 s) monotone between tie groups. */
const MIN_STEP_MICROS = 4_000_000;

export class Timeline {
  readonly count: number;
  readonly tieRun: number;
  /** Originals per block. */
  readonly perBlock: number;
  /** Events per block (perBlock, plus one when re-indexing is on). */
  readonly blockSize: number;
  readonly reindexing: boolean;
  readonly fullBlocks: number;
  readonly lag: number;
  readonly baseLength: number;
  readonly liveLength: number;
  readonly step: number;
  private readonly salt: number;
  /** Record of each change event, in order (event baseLength + liveLength + k). */
  private readonly changes: number[] = [];
  /** Change events per record. */
  private readonly changesOf = new Map<number, number[]>();

  constructor(config: TimelineConfig) {
    this.count = Math.max(0, Math.floor(config.count));
    this.tieRun = Math.max(1, Math.floor(config.tieRun));
    this.salt = config.salt >>> 0;
    const share = Math.min(0.5, Math.max(0, config.reindexedShare));
    this.reindexing = share > 0 && this.count >= 2;
    // perBlock >= tieRun + 2 keeps two versions of one record out of one tie group (HQ's index holds
    // one document per id, so a tie never repeats an id; DatePaginator drops boundary ids by id).
    this.perBlock = this.reindexing ? Math.max(2, this.tieRun + 2, Math.round(1 / share)) : 20;
    this.blockSize = this.perBlock + (this.reindexing ? 1 : 0);
    this.fullBlocks = Math.floor(this.count / this.perBlock);
    const remainder = this.count - this.fullBlocks * this.perBlock;
    this.baseLength = this.fullBlocks * this.blockSize + remainder;
    this.lag = Math.max(1, Math.min(500, Math.floor(this.fullBlocks / 4)));
    this.liveLength =
      config.live && this.fullBlocks >= 1
        ? Math.max(1, Math.min(this.fullBlocks, Math.round(this.fullBlocks * 0.2)))
        : 0;
    const groups = Math.max(1, Math.ceil(this.baseLength / this.tieRun));
    this.step = Math.max(MIN_STEP_MICROS, Math.floor(SPAN_MICROS / groups));
  }

  /** All events, live and change ones included. */
  get totalLength(): number {
    return this.baseLength + this.liveLength + this.changes.length;
  }

  /** Index of the first change event. */
  get changeStart(): number {
    return this.baseLength + this.liveLength;
  }

  /**
   * Number of events visible with or without the live ones. Once a change event exists the live
   * events are visible too (changes come after them).
   */
  visibleLength(liveVisible: boolean): number {
    return liveVisible || this.changes.length > 0 ? this.totalLength : this.baseLength;
  }

  /** Appends a change event of record i (a new latest version); returns its event index. */
  addChange(i: number): number {
    const j = this.totalLength;
    this.changes.push(i);
    const list = this.changesOf.get(i) ?? [];
    list.push(j);
    this.changesOf.set(i, list);
    return j;
  }

  /** Slot edited by the re-index event of a block b >= lag (in block b - lag). */
  private reindexSlot(block: number): number {
    return hash(this.salt, 5, block) % (this.perBlock - 1);
  }

  /** Slot edited by the re-index event of a block b < lag (in its own block, >= tieRun events back). */
  private ownSlot(block: number): number {
    return hash(this.salt, 6, block) % (this.perBlock - 1 - this.tieRun);
  }

  /** Tie groups of base events; live events start a fresh group so they never tie with base events. */
  get baseGroups(): number {
    return Math.ceil(this.baseLength / this.tieRun);
  }

  /** Tie groups of live events; change events follow with one group each. */
  private get liveGroups(): number {
    return Math.ceil(this.liveLength / this.tieRun);
  }

  private groupOf(j: number): number {
    if (j < this.baseLength) return Math.floor(j / this.tieRun);
    if (j < this.changeStart) return this.baseGroups + Math.floor((j - this.baseLength) / this.tieRun);
    return this.baseGroups + this.liveGroups + (j - this.changeStart);
  }

  private firstEventOf(g: number): number {
    if (g < this.baseGroups) return g * this.tieRun;
    if (g < this.baseGroups + this.liveGroups) return this.baseLength + (g - this.baseGroups) * this.tieRun;
    return this.changeStart + (g - this.baseGroups - this.liveGroups);
  }

  private liveBlock(m: number): number {
    return Math.floor((m * this.fullBlocks) / this.liveLength);
  }

  event(j: number): TimelineEvent {
    if (j >= this.changeStart) return { record: this.changes[j - this.changeStart]!, kind: 'change' };
    if (j >= this.baseLength) {
      const m = j - this.baseLength;
      return { record: this.liveBlock(m) * this.perBlock + this.perBlock - 1, kind: 'live' };
    }
    const block = Math.floor(j / this.blockSize);
    const position = j - block * this.blockSize;
    if (position < this.perBlock) return { record: block * this.perBlock + position, kind: 'original' };
    if (block < this.lag) return { record: block * this.perBlock + this.ownSlot(block), kind: 'reindex' };
    return { record: (block - this.lag) * this.perBlock + this.reindexSlot(block), kind: 'reindex' };
  }

  /** Event indexes of every version of record i, ascending (live ones included). */
  versions(i: number): number[] {
    const block = Math.floor(i / this.perBlock);
    const slot = i - block * this.perBlock;
    const out = [block * this.blockSize + slot];
    if (block >= this.fullBlocks) {
      const changed = this.changesOf.get(i);
      if (changed) out.push(...changed);
      return out;
    }
    if (this.reindexing && slot < this.perBlock - 1) {
      if (block < this.lag && this.ownSlot(block) === slot) out.push(block * this.blockSize + this.perBlock);
      const later = block + this.lag;
      if (later < this.fullBlocks && this.reindexSlot(later) === slot)
        out.push(later * this.blockSize + this.perBlock);
    }
    if (this.liveLength > 0 && slot === this.perBlock - 1) {
      const m = Math.ceil((block * this.liveLength) / this.fullBlocks);
      if (m < this.liveLength && this.liveBlock(m) === block) out.push(this.baseLength + m);
    }
    const changed = this.changesOf.get(i);
    if (changed) out.push(...changed);
    return out;
  }

  /**
   * Whether event j modified its record. A share of re-index events modified nothing (HQ re-indexes
   * documents during maintenance): the record comes back with a new `indexed_on` but the same content and
   * the same `server_modified_on`, so `indexed_on`, `server_modified_on` and `received_on` are separate
   * time lines and a pager that follows the wrong one is caught.
   */
  modifies(j: number): boolean {
    const { kind } = this.event(j);
    return kind !== 'reindex' || hash(this.salt, 9, j) % 3 !== 0;
  }

  /** The latest version of record i at or before event j that modified it (archive changes included). */
  modifiedAt(i: number, j: number): number {
    let found = -1;
    for (const v of this.versions(i)) if (v <= j && (found < 0 || this.modifies(v))) found = v;
    return found;
  }

  /** The latest version of record i at or before event j whose content it carries (no archive changes). */
  contentAt(i: number, j: number): number {
    let found = -1;
    for (const v of this.versions(i))
      if (v <= j && (found < 0 || (this.modifies(v) && this.event(v).kind !== 'change'))) found = v;
    return found;
  }

  /** The last event of record i among the first `visible` events. */
  latest(i: number, visible: number): number {
    const all = this.versions(i);
    for (let k = all.length - 1; k > 0; k--) if (all[k]! < visible) return all[k]!;
    return all[0]!;
  }

  /** indexed_on of tie group g, in microseconds since the epoch. */
  groupTime(g: number): number {
    return START_MICROS + g * this.step + (hash(this.salt, 7, g) % Math.floor(this.step / 2));
  }

  /** received_on / server_date_modified of tie group g: shortly (0.1–1 s) before indexed_on. */
  groupReceived(g: number): number {
    return this.groupTime(g) - 100_000 - (hash(this.salt, 8, g) % 900_000);
  }

  time(j: number): number {
    return this.groupTime(this.groupOf(j));
  }

  received(j: number): number {
    return this.groupReceived(this.groupOf(j));
  }

  /** First event index whose value (per `which`) is >= micros; O(1) thanks to the affine layout. */
  lowerBound(micros: number, which: 'indexed' | 'received'): number {
    const f = which === 'indexed' ? (g: number) => this.groupTime(g) : (g: number) => this.groupReceived(g);
    let g = Math.max(0, Math.floor((micros - START_MICROS) / this.step) - 1);
    while (g > 0 && f(g) >= micros) g--;
    while (f(g) < micros) g++;
    return this.firstEventOf(g);
  }
}

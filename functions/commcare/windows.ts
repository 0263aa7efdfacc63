/**
 * Parallel pulls beyond DET: a known `indexed_on` range is cut into windows, each its own keyset pull
 * (`indexed_on_start`..`indexed_on_end`), fetched concurrently and emitted strictly in window order, so
 * the pages and positions the caller sees are the ones a sequential pull would give.
 *
 * Memory: pages are counted before they are fetched. The head window (the one being emitted) fetches its
 * next page while the caller works on the current one, holding at most `queuePages` unread pages. Windows
 * ahead of it share one budget of (limit − 1) × `queuePages` pages, fetched or being fetched, and each
 * holds at most `queuePages`, so the pages held do not grow with the range or the window size; keeping
 * `limit` requests in flight then needs windows of about one page (the client's default).
 *
 * Concurrency adapts like TCP (AIMD): a 429 halves the limit, at most once per round (a 429 answering a
 * request sent before the last decrease is the same congestion event, already acted on), and each round
 * of `limit` successes adds one, between 1 and the configured maximum.
 */
import type { Micros } from './dates';

export interface AimdOptions {
  /** Starting limit. */
  readonly initial: number;
  /** Ceiling for growth. */
  readonly max: number;
  /**
   * Successes before the limit grows by one. @default the current limit (one round, as TCP's congestion
   * avoidance), so growth takes longer the higher the limit already is.
   */
  readonly increaseAfter?: number;
}

export class AimdLimiter {
  private current: number;
  private successes = 0;
  /** Requests begun so far; a request's ticket is its number. */
  private sent = 0;
  /** Tickets up to this one were sent before the last decrease. */
  private decreasedAt = 0;
  constructor(private readonly options: AimdOptions) {
    this.current = Math.max(1, Math.min(options.initial, options.max));
  }
  get limit(): number {
    return this.current;
  }
  /** A request is being sent; pass the ticket back to `onThrottle` / `onSuccess`. */
  begin(): number {
    this.sent += 1;
    return this.sent;
  }
  /** A 429; without a ticket it counts as a new round. */
  onThrottle(ticket?: number): void {
    if (ticket !== undefined && ticket <= this.decreasedAt) return;
    this.current = Math.max(1, Math.floor(this.current / 2));
    this.successes = 0;
    this.decreasedAt = this.sent;
  }
  onSuccess(_ticket?: number): void {
    this.successes += 1;
    if (this.successes >= (this.options.increaseAfter ?? this.current)) {
      this.successes = 0;
      this.current = Math.min(this.options.max, this.current + 1);
    }
  }
}

/**
 * Cuts [lo, hi] into at most `count` windows and returns the interior boundaries (strictly increasing,
 * all in (lo, hi]). Fewer boundaries come back when the range is too narrow to cut that finely.
 */
export function splitRange(lo: Micros, hi: Micros, count: number): Micros[] {
  const out: Micros[] = [];
  if (!(hi > lo) || count <= 1) return out;
  const step = (hi - lo) / count;
  let previous = lo;
  for (let i = 1; i < count; i += 1) {
    const boundary = Math.round(lo + step * i);
    if (boundary > previous && boundary <= hi) {
      out.push(boundary);
      previous = boundary;
    }
  }
  return out;
}

/** A single-producer, single-consumer queue that makes the producer wait while it is full. */
export class BoundedQueue<T> {
  private readonly items: T[] = [];
  private done = false;
  private error: { value: unknown } | null = null;
  private wakeConsumer: (() => void) | null = null;
  private wakeProducer: (() => void) | null = null;
  private cancelled = false;

  constructor(private readonly capacity: number) {}

  /** Resolves false when the consumer has gone away (the producer should stop). */
  async push(item: T): Promise<boolean> {
    while (this.items.length >= this.capacity && !this.cancelled) {
      await new Promise<void>((resolve) => {
        this.wakeProducer = resolve;
      });
    }
    if (this.cancelled) return false;
    this.items.push(item);
    this.wake('consumer');
    return true;
  }

  close(): void {
    this.done = true;
    this.wake('consumer');
  }

  fail(error: unknown): void {
    this.error = { value: error };
    this.wake('consumer');
  }

  cancel(): void {
    this.cancelled = true;
    this.wake('producer');
  }

  /** The next item, or `done`; throws the producer's error once the items before it are taken. */
  async shift(): Promise<IteratorResult<T, undefined>> {
    for (;;) {
      if (this.items.length > 0) {
        const value = this.items.shift() as T;
        this.wake('producer');
        return { done: false, value };
      }
      if (this.error) throw this.error.value;
      if (this.done) return { done: true, value: undefined };
      await new Promise<void>((resolve) => {
        this.wakeConsumer = resolve;
      });
    }
  }

  private wake(who: 'consumer' | 'producer'): void {
    const fn = who === 'consumer' ? this.wakeConsumer : this.wakeProducer;
    if (who === 'consumer') this.wakeConsumer = null;
    else this.wakeProducer = null;
    fn?.();
  }
}

export interface OrderedMergeOptions {
  readonly limiter: AimdLimiter;
  /** Pages one window may hold unread (fetched or being fetched, for windows ahead of the head). */
  readonly queuePages: number;
}

/** One open source: its unread items and whether it is fetching, done or failed. */
interface Lane<T> {
  readonly items: T[];
  fetching: boolean;
  done: boolean;
}

/**
 * Runs `sources` (in order, lazily) with at most `limiter.limit` open at a time and yields their items in
 * source order. A source is asked for its next item only when there is room for it (see the file header),
 * so nothing is fetched to wait without bound. The first failure anywhere ends the merge at once: other
 * windows are stopped, and what was already yielded stays valid because it came strictly in order.
 */
export async function* orderedMerge<T>(
  sources: Iterable<() => AsyncIterable<T>>,
  options: OrderedMergeOptions,
): AsyncGenerator<T> {
  const pending = sources[Symbol.iterator]();
  const q = options.queuePages;
  const open: Lane<T>[] = [];
  let exhausted = false;
  let stopped = false;
  // A holder, not a `let`: it is set from the lanes' closures.
  const failed: { error?: unknown; set: boolean } = { set: false };
  let waiters: Array<() => void> = [];
  const notify = (): void => {
    const wake = waiters;
    waiters = [];
    for (const fn of wake) fn();
  };
  const changed = (): Promise<void> => new Promise((resolve) => waiters.push(resolve));

  const heldAhead = (): number => {
    let n = 0;
    for (let k = 1; k < open.length; k += 1) n += open[k]!.items.length + (open[k]!.fetching ? 1 : 0);
    return n;
  };
  const mayFetch = (lane: Lane<T>): boolean => {
    if (open[0] === lane) return lane.items.length < q;
    return lane.items.length < q && heldAhead() < Math.max(0, options.limiter.limit - 1) * q;
  };

  const run = async (lane: Lane<T>, source: () => AsyncIterable<T>): Promise<void> => {
    let iterator: AsyncIterator<T> | null = null;
    try {
      iterator = source()[Symbol.asyncIterator]();
      for (;;) {
        while (!stopped && !mayFetch(lane)) await changed();
        if (stopped) break;
        lane.fetching = true;
        const step = await iterator.next();
        lane.fetching = false;
        if (step.done) {
          lane.done = true;
          notify();
          return;
        }
        lane.items.push(step.value);
        notify();
      }
      await iterator.return?.();
    } catch (error) {
      lane.fetching = false;
      if (!failed.set) {
        failed.set = true;
        failed.error = error;
      }
      notify();
    }
  };

  const start = (): void => {
    while (!exhausted && !stopped && open.length < options.limiter.limit) {
      const next = pending.next();
      if (next.done) {
        exhausted = true;
        return;
      }
      const lane: Lane<T> = { items: [], fetching: false, done: false };
      open.push(lane);
      void run(lane, next.value);
    }
  };

  try {
    start();
    while (open.length > 0) {
      if (failed.set) throw failed.error;
      const head = open[0]!;
      if (head.items.length > 0) {
        const value = head.items.shift() as T;
        // The head may fetch its next page while the caller works on this one.
        notify();
        yield value;
      } else if (head.done) {
        open.shift();
        start();
        notify();
      } else {
        await changed();
      }
    }
  } finally {
    stopped = true;
    notify();
  }
}

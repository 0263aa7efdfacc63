/**
 * Parallel pulls beyond DET: a known `indexed_on` range is cut into windows, each its own keyset pull
 * (`indexed_on_start`..`indexed_on_end`), fetched concurrently and emitted strictly in window order, so
 * the pages and positions the caller sees are the ones a sequential pull would give.
 *
 * Memory: a window that is not at the head of the line stops fetching once its queue holds
 * `queuePages` pages, and at most `limit` windows are open at once, so at most limit × queuePages pages
 * are held whatever the size of the range.
 *
 * Concurrency adapts like TCP (AIMD): the limit halves on every 429 and grows back by one after a run of
 * successful requests, between 1 and the configured maximum.
 */
import type { Micros } from './dates';

export interface AimdOptions {
  /** Starting limit. */
  readonly initial: number;
  /** Ceiling for growth. */
  readonly max: number;
  /** Successful requests in a row before the limit grows by one. */
  readonly increaseAfter: number;
}

export class AimdLimiter {
  private current: number;
  private successes = 0;
  constructor(private readonly options: AimdOptions) {
    this.current = Math.max(1, Math.min(options.initial, options.max));
  }
  get limit(): number {
    return this.current;
  }
  onThrottle(): void {
    this.current = Math.max(1, Math.floor(this.current / 2));
    this.successes = 0;
  }
  onSuccess(): void {
    this.successes += 1;
    if (this.successes >= this.options.increaseAfter) {
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
  /** Pages a window may hold before it pauses (the head window never waits on the consumer long). */
  readonly queuePages: number;
}

/**
 * Runs `sources` (in order, lazily) with at most `limiter.limit` open at a time and yields their items in
 * source order. The first failure anywhere ends the merge at once: other windows are cancelled, and what
 * was already yielded stays valid because it came strictly in order.
 */
export async function* orderedMerge<T>(
  sources: Iterable<() => AsyncIterable<T>>,
  options: OrderedMergeOptions,
): AsyncGenerator<T> {
  const pending = sources[Symbol.iterator]();
  const open: BoundedQueue<T>[] = [];
  let exhausted = false;
  let failure: { error: unknown } | null = null;
  let wakeOnFailure: (() => void) | null = null;

  const start = (): void => {
    while (!exhausted && open.length < options.limiter.limit) {
      const next = pending.next();
      if (next.done) {
        exhausted = true;
        return;
      }
      const queue = new BoundedQueue<T>(options.queuePages);
      open.push(queue);
      const source = next.value;
      void (async () => {
        try {
          for await (const item of source()) {
            if (!(await queue.push(item))) return;
          }
          queue.close();
        } catch (error) {
          queue.fail(error);
          failure ??= { error };
          wakeOnFailure?.();
        }
      })();
    }
  };

  try {
    start();
    while (open.length > 0) {
      const head = open[0]!;
      // Wait for the head's next item, or for any window to fail (fail fast, not when its turn comes).
      const step = await Promise.race([
        head.shift(),
        new Promise<'failed'>((resolve) => {
          if (failure) resolve('failed');
          else wakeOnFailure = () => resolve('failed');
        }),
      ]);
      wakeOnFailure = null;
      if (step === 'failed') throw failure!.error;
      if (step.done) {
        open.shift();
      } else {
        yield step.value;
      }
      start();
    }
  } finally {
    for (const queue of open) queue.cancel();
  }
}

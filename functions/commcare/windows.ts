/**
 * Parallel pulls beyond DET: a known `indexed_on` range is cut into windows, each its own keyset pull
 * (`indexed_on_start`..`indexed_on_end`), fetched concurrently and emitted strictly in window order, so
 * the pages and positions the caller sees are the ones a sequential pull would give.
 *
 * Memory: pages are counted before they are fetched. The head window (the one being emitted) fetches its
 * next page while the caller works on the current one, holding at most `queuePages` unread pages. Windows
 * ahead of it share one budget of pages, fetched or being fetched, and each holds at most `queuePages`,
 * so the pages held do not grow with the range or the window size. While the caller waits on the head
 * the budget is (2·max − 1) × `queuePages`, set by the maximum limit rather than the current one: the
 * limit is how hard we press HQ (requests in flight), the budget how much we hold, and a slow or
 * throttled head window should not also stop the windows ahead from using the requests the limit still
 * allows. While the caller is busy it is (limit − 1) × `queuePages`, so a slow writer does not make
 * pages pile up.
 *
 * Concurrency adapts like TCP (AIMD): a 429 cuts the limit to 0.7 of itself (at least one less), at most
 * once per round (a 429 answering a request sent before the last decrease is the same congestion event,
 * already acted on), and each round of `limit` successes adds one, between 1 and the configured maximum.
 */
import type { Micros } from './dates';
import type { RequestHooks } from './http';

/**
 * What a 429 leaves of the limit (rounded, and always at least one less): CUBIC's 0.7 rather than
 * Reno's halving. HQ's throttle is a rate over minutes, not a queue that overflows, so one 429 says
 * little about how far over we are; repeated 429s still bring the limit down to 1 within a few rounds.
 */
const DECREASE_FACTOR = 0.7;

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
  /** The ceiling the limit may grow to. */
  get max(): number {
    return this.options.max;
  }
  /** A request is being sent; pass the ticket back to `onThrottle` / `onSuccess`. */
  begin(): number {
    this.sent += 1;
    return this.sent;
  }
  /** A 429; without a ticket it counts as a new round. */
  onThrottle(ticket?: number): void {
    if (ticket !== undefined && ticket <= this.decreasedAt) return;
    this.current = Math.max(1, Math.min(this.current - 1, Math.round(this.current * DECREASE_FACTOR)));
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

/**
 * The requests one project may have in flight, shared by every pull of that project: the data sources
 * of one export are pulled at once, and HQ throttles per project and user, so the adaptive limit is one
 * number for all of them, never one per source. A request holds a slot from just before it is sent until
 * its page has been read (429 waits and retries included, as the limit is how hard we press HQ), or,
 * for a windowed pull's first round trip when HQ was slow to answer, until its answer is in
 * (`EARLY_RELEASE_AFTER_MS`).
 */
export class RequestBudget {
  /** Turns for reading the pages of the pulls' first round trips (`FirstRoundReads`). */
  readonly firstRoundReads = new FirstRoundReads();
  private running = 0;
  private readonly watchers = new Set<() => void>();
  private readonly holders = new Set<() => number>();
  constructor(readonly limiter: AimdLimiter) {}
  /**
   * Pages held or being fetched ahead of the page each pull's caller waits for, over every pull of the
   * project: the look-ahead is one budget for the project, like the requests, so pulling three sources
   * at once holds no more pages than pulling one.
   */
  get heldAhead(): number {
    let n = 0;
    for (const held of this.holders) n += held();
    return n;
  }
  /** Counts `held` in `heldAhead` until the returned function is called. */
  hold(held: () => number): () => void {
    this.holders.add(held);
    return () => this.holders.delete(held);
  }
  /** Requests in flight now. */
  get inFlight(): number {
    return this.running;
  }
  /** True while another request may start. */
  get free(): boolean {
    return this.running < this.limiter.limit;
  }
  /** A request starts; `give` it back when it ends. */
  take(): void {
    this.running += 1;
  }
  give(): void {
    this.running -= 1;
    for (const watcher of [...this.watchers]) watcher();
  }
  /** Calls `fn` each time a request ends (a slot may be free) until the returned function is called. */
  watch(fn: () => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }
  /**
   * Waits for a free slot and gives it to `slot`. The check and the take happen in one step, so two
   * requests waiting for the same free slot cannot both take it.
   */
  async acquire(slot: HeldSlot): Promise<void> {
    while (!this.free) {
      await new Promise<void>((resolve) => {
        const stop = this.watch(() => {
          stop();
          resolve();
        });
      });
    }
    slot.take();
  }
  /**
   * Waits for a free slot, runs `fn` in it, and gives the slot back when `fn` ends, unless `slot` (the
   * slot `fn`'s request holds, see `HeldSlot`) gave it back before.
   */
  async run<T>(fn: () => Promise<T>, slot: HeldSlot = new HeldSlot(this)): Promise<T> {
    await this.acquire(slot);
    try {
      return await fn();
    } finally {
      slot.give();
    }
  }
}

/**
 * The budget slot of one request at a time of a pull: taken when the request is sent, and given back
 * when its page is read, or before, once its answer is in (`earlyReleaseHooks`). A retry of a request
 * whose slot was given back takes one again (`retake`), waiting for a free one.
 */
export class HeldSlot {
  private held = false;
  constructor(readonly budget: RequestBudget) {}
  get isHeld(): boolean {
    return this.held;
  }
  take(): void {
    this.budget.take();
    this.held = true;
  }
  /** Gives the slot back if it is still held. */
  give(): void {
    if (!this.held) return;
    this.held = false;
    this.budget.give();
  }
  /** Takes a slot again (waiting for a free one) if it was given back. */
  async retake(): Promise<void> {
    if (!this.held) await this.budget.acquire(this);
  }
}

/**
 * An answer that took at least this long (ms from the request to its head) gives its slot back once its
 * body is in, before its page is read, where `earlyReleaseHooks` are used: the first round trip of a
 * windowed pull (its first page and its last page, `CommCareClient.parallelKeyset`).
 *
 * Why there: the first round's pages arrive together (every source opens at once) and are read while
 * the code is cold (~40 ms a page, ~6 ms later), so a slot held until its page is read keeps the next
 * request waiting for the other pages' reading too, and every later round keeps that delay. Why slow
 * answers only: against a server that answers at once, reading is what limits the pull and the slot held
 * until the page is read bounds the pages in memory; HQ takes seconds over a page. Later requests keep
 * their slot until their page is read: one page more in memory for each request in flight, while a later
 * page's reading delays the next request by a few ms of a round trip of seconds.
 */
export const EARLY_RELEASE_AFTER_MS = 200;

/**
 * How long a first-round page waits for the answers sent in the same round trip (within this many ms of
 * its own request) to come in before it is read, at most (see `FirstRoundReads`).
 */
export const FIRST_ROUND_PEERS_MS = 50;

/** One request of a pull's first round trip, as `FirstRoundReads` follows it. */
export interface FirstRoundRequest {
  /** When it was last sent (`performance.now()`); +Infinity before. */
  readonly sentAt: number;
  /** The request is being sent (its slot taken). */
  sent(): void;
  /** Its answer is in, or it failed or was given up; later calls do nothing. */
  done(): void;
}

interface FirstRoundTurn {
  readonly priority: () => number;
  /** When the page's request was sent; -Infinity for `idle` waiters. */
  readonly sentAt: number;
  readonly since: number;
  readonly go: () => void;
}

/**
 * Reads the first round's pages of a project's pulls one a turn of the event loop, once their slots are
 * given back, the most useful first, and after the round's other answers are in.
 *
 * - The first round's answers arrive together, and reading a page while the code is cold takes ~40–60 ms
 *   (~6 ms later on), during which nothing else runs: the other answers' bodies wait in their sockets,
 *   holding their slots and the requests waiting for those. So a page waits until the answers to the
 *   requests sent within `FIRST_ROUND_PEERS_MS` of its own are in, for at most as long; requests sent a
 *   round later (the next pulls' first round) are not waited for.
 * - The most useful page is read first (`priority`, higher first, ties in arrival order): a tail page's
 *   peek (a moment's work that may complete its pull's plan), then a first page whose pull can plan its
 *   windows once it is read, then the others.
 * - `idle` is for work that can wait (the caller's first page, a tail page read in full): it runs once no
 *   page waits for its turn.
 */
export class FirstRoundReads {
  private readonly unanswered = new Set<{ readonly sentAt: number }>();
  private readonly waiting: FirstRoundTurn[] = [];
  private scheduled = false;
  private recheck: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** A first-round request to follow: call `sent` as it goes out, `done` once its answer is in. */
  request(): FirstRoundRequest {
    const entry = { sentAt: Number.POSITIVE_INFINITY };
    return {
      get sentAt() {
        return entry.sentAt;
      },
      sent: () => {
        entry.sentAt = this.now();
        this.unanswered.add(entry);
      },
      done: () => {
        if (this.unanswered.delete(entry) && this.waiting.length > 0) this.schedule();
      },
    };
  }

  /** Resolves when the page of the request sent at `sentAt` may be read (see the class). */
  turn(priority: () => number, sentAt: number): Promise<void> {
    return this.enqueue(priority, sentAt);
  }

  /** Resolves once no first-round page waits to be read. */
  idle(): Promise<void> {
    return this.enqueue(() => Number.NEGATIVE_INFINITY, Number.NEGATIVE_INFINITY);
  }

  private enqueue(priority: () => number, sentAt: number): Promise<void> {
    return new Promise<void>((go) => {
      this.waiting.push({ priority, sentAt, since: this.now(), go });
      this.schedule();
    });
  }

  /** True while a page still waits for an answer to a request of its own round (within its time). */
  private heldForPeers(): boolean {
    const now = this.now();
    for (const w of this.waiting) {
      if (now - w.since >= FIRST_ROUND_PEERS_MS) continue;
      for (const request of this.unanswered) {
        if (request.sentAt <= w.sentAt + FIRST_ROUND_PEERS_MS) return true;
      }
    }
    return false;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // One page a turn: the page read in a turn settles its pull's state before the next turn picks.
    setImmediate(() => {
      this.scheduled = false;
      if (this.waiting.length === 0) return;
      if (this.heldForPeers()) {
        // Looked at again when an answer comes in (`done`), or once the wait has run its course.
        this.recheck ??= setTimeout(() => {
          this.recheck = null;
          this.schedule();
        }, FIRST_ROUND_PEERS_MS / 5);
        return;
      }
      let best = 0;
      for (let k = 1; k < this.waiting.length; k += 1) {
        if (this.waiting[k]!.priority() > this.waiting[best]!.priority()) best = k;
      }
      const [next] = this.waiting.splice(best, 1);
      next!.go();
      if (this.waiting.length > 0) this.schedule();
    });
  }
}

/**
 * Hooks that give `slot` back once a slow answer is in (while `active()`), the page then read at its
 * turn (`FirstRoundReads`, with `priority` as there), and take one again to retry the request. `request`
 * is told when the answer is in.
 */
export function earlyReleaseHooks(
  slot: HeldSlot,
  active: () => boolean = () => true,
  priority: () => number = () => 0,
  request?: FirstRoundRequest,
): Pick<RequestHooks, 'answered' | 'resending'> {
  return {
    answered: (waitedMs) => {
      request?.done();
      if (waitedMs < EARLY_RELEASE_AFTER_MS || !slot.isHeld || !active()) return undefined;
      slot.give();
      const reads = slot.budget.firstRoundReads;
      return reads.turn(priority, request?.sentAt ?? performance.now() - waitedMs);
    },
    resending: async () => {
      request?.sent();
      await slot.retake();
    },
  };
}

/**
 * Pages of `pages`, each fetched in a slot of `budget` (a pull that has no windows of its own); `slot`
 * when the pull's requests may give theirs back early (`earlyReleaseHooks`).
 */
export async function* withinBudget<T>(
  pages: AsyncIterable<T>,
  budget: RequestBudget,
  slot: HeldSlot = new HeldSlot(budget),
): AsyncGenerator<T> {
  const iterator = pages[Symbol.asyncIterator]();
  try {
    for (;;) {
      const step = await budget.run(() => iterator.next(), slot);
      if (step.done) return;
      yield step.value;
    }
  } finally {
    await iterator.return?.();
  }
}

export interface OrderedMergeOptions {
  /** The limit of requests in flight; pass `budget` instead to share it with other pulls. */
  readonly limiter?: AimdLimiter;
  /** The project's shared budget of requests in flight. @default a budget of its own over `limiter` */
  readonly budget?: RequestBudget;
  /** Pages one window may hold unread (fetched or being fetched). */
  readonly queuePages: number;
}

function requireLimiter(limiter: AimdLimiter | undefined): AimdLimiter {
  if (!limiter) throw new TypeError('orderedMerge needs a limiter or a budget');
  return limiter;
}

/** One open source: its iterator, unread items and whether it is fetching or done. */
interface Lane<T> {
  readonly iterator: AsyncIterator<T>;
  readonly items: T[];
  fetching: boolean;
  done: boolean;
}

/**
 * Runs `sources` (in order, lazily) with at most `limiter.limit` fetches in flight (counted in the
 * project's `RequestBudget`, with every other pull of the project) and yields their items in source
 * order. One scheduler (`pump`) decides every fetch, walking the open windows from the head:
 *
 * - at most `limit` fetches are in flight, and a free slot goes to the earliest window that can use it,
 *   so the head (which the caller waits on) is never starved by windows ahead of it; when another pull
 *   of the project ends a request, `pump` runs again;
 * - each window holds at most `queuePages` pages, fetched or being fetched;
 * - windows ahead of the head share a budget of pages, fetched or being fetched, with the windows of
 *   every other pull of the project (`RequestBudget.heldAhead`). While the caller waits
 *   on the head it is (2·max − 1) × `queuePages`: that keeps `limit` requests going while the head's own
 *   request is the slow one (or throttled), as up to max − 1 windows ahead may have finished and be
 *   waiting for the head while `max` more fetch. While the caller is busy with a page it is
 *   (limit − 1) × `queuePages`, enough to keep pages coming without piling them up behind a slow
 *   writer. Either way the pages held are bounded by the maximum limit, never by the range.
 *
 * The first failure anywhere ends the merge at once: other windows are stopped, and what was already
 * yielded stays valid because it came strictly in order.
 */
export async function* orderedMerge<T>(
  sources: Iterable<() => AsyncIterable<T>>,
  options: OrderedMergeOptions,
): AsyncGenerator<T> {
  const pending = sources[Symbol.iterator]();
  const q = options.queuePages;
  const budget = options.budget ?? new RequestBudget(requireLimiter(options.limiter));
  const open: Lane<T>[] = [];
  let exhausted = false;
  let stopped = false;
  // A holder, not a `let`: it is set from the fetches' callbacks, which the compiler cannot follow.
  const failure: { error?: unknown; set: boolean } = { set: false };
  let wakeConsumer: (() => void) | null = null;
  const wake = (): void => {
    const fn = wakeConsumer;
    wakeConsumer = null;
    fn?.();
  };

  /** Pages held or being fetched by the windows ahead of the head. */
  const heldAhead = (): number => {
    let n = 0;
    for (let k = 1; k < open.length; k += 1) n += open[k]!.items.length + (open[k]!.fetching ? 1 : 0);
    return n;
  };

  const fetchNext = (lane: Lane<T>): void => {
    lane.fetching = true;
    budget.take();
    lane.iterator.next().then(
      (step) => {
        lane.fetching = false;
        if (step.done) lane.done = true;
        else lane.items.push(step.value);
        if (stopped) {
          budget.give();
          void lane.iterator.return?.()?.catch(() => undefined);
          return;
        }
        // Giving the slot back pumps every pull sharing the budget, this one included.
        budget.give();
        wake();
      },
      (error: unknown) => {
        lane.fetching = false;
        lane.done = true;
        if (!failure.set) {
          failure.set = true;
          failure.error = error;
        }
        budget.give();
        wake();
      },
    );
  };

  const pump = (): void => {
    if (stopped || failure.set) return;
    const limiter = budget.limiter;
    // While the caller waits on the head, the network is the bottleneck: windows ahead may hold up to
    // (2·max − 1) pages so `limit` requests stay in flight. While the caller is busy, pages fetched
    // further ahead would only wait in memory: (limit − 1) pages keep the next ones coming.
    const budgetAhead = (wakeConsumer !== null ? 2 * limiter.max - 1 : Math.max(0, limiter.limit - 1)) * q;
    let ahead = budget.heldAhead;
    for (let k = 0; budget.free; k += 1) {
      if (k === open.length) {
        // Every open window is busy, full or done: open the next one, if the budget has room for it.
        if (exhausted || (k > 0 && ahead >= budgetAhead)) return;
        const next = pending.next();
        if (next.done) {
          exhausted = true;
          wake();
          return;
        }
        open.push({
          iterator: next.value()[Symbol.asyncIterator](),
          items: [],
          fetching: false,
          done: false,
        });
      }
      const lane = open[k]!;
      if (lane.fetching || lane.done || lane.items.length >= q) continue;
      if (k > 0 && ahead >= budgetAhead) return;
      fetchNext(lane);
      if (k > 0) ahead += 1;
    }
  };

  const unwatch = budget.watch(pump);
  const unhold = budget.hold(heldAhead);
  try {
    pump();
    for (;;) {
      if (failure.set) throw failure.error;
      const head = open[0];
      // No window open: none is left, or the shared budget had no free request to open one with (other
      // pulls of the project hold them all); `pump` runs again when one of theirs ends.
      if (head === undefined) {
        if (exhausted) return;
        await new Promise<void>((resolve) => {
          wakeConsumer = resolve;
          pump();
        });
      } else if (head.items.length > 0) {
        const value = head.items.shift() as T;
        // The head may fetch its next page while the caller works on this one.
        pump();
        yield value;
      } else if (head.done) {
        open.shift();
        pump();
      } else {
        await new Promise<void>((resolve) => {
          wakeConsumer = resolve;
          // Waiting widens the budget of the windows ahead (see `pump`).
          pump();
        });
      }
    }
  } finally {
    stopped = true;
    unwatch();
    unhold();
    for (const lane of open) {
      if (!lane.fetching) void lane.iterator.return?.()?.catch(() => undefined);
    }
  }
}

/**
 * An external sort of text lines: lines gather in memory up to a byte budget, each full buffer is
 * sorted and written to a run file in a temporary folder, and reading merges the runs. Memory holds one
 * buffer while adding and one line per run while reading, whatever the number of lines: what a
 * reconcile of a file output needs to compare millions of ids without a set of them in memory.
 *
 * Lines are compared as JavaScript compares strings (UTF-16 code units), in the buffers and in the
 * merge alike. A line must not contain `\n` (see `escapeField`).
 */
import { createReadStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';

/** Default bytes of lines held before a run is written (4 MiB of text; 16 MiB peaked ~75 MB higher at 100k ids). */
export const DEFAULT_SORT_BUDGET = 4 * 1024 * 1024;

/**
 * A field of a line with `%`, and every character below a space, percent-encoded: a field then holds no
 * tab or newline, and a tab after it sorts before any character it holds, so lines sort by their first
 * field first and lines with the same first field are adjacent.
 */
export function escapeField(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what gets escaped
  return text.replace(/[%\u0000-\u001f]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export function unescapeField(text: string): string {
  return text.replace(/%([0-9a-f]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
}

export class SortedLines {
  private buffer: string[] = [];
  private bytes = 0;
  private readonly runs: { readonly path: string; readonly gzip: boolean }[] = [];

  constructor(
    private readonly folder: string,
    private readonly name: string,
    private readonly budgetBytes = DEFAULT_SORT_BUDGET,
  ) {}

  /** Adds lines; writes a sorted run when the buffer is full. */
  async add(lines: readonly string[]): Promise<void> {
    for (const line of lines) {
      this.buffer.push(line);
      this.bytes += line.length + 1;
    }
    if (this.bytes >= this.budgetBytes) await this.spill();
  }

  /**
   * Adds a run file sorted elsewhere (lines sorted as this class sorts them, `\n`-terminated), read in
   * the merge like the runs this sort writes; `gzip`: the file is gzip-compressed. The caller keeps the
   * file until the merge has been read.
   */
  addSortedRun(path: string, options: { readonly gzip?: boolean } = {}): void {
    this.runs.push({ path, gzip: options.gzip ?? false });
  }

  /** Sorted run files so far (written by this sort or added). */
  get runCount(): number {
    return this.runs.length;
  }

  private async spill(): Promise<void> {
    if (this.buffer.length === 0) return;
    const lines = this.buffer.sort();
    this.buffer = [];
    this.bytes = 0;
    const path = join(this.folder, `${this.name}-${this.runs.length}.txt`);
    await writeFile(path, `${lines.join('\n')}\n`);
    this.runs.push({ path, gzip: false });
  }

  /** Every line added, in order. Call once, after the last `add`. */
  async *sorted(): AsyncGenerator<string> {
    if (this.runs.length === 0) {
      const lines = this.buffer.sort();
      this.buffer = [];
      this.bytes = 0;
      yield* lines;
      return;
    }
    await this.spill();
    const readers = this.runs.map(({ path, gzip }) => {
      const file = createReadStream(path);
      const input: Readable = gzip ? file.pipe(createGunzip()) : file;
      if (gzip) file.on('error', (error) => input.destroy(error));
      input.setEncoding('utf8');
      return createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })[Symbol.asyncIterator]();
    });
    // A binary min-heap of the current line of each run.
    const heap: { line: string; reader: number }[] = [];
    const less = (a: number, b: number) => heap[a]!.line < heap[b]!.line;
    const swap = (a: number, b: number) => {
      const t = heap[a]!;
      heap[a] = heap[b]!;
      heap[b] = t;
    };
    const up = (i: number) => {
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (!less(i, parent)) return;
        swap(i, parent);
        i = parent;
      }
    };
    const down = (i: number) => {
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && less(l, m)) m = l;
        if (r < heap.length && less(r, m)) m = r;
        if (m === i) return;
        swap(i, m);
        i = m;
      }
    };
    for (let i = 0; i < readers.length; i++) {
      const next = await readers[i]!.next();
      if (!next.done) {
        heap.push({ line: next.value, reader: i });
        up(heap.length - 1);
      }
    }
    try {
      while (heap.length > 0) {
        const top = heap[0]!;
        yield top.line;
        const next = await readers[top.reader]!.next();
        if (next.done) {
          const last = heap.pop()!;
          if (heap.length > 0) {
            heap[0] = last;
            down(0);
          }
        } else {
          heap[0] = { line: next.value, reader: top.reader };
          down(0);
        }
      }
    } finally {
      await Promise.all(readers.map((r) => r.return?.()));
    }
  }
}

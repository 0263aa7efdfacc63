import type { Cell, TableSpec } from '../../query/types';
import type { ObjectUpload } from '../store/types';
import type { FileFormat } from './types';

/**
 * Text is handed to the object stream in pieces of about this many characters. A piece is one joined
 * string, and text with a character outside Latin-1 takes two bytes a character: at 32 Ki characters
 * (64 KiB) it stays a regular young object. From 128 KiB V8 puts a string in its large-object space,
 * which maps fresh pages for every piece; with 64 Ki-character pieces that made the csv output of
 * non-Latin-1 text spend more time joining pieces than encoding rows.
 */
const WRITE_CHARS = 32 * 1024;

/**
 * Gathers encoded text and writes it in pieces (`WRITE_CHARS`): the export loop writes one record's
 * rows at a time, and a stream write (with its promise) per row costs more than encoding the row.
 * `append` is synchronous, so an encoder awaits only when a piece is due (`full`), not once per line.
 */
export class BufferedText {
  private parts: string[] = [];
  private chars = 0;

  constructor(private readonly out: ObjectUpload) {}

  /** True once the text gathered is a piece's worth: time to `flush`. */
  get full(): boolean {
    return this.chars >= WRITE_CHARS;
  }

  /** Adds `text` without writing anything; the caller flushes when `full`. */
  append(text: string): void {
    this.parts.push(text);
    this.chars += text.length;
  }

  async add(text: string): Promise<void> {
    this.append(text);
    if (this.full) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.parts.length === 0) return;
    const text = this.parts.join('');
    this.parts = [];
    this.chars = 0;
    await this.out.write(text);
  }
}

/**
 * A text format written line by line: a heading written once (even for a table without rows), then one
 * encoded line per row. csv and markdown are both this shape.
 */
export function lineFormat(spec: {
  readonly name: FileFormat['name'];
  readonly extension: string;
  readonly contentType: string;
  readonly heading: (table: TableSpec) => string;
  readonly line: (cells: readonly Cell[]) => string;
}): FileFormat {
  return {
    name: spec.name,
    extension: spec.extension,
    contentType: spec.contentType,
    open(table, out) {
      const text = new BufferedText(out);
      let started = false;
      const heading = () => {
        if (!started) {
          started = true;
          text.append(spec.heading(table));
        }
      };
      return {
        async writeRows(rows) {
          heading();
          for (const row of rows) {
            text.append(spec.line(row));
            if (text.full) await text.flush();
          }
        },
        async end() {
          heading();
          await text.flush();
        },
      };
    },
  };
}

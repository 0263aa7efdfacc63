import type { Cell, TableSpec } from '../../query/types';
import type { ObjectUpload } from '../store/types';
import type { FileFormat } from './types';

/** Text is handed to the object stream in pieces of about this many characters. */
const WRITE_CHARS = 64 * 1024;

/**
 * Gathers encoded text and writes it in pieces of about 64 KiB: the export loop writes one record's
 * rows at a time, and a stream write (with its promise) per row costs more than encoding the row.
 */
export class BufferedText {
  private parts: string[] = [];
  private chars = 0;

  constructor(private readonly out: ObjectUpload) {}

  async add(text: string): Promise<void> {
    this.parts.push(text);
    this.chars += text.length;
    if (this.chars >= WRITE_CHARS) await this.flush();
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
      const heading = async () => {
        if (!started) {
          started = true;
          await text.add(spec.heading(table));
        }
      };
      return {
        async writeRows(rows) {
          await heading();
          for (const row of rows) await text.add(spec.line(row));
        },
        async end() {
          await heading();
          await text.flush();
        },
      };
    },
  };
}

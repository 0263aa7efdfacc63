import type { Cell, TableSpec } from '../../query/types';
import type { ObjectUpload } from '../store/types';
import type { FileFormat } from './types';

/**
 * Encoded text is handed to the object stream in pieces of about this many bytes (`FULL_BYTES` of a
 * `PIECE_BYTES` buffer; the rest is room for the line that crosses the mark).
 */
const PIECE_BYTES = 64 * 1024;
const FULL_BYTES = 48 * 1024;

/**
 * Gathers text and writes it in pieces: the export loop writes one record's rows at a time, and a stream
 * write (with its promise) per row costs more than encoding the row. `append` is synchronous, so an
 * encoder awaits only when a piece is due (`full`), not once per line.
 *
 * Each text is encoded to UTF-8 into the current piece's buffer as it is appended, so the string of a
 * line dies young. Kept as strings until a piece was joined (32 Ki characters, ~200 csv lines of a
 * table, while the records of the other tables went by), the lines outlived two scavenges and were
 * promoted: most of what an export promoted to V8's old generation, collected by mark-compacts.
 */
export class BufferedText {
  /** The piece being filled, and the bytes of it used. */
  private piece: Buffer | null = null;
  private used = 0;
  /** Pieces complete or texts too large for one, in order, not yet written. */
  private ready: Uint8Array[] = [];

  constructor(private readonly out: ObjectUpload) {}

  /** True once the text gathered is a piece's worth: time to `flush`. */
  get full(): boolean {
    return this.used >= FULL_BYTES || this.ready.length > 0;
  }

  /** Adds `text` without writing anything; the caller flushes when `full`. */
  append(text: string): void {
    if (text.length === 0) return;
    let piece = this.piece;
    // A UTF-16 unit takes at most 3 bytes; only a long text near the end of a piece needs its exact size.
    if (piece !== null && text.length * 3 > piece.length - this.used) {
      if (Buffer.byteLength(text, 'utf8') > piece.length - this.used) {
        this.retire();
        piece = null;
      }
    }
    if (piece === null) {
      if (text.length * 3 > PIECE_BYTES && Buffer.byteLength(text, 'utf8') > PIECE_BYTES) {
        this.ready.push(Buffer.from(text, 'utf8'));
        return;
      }
      piece = Buffer.allocUnsafe(PIECE_BYTES);
      this.piece = piece;
      this.used = 0;
    }
    this.used += piece.write(text, this.used, 'utf8');
  }

  /**
   * Adds the line of `cells` that `encode` writes straight into the current piece (see `encodeCsvLine`),
   * or `line`'s text when it does not fit an empty piece either.
   */
  appendEncoded(
    cells: readonly Cell[],
    encode: (cells: readonly Cell[], out: Buffer, at: number) => number,
    line: (cells: readonly Cell[]) => string,
  ): void {
    if (this.piece !== null) {
      const end = encode(cells, this.piece, this.used);
      if (end !== -1) {
        this.used = end;
        return;
      }
      this.retire();
    }
    const piece = Buffer.allocUnsafe(PIECE_BYTES);
    const end = encode(cells, piece, 0);
    if (end === -1) {
      this.append(line(cells));
      return;
    }
    this.piece = piece;
    this.used = end;
  }

  async add(text: string): Promise<void> {
    this.append(text);
    if (this.full) await this.flush();
  }

  /** Writes everything gathered. */
  async flush(): Promise<void> {
    this.retire();
    const pieces = this.ready;
    if (pieces.length === 0) return;
    this.ready = [];
    for (const piece of pieces) await this.out.write(piece);
  }

  /** Moves the piece being filled to `ready` (a new buffer is taken for the next text). */
  private retire(): void {
    if (this.piece !== null && this.used > 0) this.ready.push(this.piece.subarray(0, this.used));
    this.piece = null;
    this.used = 0;
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
  /** `line` written straight into a buffer, when the format has it (`BufferedText.appendEncoded`). */
  readonly encode?: (cells: readonly Cell[], out: Buffer, at: number) => number;
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
          const encode = spec.encode;
          for (const row of rows) {
            if (encode === undefined) text.append(spec.line(row));
            else text.appendEncoded(row, encode, spec.line);
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

import type { ObjectUpload } from '../store/types';

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

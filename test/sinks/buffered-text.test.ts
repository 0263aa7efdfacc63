import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { BufferedText } from '../../functions/sinks/formats/buffered';
import { LocalObjectStore } from '../../functions/sinks/store/local';

const dir = mkdtempSync(join(tmpdir(), 'buffered-text-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const store = new LocalObjectStore(dir);

/** Writes `texts` through a BufferedText into a file the way the line formats do, and reads the file back. */
async function written(key: string, texts: readonly string[]): Promise<{ bytes: Buffer; flushes: number }> {
  const upload = store.openUpload(key, 'text/plain');
  const text = new BufferedText(upload);
  let flushes = 0;
  for (const t of texts) {
    text.append(t);
    if (text.full) {
      flushes += 1;
      await text.flush();
    }
  }
  await text.flush();
  await upload.complete();
  return { bytes: readFileSync(join(dir, key)), flushes };
}

describe('text gathered into pieces', () => {
  it('writes exactly the UTF-8 of the texts in order, whatever their size and characters', async () => {
    const piece = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.constantFrom('é,ü\r\n', '日本語\r\n', '😀', '\uD800', '', 'x'.repeat(70_000), '€'.repeat(30_000)),
    );
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(piece, { maxLength: 60 }), async (texts) => {
        const { bytes } = await written(`p${n++}.txt`, texts);
        expect(bytes.equals(Buffer.from(texts.join(''), 'utf8'))).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  it('asks to be flushed about every 48 KiB, not at every line', async () => {
    const lines = Array.from({ length: 10_000 }, (_, i) => `row ${i},Wałęsa,${'x'.repeat(i % 50)}\r\n`);
    const { bytes, flushes } = await written('lines.csv', lines);
    expect(bytes.toString('utf8')).toBe(lines.join(''));
    expect(flushes).toBe(Math.floor(bytes.length / (48 * 1024)));
  });
});

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../../bench/harness';
import { rewrittenFiles } from '../../bench/report';

// bench/REPORT.md and its charts are written by `npm run bench:report` (or `-- --rewrite`) only; text
// written by hand goes into bench/results/notes.md or bench/results/det-notes.md. Rendering runs no
// scenario: it reads the committed results and notes.
describe('bench/REPORT.md', () => {
  const files = rewrittenFiles();

  it('renders REPORT.md and both charts', () => {
    expect([...files.keys()].sort()).toEqual(['REPORT.md', 'chart-latency.svg', 'chart-size.svg']);
  });

  for (const [path, rendered] of files) {
    it(`is what \`npm run bench:report -- --rewrite\` writes: ${path}`, () => {
      const committed = readFileSync(join(ROOT, 'bench', path), 'utf8');
      // toBe on the whole text: a failure shows the lines that differ, i.e. the hand edit to move.
      expect(
        committed,
        `bench/${path} differs from its rendering; put hand-written text in the notes files`,
      ).toBe(rendered);
    });
  }
});

import { describe, expect, it } from 'vitest';
import { everythingWritten, KEY, useLeakTestBed } from './support';

const bed = useLeakTestBed();

describe('the API key never leaves the process, even with --verbose and every HQ fault on', () => {
  for (const format of ['csv', 'xlsx', 'json', 'markdown']) {
    it(`is in no output line and no ${format} file, manifest or checkpoint`, async () => {
      const output = bed.folder(format);
      const { code, text } = await bed.exportWithFaults(format, output);
      expect(code).toBe(0);
      expect(text).toMatch(/retrying/);
      // Every run gives the key with --password: the warning about it must not echo it.
      expect(text).toMatch(/other users of this machine/);
      expect(text).not.toContain(KEY);
      const written = await everythingWritten(output);
      expect(written).toContain('household');
      expect(written).not.toContain(KEY);
    });
  }
});

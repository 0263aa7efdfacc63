/** Hostile values and leftovers in file outputs. */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { TableSpec } from '../../functions/query/types';
import { createSink } from '../../functions/sinks';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'ccexport-outputs-'));
}

describe('csv output', () => {
  it('never contains a raw NUL byte, in a heading or a cell', async () => {
    const dir = tempDir();
    const table: TableSpec = { name: 'nul', headings: ['id', 'na\0me'], dataTypes: [null, null] };
    const sink = await createSink({ format: 'csv', output: dir });
    await sink.begin([table], { runId: 'run-1', checkpointKey: 'k', project: 'p', snapshot: true });

    await sink.writeRows('nul', [
      ['a\0', 'x\0y'],
      ['b', '\0'],
      ['c', 'q"\0,'],
    ]);
    await sink.finish();

    const bytes = readFileSync(join(dir, 'nul', 'run-1.csv'));
    expect(bytes.includes(0)).toBe(false);
    expect(bytes.toString('utf8')).toBe('id,name\r\na,xy\r\nb,\r\nc,"q"","\r\n');
  });
});

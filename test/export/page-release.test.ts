/**
 * An export lets go of each page's body once the page's rows are written (`PageRecords.release`), so a
 * body is freed at the next young-generation collection instead of the next full one.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBody } from '../../functions/commcare/http';
import { readListBody } from '../../functions/commcare/page-body';
import type { Page } from '../../functions/commcare/types';
import { runExport } from '../../functions/export/run';
import { createSink, objectStoreFor, readManifests } from '../../functions/sinks';
import { parseCsv } from '../chaos/support';

let work: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'ccexport-page-release-'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

/**
 * A page as the client reads it: HQ's bytes (6 KB, so a buffer of their own rather than a slice of
 * Node's pool) through `readBody`, records parsed as they are read.
 */
async function pageOf(ids: readonly string[], pageNumber: number): Promise<{ page: Page; body: Buffer }> {
  const text = JSON.stringify({
    meta: { total_count: 6 },
    objects: ids.map((id) => ({ id, note: id.repeat(2000) })),
  });
  const bytes = Buffer.from(text);
  const body = await readBody(
    Readable.from([bytes.subarray(0, 10), bytes.subarray(10)]),
    1 << 20,
    bytes.length,
  );
  const { items } = readListBody(body, 'objects', { fields: ['id'] });
  const records = items!.select(ids.map((_, k) => k));
  return { page: { records, position: null, totalCount: 6, pageNumber }, body };
}

describe('runExport and page bodies', () => {
  it('writes every row of a page, then lets go of its body', async () => {
    // prepare
    const pages = [await pageOf(['a', 'b', 'c'], 0), await pageOf(['d', 'e', 'f'], 1)];
    const bodies = pages.map((p) => p.body.buffer.byteLength);
    const source = {
      async *pages(): AsyncIterable<Page> {
        for (const { page } of pages) yield page;
      },
    };
    const output = join(work, 'out');
    const sink = await createSink({ format: 'csv', output });

    // act
    await runExport(
      { source, sink, runId: 'run-1' },
      {
        project: 'demo',
        sources: [
          {
            resource: 'form',
            params: {},
            tables: [
              { name: 'forms', headings: ['id'], dataTypes: [null], rowsFor: (r) => [[r.id as string]] },
            ],
          },
        ],
        checkpointKey: 'k',
        startOver: false,
        pageSize: 3,
        commitEveryPages: 1_000_000,
      },
    );

    // assert: all rows written, each body detached once its page was written
    const store = await objectStoreFor(output);
    const [manifest] = await readManifests(store);
    const rows = parseCsv((await store.get(manifest!.objects[0]!.key))!.body).slice(1);
    expect(rows.map((r) => r[0])).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    expect(bodies.every((size) => size > 6000)).toBe(true);
    expect(pages.map((p) => p.body.buffer.byteLength)).toEqual([0, 0]);
  });
});

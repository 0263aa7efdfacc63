/**
 * The archived records a pull keeps for its next commit (`DeletionLog`): the last version of a record
 * in the pull decides, the log holds a fixed amount of memory whatever the number of deletions, and
 * what goes to disk leaves nothing in the folder. Then the same rule through `runExport` into a
 * folder output, whose only commit is at the end of the run.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page, PullRequest } from '../../functions/commcare/types';
import type { JsonObject } from '../../functions/common/json';
import { DeletionLog } from '../../functions/export/deletion-log';
import { runExport } from '../../functions/export/run';
import type { SourcePlan } from '../../functions/query/types';
import { createSink, objectStoreFor, type RecordDeletion, readManifests } from '../../functions/sinks';
import { parseCsv } from '../chaos/support';

let work: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'ccexport-deletion-log-'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

const AT = new Date('2026-03-01T10:00:00.000Z');

function deletion(id: string, version: number): RecordDeletion {
  return {
    id,
    deletedAt: new Date(AT.getTime() + version),
    reason: 'archived',
    rowIds: { forms: [id], members: [`${id}.1`, `${id}.2`] },
  };
}

/** A deterministic sequence of sightings: ids from a small pool, archived about a third of the time. */
function sightings(count: number, pool: number): { id: string; archived: boolean }[] {
  let state = 12345;
  const next = () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state / 2 ** 32;
  };
  return Array.from({ length: count }, () => ({
    id: `f${Math.floor(next() * pool)}-${'x'.repeat(30)}`,
    archived: next() < 0.35,
  }));
}

function drained(log: DeletionLog): RecordDeletion[] {
  const out: RecordDeletion[] = [];
  for (const batch of log.drain()) out.push(...batch);
  return out;
}

function sortedById(list: readonly RecordDeletion[]): RecordDeletion[] {
  return [...list].sort((a, b) => a.id.localeCompare(b.id));
}

function heapAfterGc(gc: () => void): number {
  gc();
  gc();
  const { heapUsed, arrayBuffers } = process.memoryUsage();
  return heapUsed + arrayBuffers;
}

describe('DeletionLog', () => {
  it.each([
    ['in memory', 1 << 30],
    ['spilled to its file', 256],
  ])(
    'keeps the last version of each record (%s): a later live version cancels, a later archived one replaces',
    (_, spillBytes) => {
      // prepare: the rule as a Map applies it
      const log = new DeletionLog({ spillBytes, folder: work });
      const expected = new Map<string, RecordDeletion>();
      let version = 0;

      // act
      for (const { id, archived } of sightings(5000, 400)) {
        version += 1;
        if (archived) {
          log.set(id, deletion(id, version));
          expected.delete(id);
          expected.set(id, deletion(id, version));
        } else {
          log.delete(id);
          expected.delete(id);
        }
      }
      const out = drained(log);

      // assert: the same deletions, each id once, in the order of their last archived version
      expect(out.length).toBeGreaterThan(50);
      expect(out).toEqual([...expected.values()]);
      expect(log.size).toBe(0);
      expect(drained(log)).toEqual([]);
      log.close();
    },
  );

  it('starts empty after a drain: a deletion drained before is not cancelled or repeated by the next commit', () => {
    const log = new DeletionLog({ spillBytes: 64, folder: work });
    log.set('a', deletion('a', 1));
    log.set('b', deletion('b', 2));
    expect(sortedById(drained(log)).map((d) => d.id)).toEqual(['a', 'b']);

    log.delete('a');
    log.set('c', deletion('c', 3));
    log.delete('c');
    log.set('b', deletion('b', 4));

    expect(drained(log)).toEqual([deletion('b', 4)]);
    log.close();
  });

  it('leaves no file in its folder while deletions are on disk, nor after close', () => {
    const folder = mkdtempSync(join(work, 'spill-'));
    const log = new DeletionLog({ spillBytes: 1024, folder });
    for (let i = 0; i < 2000; i++) log.set(`form-${i}`, deletion(`form-${i}`, i));

    expect(readdirSync(folder)).toEqual([]);
    expect(drained(log)).toHaveLength(2000);
    log.set('again', deletion('again', 1));
    log.close();
    expect(readdirSync(folder)).toEqual([]);
  });

  it('holds its fixed filter and little else for 20,000 archived forms waiting for one commit', () => {
    // prepare: V8's gc, so the heap measured is what is reachable
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const log = new DeletionLog({ folder: work });
    const ids = Array.from(
      { length: 20_000 },
      (_, i) => `${String(i).padStart(8, '0')}-6c1f-4b8e-9d2a-0f3e5a7b9c1d`,
    );
    const before = heapAfterGc(gc);

    // act: each deletion as the export loop builds it (row ids of the form and of four child rows)
    for (const id of ids) {
      const members = [1, 2, 3, 4].map((n) => `${id}.form.members.${n}`);
      log.set(id, { id, deletedAt: new Date(), reason: 'archived', rowIds: { forms: [id], members } });
    }
    const held = heapAfterGc(gc) - before;

    // assert: the 1 MiB filter and the lines not yet on disk; a Map of the same deletions holds ~13 MB
    expect(held).toBeLessThan(3 * 1024 * 1024);
    expect(drained(log)).toHaveLength(20_000);
    log.close();
  });
});

describe('runExport with deletions into a folder', () => {
  const plan = (): SourcePlan => ({
    resource: 'form',
    params: {},
    tables: [
      {
        name: 'forms',
        headings: ['id', 'name'],
        dataTypes: [null, null],
        rowsFor: (r) => [[r.id as string, r.name as string]],
      },
      {
        name: 'members',
        headings: ['id', 'form_id'],
        dataTypes: [null, null],
        rowsFor: (r) => [1, 2].map((n) => [`${r.id}.${n}`, r.id as string]),
      },
    ],
  });

  const form = (id: string, version: number, archived: boolean): JsonObject => ({
    id,
    name: `${id} v${version}`,
    archived,
    indexed_on: `2026-02-01T00:00:0${version}.000000Z`,
  });

  /** Pages as HQ serves a pull in which a form is archived and unarchived while it runs. */
  const pages: JsonObject[][] = [
    [form('a', 1, true), form('b', 1, false), form('c', 1, true)],
    [form('d', 2, true), form('a', 3, false), form('e', 3, true)],
    [form('c', 4, true), form('e', 5, false), form('b', 5, true)],
  ];

  it('lists the forms whose last version in the run is archived, and writes the rows of the others', async () => {
    // prepare
    const output = join(work, 'folder-output');
    const sink = await createSink({ format: 'csv', output });
    const source = {
      async *pages(request: PullRequest): AsyncIterable<Page> {
        expect(request.params).toEqual({ include_archived: ['true'] });
        for (const [pageNumber, records] of pages.entries())
          yield { records, position: null, totalCount: 9, pageNumber };
      },
    };

    // act
    const summary = await runExport(
      { source, sink, runId: 'run-1', now: () => AT },
      {
        project: 'demo',
        sources: [plan()],
        checkpointKey: 'k',
        startOver: false,
        pageSize: 3,
        commitEveryPages: 1_000_000,
        deletions: 'remove',
      },
    );

    // assert
    expect(summary.archived).toBe(6);
    const store = await objectStoreFor(output);
    const [manifest] = await readManifests(store);
    const body = async (key: string) => parseCsv((await store.get(key))!.body).slice(1);
    const forms = manifest!.objects.find((o) => o.table === 'forms')!;
    expect((await body(forms.key)).map((r) => r[1])).toEqual(['b v1', 'a v3', 'e v5']);
    const listed = Object.fromEntries(
      await Promise.all(
        (manifest!.deletions ?? []).map(
          async (d) => [d.table, (await body(d.key)).map((r) => r[0])] as const,
        ),
      ),
    );
    expect(listed).toEqual({
      forms: ['d', 'c', 'b'],
      members: ['d', 'd.1', 'd.2', 'c', 'c.1', 'c.2', 'b', 'b.1', 'b.2'],
    });
  });
});

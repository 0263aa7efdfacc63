/**
 * The external sort behind the file reconcile, and the file reconcile itself with a sort budget so
 * small that every comparison goes through run files and the merge.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ReconcileGuardError } from '../../functions/export/reconcile';
import type { TableSpec } from '../../functions/query/types';
import { createSink } from '../../functions/sinks';
import { FileReconcileTarget } from '../../functions/sinks/file-reconcile';
import { escapeField, SortedLines, unescapeField } from '../../functions/sinks/sorted-lines';
import { LocalObjectStore } from '../../functions/sinks/store/local';

const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), 'ccexport-sorted-'));
  dirs.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('SortedLines', () => {
  it('sorts more lines than its budget holds through run files, as an in-memory sort would', async () => {
    const lines = Array.from({ length: 5000 }, (_, i) => `${((i * 7919) % 5000).toString(36)}\tx${i}`);
    const sort = new SortedLines(tempDir(), 'test', 2000);
    for (let i = 0; i < lines.length; i += 100) await sort.add(lines.slice(i, i + 100));

    const out: string[] = [];
    for await (const line of sort.sorted()) out.push(line);

    expect(sort.runCount).toBeGreaterThan(10);
    expect(out).toEqual([...lines].sort());
  });

  it('escapes fields so a tab, newline or percent in an id never splits or reorders a line', () => {
    for (const id of ['a\tb', 'c\nd', '50%', 'plain', '\u0001'])
      expect(unescapeField(escapeField(id))).toBe(id);
    expect(escapeField('a\tb')).not.toMatch(/[\t\n]/);
  });
});

const forms: TableSpec = { name: 'forms', headings: ['id', 'name'], dataTypes: [null, null] };
const repeats: TableSpec = { name: 'repeats', headings: ['id', 'form_id'], dataTypes: [null, null] };

describe('FileReconcileTarget', () => {
  it('records the rows, child rows included, of the records HQ no longer lists, however small the sort budget', async () => {
    const dir = tempDir();
    const sink = await createSink({ format: 'csv', output: dir });
    await sink.begin([forms, repeats], { runId: 'run-1', checkpointKey: 'k', project: 'p', snapshot: true });
    const ids = Array.from({ length: 200 }, (_, i) => `form-${String(i).padStart(3, '0')}`);
    await sink.writeRows(
      'forms',
      ids.map((id) => [id, `name ${id}`]),
    );
    await sink.writeRows(
      'repeats',
      ids.flatMap((id) => [
        [`${id}.r.0`, id],
        [`${id}.r.1`, id],
      ]),
    );
    await sink.finish();
    const gone = ['form-007', 'form-150'];
    const target = new FileReconcileTarget(new LocalObjectStore(dir), { sortBudgetBytes: 256 });

    await target.begin({ runId: 'reconcile-1', checkpointKey: 'k', project: 'p' });
    await target.addLiveIds(ids.filter((id) => !gone.includes(id)).reverse());
    const settled = await target.settle(['forms', 'repeats'], 'remove', new Date(), 0.2);
    await target.commit();

    expect(settled).toEqual([
      { table: 'forms', rows: 200, gone: 2 },
      { table: 'repeats', rows: 400, gone: 4 },
    ]);
    const recorded = (table: string) =>
      readFileSync(join(dir, table, 'deletions', 'reconcile-1.csv'), 'utf8')
        .split('\r\n')
        .filter(Boolean)
        .slice(1)
        .map((line) => line.split(',')[0]);
    expect(recorded('forms')).toEqual(gone);
    expect(recorded('repeats')).toEqual(['form-007.r.0', 'form-007.r.1', 'form-150.r.0', 'form-150.r.1']);
  });

  it('fails at the guard before writing anything', async () => {
    const dir = tempDir();
    const sink = await createSink({ format: 'csv', output: dir });
    await sink.begin([forms], { runId: 'run-1', checkpointKey: 'k', project: 'p', snapshot: true });
    await sink.writeRows('forms', [
      ['a', 'A'],
      ['b', 'B'],
      ['c', 'C'],
    ]);
    await sink.finish();
    const target = new FileReconcileTarget(new LocalObjectStore(dir), { sortBudgetBytes: 64 });

    await target.begin({ runId: 'reconcile-1', checkpointKey: 'k', project: 'p' });
    await target.addLiveIds(['a']);
    await expect(target.settle(['forms'], 'remove', new Date(), 0.2)).rejects.toBeInstanceOf(
      ReconcileGuardError,
    );
    await target.abort();

    expect(() => readFileSync(join(dir, 'forms', 'deletions', 'reconcile-1.csv'))).toThrow();
  });
});

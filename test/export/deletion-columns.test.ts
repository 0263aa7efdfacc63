import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import { sourceRecordKeys, withDeletionColumns } from '../../functions/export/run';
import { compileWorkbook } from '../../functions/query/index';
import { createSink } from '../../functions/sinks';
import { run } from '../sinks/helpers';
import { TABLE_SHEET_HEADINGS, workbook } from '../support/query-workbook';

let dir: string | null = null;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = null;
});

describe('the tables of the mark mode (_deleted, _deleted_at)', () => {
  it("keep the query's missing-value text, so a typed output stores it as null as without the mode", async () => {
    const query = await compileWorkbook(
      await workbook([
        {
          name: 'Visits',
          rows: [
            TABLE_SHEET_HEADINGS,
            ['form', null, null, 'visits', 'id', 'id', null, null, null, null],
            [null, null, null, null, 'weight', 'form.weight', null, null, 'integer', null],
          ],
        },
      ]),
      { baseUrl: 'https://www.commcarehq.org', missingValue: 'N/A' },
    );
    const source = withDeletionColumns(query.sources[0]!);
    const visits = source.tables[0]!;
    expect(visits.missingValue).toBe('N/A');
    expect(visits.dataTypes).toEqual([null, 'integer', 'boolean', 'datetime']);
    expect(sourceRecordKeys(source)).toEqual(sourceRecordKeys(query.sources[0]!));

    // The weight column is an integer in Parquet: the missing-value text is stored as null, not refused.
    const records: JsonObject[] = [
      { id: 'f1', form: {} },
      { id: 'f2', form: { weight: '61' } },
    ];
    const rows = records.flatMap((record) => visits.rowsFor(record).map((row) => [...row, false, null]));
    expect(rows[0]).toEqual(['f1', 'N/A', false, null]);
    dir = mkdtempSync(join(tmpdir(), 'ccexport-mark-missing-'));
    const sink = await createSink({ format: 'parquet', output: dir });
    await sink.begin([visits], run('run-1', { deletions: 'mark' }));
    await sink.writeRows('visits', rows);
    await expect(sink.finish()).resolves.toBeUndefined();
  });
});

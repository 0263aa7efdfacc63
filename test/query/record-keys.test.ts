import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readListBody } from '../../functions/commcare/page-body';
import type { RecordKeyPath } from '../../functions/commcare/types';
import type { JsonObject } from '../../functions/common/json';
import { sourceRecordKeys } from '../../functions/export/run';
import { compileMiniLinq, compileWorkbook } from '../../functions/query/index';
import { Apply, Lit, Ref } from '../../functions/query/minilinq';
import { recordKeysOf } from '../../functions/query/record-keys';
import type { CompiledQuery } from '../../functions/query/types';
import { TABLE_SHEET_HEADINGS, workbook } from '../support/query-workbook';

const dir = join(import.meta.dirname, '../fixtures/queries');
const opts = { baseUrl: 'https://www.commcarehq.org/' };

/** `records` as the client hands them over when a pull names the parts it reads: read from a page's bytes. */
function cutRecords(records: readonly JsonObject[], keys: readonly RecordKeyPath[]): JsonObject[] {
  const body = Buffer.from(JSON.stringify({ meta: {}, objects: records }));
  const { items } = readListBody(body, 'objects', { recordKeys: keys });
  return Array.from({ length: items!.length }, (_, k) => items!.record(k));
}

/** Each table's rows from whole records and from records cut to their source's paths; and how many sources were cut. */
function bothWays(query: CompiledQuery, records: readonly JsonObject[]) {
  const whole: Record<string, unknown[]> = {};
  const cut: Record<string, unknown[]> = {};
  let projected = 0;
  for (const source of query.sources) {
    const keys = sourceRecordKeys(source);
    if (keys) projected += 1;
    for (const table of source.tables) {
      whole[table.name] = structuredClone(records).flatMap((r) => table.rowsFor(r));
      const read = keys ? cutRecords(records, keys) : structuredClone(records);
      cut[table.name] = read.flatMap((r) => table.rowsFor(r));
    }
  }
  return { whole, cut, projected };
}

/** A table sheet of `columns` over `source` (a `Data Source` cell such as `form` or `form.form.child`). */
function sheet(
  name: string,
  source: string,
  columns: [field: string, sourceField: string, formatVia?: string][],
) {
  return {
    name,
    rows: [
      TABLE_SHEET_HEADINGS,
      ...columns.map(([field, sourceField, formatVia], i) => [
        i === 0 ? source : null,
        null,
        null,
        i === 0 ? name : null,
        field,
        sourceField,
        null,
        formatVia ?? null,
        null,
        null,
      ]),
    ],
  };
}

describe('the record keys a table reads', () => {
  it('gives every table of the corpus workbooks the same rows from records cut to the keys it names', async () => {
    const records: JsonObject[] = JSON.parse(await readFile(join(dir, 'documents/forms.json'), 'utf8'));
    let projected = 0;
    for (const name of ['hq-visit-layout', 'all-headers', 'functions']) {
      const query = await compileWorkbook(await readFile(join(dir, `${name}.xlsx`)), opts);
      const both = bothWays(query, records);
      expect(both.cut, name).toEqual(both.whole);
      projected += both.projected;
    }
    // Not a vacuous comparison: every source but the one that reads `form..case` as `this` is cut.
    expect(projected).toBe(3);
  });

  it('keeps the keys that functions and child ids read from the record, and what the export reads', async () => {
    const query = await compileWorkbook(
      await workbook([
        sheet('links', 'form', [
          ['id', 'id'],
          ['url', 'id', 'form_url'],
          ['photo', 'form.photo', 'attachment_url'],
        ]),
        sheet('children', 'form.form.child', [
          ['id', 'id'],
          ['form_id', '$.id'],
          ['name', 'name'],
        ]),
      ]),
      opts,
    );
    const keys = query.sources.map(sourceRecordKeys);
    // The child list and the photo whole, each object on the way to them with its id; `name` is the
    // child items' own (relative paths count as starting at the record too).
    expect(keys).toEqual([
      [['archived'], ['domain'], ['form', 'child'], ['form', 'id'], ['form', 'photo'], ['id'], ['name']],
    ]);
    const record: JsonObject = {
      id: 'f1',
      domain: 'demo',
      metadata: { big: 'x'.repeat(100) },
      form: { photo: 'p.jpg', child: [{ name: 'A' }, { name: 'B' }] },
    };
    const both = bothWays(query, [record]);
    expect(both.cut).toEqual(both.whole);
    expect(both.whole.links).toEqual([
      [
        'f1',
        'https://www.commcarehq.org/a/demo/reports/form_data/f1/',
        'https://www.commcarehq.org/a/demo/api/form/attachment/f1/p.jpg',
      ],
    ]);
  });

  it('asks for whole records when a path could see a key it does not name', async () => {
    for (const path of ['$', '`this`', '$.*', '$..name', 'form.`parent`.id', '$[0]', 'form | $']) {
      const query = await compileWorkbook(
        await workbook([
          sheet('t', 'form', [
            ['id', 'id'],
            ['x', path],
          ]),
        ]),
        opts,
      );
      expect(query.sources.map(sourceRecordKeys), path).toEqual([undefined]);
    }
  });

  it('asks for whole records for child tables that fall back to the record (exportRootIfNoSubdocument)', async () => {
    const book = await workbook([sheet('children', 'form.form.child', [['name', 'name']])]);
    const cut = await compileWorkbook(book, opts);
    expect(cut.sources.map(sourceRecordKeys)).toEqual([
      [['archived'], ['domain'], ['form', 'child'], ['form', 'id'], ['id'], ['name']],
    ]);
    const whole = await compileWorkbook(book, { ...opts, exportRootIfNoSubdocument: true });
    expect(whole.sources.map(sourceRecordKeys)).toEqual([undefined]);
  });

  it('asks for whole records for computed references, api_data inside a value, and JSON queries', () => {
    expect(recordKeysOf([Ref('form.a'), Ref('$.received_on')])).toEqual([
      ['domain'],
      ['form', 'a'],
      ['form', 'id'],
      ['id'],
      ['received_on'],
    ]);
    // Inside a member the record's other keys are out of reach; the member is read whole.
    expect(recordKeysOf([Ref('form.*'), Ref('form..case_name')])).toEqual([['domain'], ['form'], ['id']]);
    // jsonpath-ng binds `where` tighter than `.`: `(form where $).archived`, `form` whole.
    expect(recordKeysOf([Ref('form where $.archived')])).toEqual([['domain'], ['form'], ['id']]);
    expect(recordKeysOf([Ref('form.(a where b.c)')])).toEqual([
      ['domain'],
      ['form', 'a'],
      ['form', 'id'],
      ['id'],
    ]);
    expect(recordKeysOf([Ref(Lit('form.a'))])).toBeNull();
    expect(recordKeysOf([Apply(Ref('len'), Apply(Ref('api_data')))])).toBeNull();
    expect(recordKeysOf([Ref('form.[')])).toBeNull();
    const json = compileMiniLinq(
      {
        Emit: {
          table: 't',
          headings: [{ Lit: 'id' }],
          source: {
            Map: {
              source: { Apply: { fn: { Ref: 'api_data' }, args: [{ Lit: 'form' }] } },
              body: { List: [{ Ref: 'id' }] },
            },
          },
        },
      },
      opts,
    );
    expect(json.sources.map(sourceRecordKeys)).toEqual([undefined]);
  });
});

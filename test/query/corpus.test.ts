import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import { compileQueryFile } from '../../functions/query/index';
import { formatPyDatetime } from '../../functions/query/jsonpath';
import type { Cell } from '../../functions/query/types';

const dir = join(import.meta.dirname, '../fixtures/queries');
const opts = { baseUrl: 'https://www.commcarehq.org/' };

async function docs(): Promise<JsonObject[]> {
  return JSON.parse(await readFile(join(dir, 'documents/forms.json'), 'utf8'));
}

function plain(c: Cell): unknown {
  return c instanceof Date ? { date: formatPyDatetime(c) } : c;
}

/** Runs every source as its own API pass (fresh record objects), tables in file order per record. */
async function run(file: string) {
  const q = await compileQueryFile(join(dir, file), opts);
  const input = await docs();
  const out: Record<
    string,
    { resource: string; params: unknown; headings: readonly string[]; dataTypes: unknown; rows: unknown[][] }
  > = {};
  for (const s of q.sources) {
    const fresh: JsonObject[] = structuredClone(input);
    for (const t of s.tables)
      out[t.name] = {
        resource: s.resource,
        params: s.params,
        headings: t.headings,
        dataTypes: t.dataTypes,
        rows: [],
      };
    for (const d of fresh)
      for (const t of s.tables) out[t.name]!.rows.push(...t.rowsFor(d).map((r) => r.map(plain)));
  }
  return { q, out };
}

describe('query-file compatibility corpus', () => {
  for (const name of ['hq-visit-layout', 'all-headers', 'functions']) {
    it(`produces the expected tables cell by cell for ${name}.xlsx`, async () => {
      const expected = JSON.parse(await readFile(join(dir, `expected/${name}.json`), 'utf8'));
      const { out } = await run(`${name}.xlsx`);
      expect(Object.keys(out)).toEqual(Object.keys(expected));
      for (const [table, exp] of Object.entries<{ headings: string[]; rows: unknown[][] }>(expected)) {
        const got = out[table]!;
        expect(got.headings, table).toEqual(exp.headings);
        expect(got.rows.length, table).toBe(exp.rows.length);
        for (let r = 0; r < exp.rows.length; r++) {
          const row = exp.rows[r]!;
          for (let c = 0; c < row.length; c++)
            expect(got.rows[r]![c], `${table} row ${r} column ${exp.headings[c]}`).toEqual(row[c]);
        }
      }
    });
  }

  it('reads the HQ-generated layout: one API pass for the form and its child tables, DET child ids', async () => {
    const { q, out } = await run('hq-visit-layout.xlsx');
    expect(q.sources).toHaveLength(1);
    expect(q.sources[0]!.params).toEqual({
      'xmlns.exact': ['http://openrosa.org/formdesigner/5A1D4E2B-VISIT'],
    });
    expect(q.sources[0]!.tables.map((t) => t.name)).toEqual([
      'visit',
      'visit_child',
      'visit_child.case_open_child_case_1',
    ]);
    // reference §1.4 (verified against jsonpath-ng 1.6.1): index-based ids for items without their own id,
    // `<formid>.form.child.<own id>` for items with one; `$.id` is the parent form id; a one-entry repeat
    // serialised as an object still yields one child row.
    expect(out.visit_child!.rows.map((r) => r.slice(0, 3))).toEqual([
      ["form-00000.form.child.'form-00000.form.child.[0]'", 'form-00000', 'Baraka'],
      ['form-00000.form.child.given', 'form-00000', 'Zawadi'],
      ["form-00001.form.child.'form-00001.form.child.[0]'", 'form-00001', 'Juma Jr'],
    ]);
    // Top-level numeric id comes out as text (tests/test_minilinq.py::test_eval_auto_id_reference).
    expect(out.visit!.rows[2]![0]).toBe('7');
  });

  it('leaks the injected id into json2str output as DET does (reference §1.4)', async () => {
    const { out } = await run('functions.xlsx');
    const h = out.Functions!.headings.indexOf('json2str');
    expect(out.Functions!.rows[1]![h]).toBe(
      '{"@case_id": "case-00001", "@user_id": "user-2", "close": "", "id": "form-00001.form.case"}',
    );
  });

  it('computes the same md5 DET uses as checkpoint key', async () => {
    const { q } = await run('small.xlsx');
    const { createHash } = await import('node:crypto');
    expect(q.queryFileMd5).toBe(
      createHash('md5')
        .update(await readFile(join(dir, 'small.xlsx')))
        .digest('hex'),
    );
  });
});

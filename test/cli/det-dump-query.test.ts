import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ccexport } from '../support/cli-process';
import { DUMP_CASES, RECORDED, writeConstructsWorkbook } from '../support/det-dump-cases';

/**
 * `ccexport --dump-query` against DET 1.15's `--dump-query` on the same query file and flags, recorded by
 * test/fixtures/queries/det-dump/record.ts (DET's standard output without the "Running export..." and
 * "Export finished!" lines it prints around the JSON). Byte for byte: the same MiniLinq tree, key order,
 * indentation and `\uXXXX` escapes. Measured side by side on DET 1.15's own example and test query files
 * (27 files, not in this repository): the 18 that DET prints are byte-identical; DET crashes on the other
 * 9 (sheets without Field rows: its `to_jvalue` fails on the missing body), where we print `"body": null`.
 */

const work = mkdtempSync(join(tmpdir(), 'dump-query-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('--dump-query prints what DET prints', () => {
  for (const c of DUMP_CASES) {
    it(`for ${c.name}${c.args.length > 0 ? ` (${c.args.join(' ')})` : ''}`, async () => {
      const query = await c.query(work);
      const r = await ccexport(['--project', 'p', '--query', query, '--dump-query', ...c.args]);
      expect(r.code, r.err).toBe(0);
      expect(r.out).toBe(readFileSync(join(RECORDED, `${c.name}.json`), 'utf8'));
      if (c.withoutLocations) expect(r.err).toContain('the commcare_locations query is left out');
    }, 60_000);
  }

  it("warns about each sheet DET ignores, with DET's reason", async () => {
    const query = join(work, 'ignored.xlsx');
    await writeConstructsWorkbook(query);
    const r = await ccexport(['--project', 'p', '--query', query, '--dump-query']);
    expect(r.err.split('\n').filter(Boolean)).toEqual([
      `Ignoring sheet "Missing source": 'NoneType' object has no attribute 'value'`,
      'Ignoring sheet "Bad ds": Bad value for data source: form,case',
      'Ignoring sheet "Trailing": Blank node path: form.',
    ]);
  }, 60_000);

  it('prints a sheet without Field rows with "body": null, where DET crashes', async () => {
    const query = join(work, 'no-fields.xlsx');
    await writeConstructsWorkbook(query, { noFields: true });
    const r = await ccexport(['--project', 'p', '--query', query, '--dump-query']);
    expect(r.code, r.err).toBe(0);
    const dump = JSON.parse(r.out) as { List: { Bind: { body: { Emit: Record<string, unknown> } } }[] };
    const emit = dump.List.map((q) => q.Bind.body.Emit).find((e) => e?.table === 'No fields');
    expect(emit).toMatchObject({ headings: [], source: { Map: { body: null } } });
  }, 60_000);

  it('fails as DET does when the SQL output needs an id the sheets lack', async () => {
    const query = join(work, 'sql.xlsx');
    await writeConstructsWorkbook(query);
    const r = await ccexport([
      '--project',
      'p',
      '--query',
      query,
      '--dump-query',
      '--output-format',
      'sql',
      '--output',
      'postgresql://u@localhost/db',
    ]);
    expect(r.code).toBe(1);
    // DET 1.15 prints exactly these lines (MissingColumnException) and exits 1.
    expect(r.err).toContain(
      'Sheet "Children" is missing definitions for required fields: "id"\n' +
        'Sheet "Case blocks" is missing definitions for required fields: "id"\n',
    );
    expect(r.out).toBe('');
  }, 60_000);
});

describe('--dump-tables', () => {
  it('prints the tables our engine compiles the query to', async () => {
    const r = await ccexport([
      '--project',
      'p',
      '--query',
      join(import.meta.dirname, '../fixtures/queries/small.xlsx'),
      '--dump-tables',
    ]);
    expect(r.code, r.err).toBe(0);
    const tables = JSON.parse(r.out) as { name: string; resource: string; columns: unknown[] }[];
    expect(tables[0]).toMatchObject({ name: 'Forms', resource: 'form' });
  }, 60_000);

  it('is refused together with --dump-query', async () => {
    const r = await ccexport(['--project', 'p', '--query', 'q.xlsx', '--dump-query', '--dump-tables']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('give --dump-query or --dump-tables, not both');
  }, 60_000);
});

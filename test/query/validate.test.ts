import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ExcelJS from 'exceljs';
import { describe, expect, it } from 'vitest';
import {
  compileQueryFile,
  compileWorkbook,
  formatValidation,
  QueryFileError,
  validateQueryFile,
} from '../../functions/query/index';

const dir = join(import.meta.dirname, '../fixtures/queries');
const opts = { baseUrl: 'https://www.commcarehq.org' };

describe('validateQueryFile', () => {
  it('names the sheet and cell of every problem DET would only hit at the first record', async () => {
    const r = await validateQueryFile(join(dir, 'broken.xlsx'), opts);
    const msgs = r.errors.map((e) => `${e.sheet}!${e.cell}: ${e.message}`);
    expect(
      msgs.some((m) => m.startsWith('Visits!D3: unknown Map Via function "FormatDate"; expected one of')),
    ).toBe(true);
    expect(msgs.some((m) => m.startsWith('Visits!D4: Map Via "selected(fever" is malformed'))).toBe(true);
    // DET quotes the unparsable segment (`form."child[0"`), so this is a warning, not an error.
    expect(msgs.some((m) => m.startsWith('Visits!C5'))).toBe(false);
    expect(r.warnings.some((w) => w.cell === 'C5' && w.message.includes('read as form."child[0"'))).toBe(
      true,
    );
    expect(msgs.some((m) => m.startsWith('Visits!C6: Source Field bad path'))).toBe(true);
    expect(msgs.some((m) => m.startsWith('Visits!C7: Field "no_source" has no Source Field'))).toBe(true);
    expect(
      msgs.some((m) =>
        m.startsWith('Visits!D8: Map Via "template({} {})" has 2 placeholder(s) but 1 value(s)'),
      ),
    ).toBe(true);
    expect(msgs.filter((m) => m.includes('FormatDate'))).toHaveLength(1);
    expect(r.warnings.map((w) => `${w.sheet}: ${w.message}`)).toEqual(
      expect.arrayContaining([
        expect.stringContaining('Visits: unknown header "Colour"'),
        expect.stringContaining('Readme: Ignoring sheet: it has no "Data Source" column'),
      ]),
    );
    expect(formatValidation(r)).toContain('Sheet "Visits", cell D3: unknown Map Via function "FormatDate"');
  });

  it('fails compiling when every table sheet is broken, listing each reason', async () => {
    const err = await compileQueryFile(join(dir, 'broken.xlsx'), opts).catch((e) => e);
    expect(err).toBeInstanceOf(QueryFileError);
    const message = (err as QueryFileError).message;
    expect(message).toContain('every sheet was skipped');
    expect(message).toContain('cell D3: unknown Map Via function "FormatDate"');
  });

  it('skips a sheet DET ignores (Source Field case.update.) with a warning naming it, and runs the others', async () => {
    const book = new ExcelJS.Workbook();
    book.addWorksheet('Cases').addRows([
      ['Data Source', 'Filter Name', 'Filter Value', 'Field', 'Source Field'],
      ['case', 'type', 'person', 'id', 'id'],
      [null, null, null, 'name', 'properties.name'],
    ]);
    book.addWorksheet('Updates').addRows([
      ['Data Source', 'Field', 'Source Field'],
      ['form', 'id', 'id'],
      [null, 'update', 'form.case.update.'],
    ]);
    const bytes = new Uint8Array(await book.xlsx.writeBuffer());

    const compiled = await compileWorkbook(bytes, opts);

    expect(compiled.sources.flatMap((s) => s.tables.map((t) => t.name))).toEqual(['Cases']);
    expect(compiled.warnings).toEqual([
      expect.stringMatching(/^Sheet "Updates": Ignoring sheet, as DET does: cell C3: Source Field bad path/),
    ]);
    const path = join(mkdtempSync(join(tmpdir(), 'ccexport-skip-')), 'hq.xlsx');
    writeFileSync(path, bytes);
    const validation = await validateQueryFile(path, opts);
    expect(validation.errors.map((e) => `${e.sheet}!${e.cell}`)).toEqual(['Updates!C3']);
  });

  it('fails with a clear message on a truncated workbook or a text file named .xlsx', async () => {
    for (const f of ['truncated.xlsx', 'not-a-workbook.xlsx']) {
      const err = await compileQueryFile(join(dir, f), opts).catch((e) => e);
      expect(err).toBeInstanceOf(QueryFileError);
      expect((err as Error).message).toContain('not a readable .xlsx workbook');
    }
  });

  it('describes tables with source, filters and columns', async () => {
    const r = await validateQueryFile(join(dir, 'all-headers.xlsx'), opts);
    expect(r.errors).toEqual([]);
    const text = formatValidation(r);
    expect(text).toContain('Table "all_forms" (sheet "Forms")');
    expect(text).toContain(
      'filters: app_id=app-1, xmlns.exact=http://openrosa.org/formdesigner/5A1D4E2B-VISIT OR xmlns.exact=http://openrosa.org/formdesigner/5A1D4E2B-VISIT-v2, cases__full=true',
    );
    expect(text).toContain('name <- form.patient.full_name or form.patient.name, form.name [text]');
    expect(
      r.warnings.some((w) => w.cell === 'K6' && w.message.startsWith('unknown Data Type "whatever"')),
    ).toBe(true);
  });

  it('applies DET SQL checks: reserved names, long columns, a required id', async () => {
    const r = await validateQueryFile(join(dir, 'functions.xlsx'), { ...opts, forSql: true });
    expect(r.errors).toEqual([]);
    const r2 = await validateQueryFile(join(dir, 'all-headers.xlsx'), { ...opts, forSql: true });
    expect(r2.errors.map((e) => e.message)).toEqual(
      expect.arrayContaining([
        'table "all_forms" has no "id" field; the SQL output needs one as its primary key',
      ]),
    );
  });

  it('adds commcare_userid to form tables with organization data', async () => {
    const q = await compileQueryFile(join(dir, 'hq-visit-layout.xlsx'), { ...opts, withOrganization: true });
    const visit = q.sources[0]!.tables[0]!;
    expect(visit.headings.at(-1)).toBe('commcare_userid');
    expect(
      visit
        .rowsFor({ id: 'f', metadata: { userID: 'u9' }, form: {} })
        .at(0)
        ?.at(-1),
    ).toBe('u9');
  });

  it('accepts DET literal Error cells when lenient, writing DET text', async () => {
    const r = await validateQueryFile(join(dir, 'broken.xlsx'), { ...opts, lenient: true });
    expect(r.errors.some((e) => e.message.includes('selected(fever'))).toBe(false);
    expect(r.warnings.some((e) => e.message.includes('"Error: Unable to parse: selected(fever"'))).toBe(true);
  });
});

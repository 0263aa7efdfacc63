import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ExcelJS from 'exceljs';
import JSZip from 'jszip';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { validateQueryFile } from '../../functions/query/index';
import { parseCsv } from '../sinks/helpers';
import { recordsForTables } from '../support/query-data';
import { type QueryHq, startQueryHq } from '../support/query-hq';
import { TABLE_SHEET_HEADINGS } from '../support/query-workbook';
import { captureIO } from './capture';

const XMLNS = 'http://openrosa.org/formdesigner/corpus-visit';

/**
 * Our own workbook with every construct DET's example and test query files use: filters (`xmlns.exact`,
 * `type`, `app_id`), Table Name, a Mappings sheet, Map Via and Format Via functions, Alternate Source
 * Fields (both spellings), Data Types, Include Referenced Items, child tables over a repeat
 * (`form.form.child[*]`, `case[*].xform_ids[*]`), a descendant path (`form..case`), root references
 * (`$.id`), a one-column table, and two sheets sharing one data source.
 */
async function corpusWorkbook(path: string): Promise<void> {
  const book = new ExcelJS.Workbook();
  book.addWorksheet('Mappings').addRows([
    ['Mapping Name', 'Source', 'Destination'],
    ['sex', 'f', 'Female'],
    ['sex', 'plain text', 'Mapped'],
  ]);
  book
    .addWorksheet('Visits')
    .addRows([
      TABLE_SHEET_HEADINGS,
      ['form', 'xmlns.exact', XMLNS, 'visits', 'id', 'id', null, null, null, null],
      [
        null,
        null,
        null,
        null,
        'visit_date',
        'form.visit_date',
        'str2date',
        null,
        'date',
        'form.date_of_visit',
      ],
      [null, null, null, null, 'weight', 'form.weight', 'str2num', null, null, null],
      [null, null, null, null, 'pregnant', 'form.pregnant', 'str2bool', null, 'boolean', null],
      [null, null, null, null, 'sex', 'form.sex', null, null, null, null],
      [null, null, null, null, 'danger_0', 'form.dangers', 'selected-at(0)', null, null, null],
      [null, null, null, null, 'fever', 'form.dangers', 'selected(fever)', null, null, null],
      [null, null, null, null, 'name', 'form.name', null, null, 'text', null],
      [null, null, null, null, 'attrs', 'form.node', null, null, null, null],
      [null, null, null, null, 'user', 'metadata.username', null, null, null, null],
    ]);
  book.addWorksheet('Visit ids').addRows([
    ['Data Source', 'Filter Name', 'Filter Value', 'Field', 'Source Field'],
    ['form', 'xmlns.exact', XMLNS, 'id', 'id'],
  ]);
  book.addWorksheet('Children').addRows([
    ['Data Source', 'Filter Name', 'Filter Value', 'Field', 'Source Field', 'Alternate Source Field 1'],
    ['form.form.child[*]', 'xmlns.exact', XMLNS, 'form_id', '$.id', null],
    [null, null, null, 'child_name', 'child_name', 'name'],
    [null, null, null, 'dob', 'dob', null],
  ]);
  book.addWorksheet('Case blocks').addRows([
    ['Data Source', 'Filter Name', 'Filter Value', 'Field', 'Source Field'],
    ['form[*].form..case', 'xmlns.exact', XMLNS, 'case_id', '@case_id'],
    [null, null, null, 'form_id', '$.id'],
  ]);
  book.addWorksheet('Mothers').addRows([
    [
      'Data Source',
      'Filter Name',
      'Filter Value',
      'Include Referenced Items',
      'Field',
      'Source Field',
      'Map Via',
      'Data Type',
    ],
    ['case', 'type', 'mother', 'xforms', 'id', 'id', null, null],
    [null, null, null, null, 'name', 'properties.case_name', null, null],
    [null, null, null, null, 'age', 'properties.age', null, 'integer'],
    [null, null, null, null, 'edd', 'properties.edd', 'str2date', null],
    [null, null, null, null, 'closed', 'closed', null, null],
  ]);
  book.addWorksheet('CaseToForm').addRows([
    ['Data Source', 'Filter Name', 'Filter Value', 'Field', 'Source Field'],
    ['case[*].xform_ids[*]', 'type', 'mother', 'case_id', '$.id'],
    [null, null, null, 'form_id', '`this`'],
  ]);
  await book.xlsx.writeFile(path);
}

let hq: QueryHq;
let work: string;
let query: string;
let records: { forms: number; cases: number };

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'ccexport-corpus-'));
  query = join(work, 'corpus.xlsx');
  await corpusWorkbook(query);
  const validation = await validateQueryFile(query, { baseUrl: 'https://www.commcarehq.org' });
  expect(validation.errors).toEqual([]);
  const data = recordsForTables(validation.tables, { perSource: 23, tieRun: 3 });
  records = { forms: data.forms.length, cases: data.cases.length };
  hq = await startQueryHq(data);
});

afterAll(async () => {
  await hq?.close();
  rmSync(work, { recursive: true, force: true });
});

async function exportZip(name: string, batchSize: number): Promise<Record<string, string[][]>> {
  const output = join(work, `${name}.zip`);
  const io = captureIO({ CCEXPORT_API_KEY: 'corpus-key' });
  const flags = ['--project', 'corpus', '--commcare-hq', hq.url, '--username', 'analyst@example.org'];
  flags.push(
    '--query',
    query,
    '--output-format',
    'csv',
    '--output',
    output,
    '--batch-size',
    String(batchSize),
  );
  expect(await main([...flags, '--progress', 'none'], io), io.err()).toBe(0);
  const zip = await JSZip.loadAsync(readFileSync(output));
  const tables: Record<string, string[][]> = {};
  for (const entry of Object.values(zip.files)) tables[entry.name] = parseCsv(await entry.async('string'));
  return tables;
}

describe('our DET construct corpus', () => {
  it('exports every table, one row per matching record, and the same rows at a page of 2 with indexed_on ties across pages', async () => {
    const whole = await exportZip('whole', 1000);
    const paged = await exportZip('paged', 2);

    expect(Object.keys(whole).sort()).toEqual([
      'Case blocks.csv',
      'CaseToForm.csv',
      'Children.csv',
      'Mothers.csv',
      'Visit ids.csv',
      'visits.csv',
    ]);
    expect(paged).toEqual(whole);
    expect(whole['visits.csv']!.length - 1).toBe(records.forms);
    // A one-column table keeps every row (a blank csv line would be dropped by readers).
    expect(whole['Visit ids.csv']!.length - 1).toBe(records.forms);
    expect(whole['Mothers.csv']!.length - 1).toBe(records.cases);
  });

  it('renders the hard values as DET does: unicode, numbers as strings, dates in many formats, mapped values', async () => {
    const visits = (await exportZip('values', 1000))['visits.csv']!;
    const column = (name: string) => visits.slice(1).map((row) => row[visits[0]!.indexOf(name)]);

    expect(column('name')).toContain('Zoë नमस्ते 你好');
    expect(column('weight')).toEqual(expect.arrayContaining(['12', '3.5', '1000']));
    expect(column('visit_date')).toEqual(
      expect.arrayContaining(['2024-03-05 00:00:00', '2024-03-05 10:20:30', '2024-12-31 23:59:59']),
    );
    expect(column('sex')).toContain('Mapped');
  });
});

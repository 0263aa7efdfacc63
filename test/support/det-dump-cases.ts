/**
 * `--dump-query` side by side with DET 1.15: the workbooks and command lines compared, shared by
 * test/cli/det-dump-query.test.ts (ours against DET's recorded output) and
 * test/fixtures/queries/det-dump/record.ts (which runs DET to record it).
 */
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ExcelJS from 'exceljs';
import { TABLE_SHEET_HEADINGS } from './query-workbook';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const RECORDED = join(REPO_ROOT, 'test', 'fixtures', 'queries', 'det-dump');
const FIXTURES = join(REPO_ROOT, 'test', 'fixtures', 'queries');

/**
 * Every construct DET's Excel compiler treats on its own: a Mappings sheet (numeric and unicode sources,
 * an empty destination, a row without a name), repeated filter names (an OR) and a numeric filter value,
 * Table Name, Map Via and Format Via (known functions, `selected-at`, `selected`, `template` with paths,
 * `substr`, malformed ones DET turns into literal errors, an unknown function), both spellings of
 * Alternate Source Fields, a Source Field DET quotes (`form.#foo.bar`), unicode headings, Include
 * Referenced Items without filters, child tables (`form[*].form.child[*]`, `form..case`,
 * `messaging-event.messages[*]`), two sheets on one data source with their filters in another order,
 * a `commcare_userid` column (for --with-organization) both as DET requires it and conflicting, and
 * sheets DET ignores (a Field without a Source Field, a data source that is not one resource, a path
 * ending in a dot). With `noFields`, also a sheet with a Data Source and no Field rows.
 */
export async function writeConstructsWorkbook(path: string, options: { noFields?: boolean } = {}) {
  const book = new ExcelJS.Workbook();
  book.addWorksheet('Mappings').addRows([
    ['Mapping Name', 'Source', 'Destination'],
    ['sex', 'f', 'Female'],
    ['sex', 1, 'One'],
    ['sex', 'm', null],
    [null, 'x', 'y'],
    ['état', 'é', 'ü'],
  ]);
  book
    .addWorksheet('Visits')
    .addRows([
      TABLE_SHEET_HEADINGS,
      ['form', 'xmlns.exact', 'http://x/y', 'visits', 'id', 'id', null, null, null, null],
      [
        null,
        'app_id',
        5,
        null,
        'visit_date',
        'form.visit_date',
        'str2date',
        null,
        'date',
        'form.date_of_visit, form.other',
      ],
      [null, 'xmlns.exact', 'http://x/z', null, 'sex', 'form.sex', null, null, null, null],
      [null, null, null, null, 'danger_0', 'form.dangers', 'selected-at(0)', null, null, null],
      [null, null, null, null, 'bad', 'form.dangers', 'selected-at(x)', null, null, null],
      [
        null,
        null,
        null,
        null,
        'fever',
        'form.dangers',
        'selected(fever)',
        'template({} !, form.a)',
        null,
        null,
      ],
      [null, null, null, null, 'sub', 'form.name', 'substr(1, 3)', null, null, null],
      [null, null, null, null, 'sub2', 'form.name', 'substr(a)', null, null, null],
      [null, null, null, null, 'weird', 'form.#foo.bar', 'nosuchfn', null, null, null],
      [null, null, null, null, 'état', 'form.état', null, null, null, null],
      [null, null, null, null, 'ü-name', 'form.ü', null, null, null, null],
    ]);
  book.addWorksheet('Visits again').addRows([
    [
      'Data Source',
      'Filter Name',
      'Filter Value',
      'Field',
      'Source Field',
      'Alternate Source Field 2',
      'Alternate Source Field 1',
    ],
    ['form', 'app_id', 5, 'id', 'id', 'b', 'a'],
    [null, 'xmlns.exact', 'http://x/y', 'x', 'form.x', null, 'c'],
    [null, 'xmlns.exact', 'http://x/z', null, null, null, null],
  ]);
  book.addWorksheet('Children').addRows([
    ['Data Source', 'Filter Name', 'Filter Value', 'Include Referenced Items', 'Field', 'Source Field'],
    ['form[*].form.child[*]', null, null, 'cases', 'form_id', '$.id'],
    [null, null, null, 'xforms', 'child_name', 'child_name'],
  ]);
  book.addWorksheet('Case blocks').addRows([
    ['Data Source', 'Field', 'Source Field'],
    ['form..case', 'case_id', '@case_id'],
    [null, 'commcare_userid', '$.metadata.userID'],
  ]);
  book.addWorksheet('Cases').addRows([
    ['Data Source', 'Filter Name', 'Filter Value', 'Field', 'Source Field'],
    ['case', 'type', 'mother', 'id', 'id'],
    [null, null, null, 'commcare_userid', 'user_id'],
  ]);
  if (options.noFields) {
    book.addWorksheet('No fields').addRows([
      ['Data Source', 'Filter Name', 'Filter Value'],
      ['case', 'type', 'x'],
    ]);
  }
  book.addWorksheet('Missing source').addRows([
    ['Data Source', 'Field', 'Source Field'],
    ['case', 'id', 'id'],
    [null, 'b', null],
    [null, 'c', null],
  ]);
  book.addWorksheet('Bad ds').addRows([
    ['Data Source', 'Field', 'Source Field'],
    ['form,case', 'id', 'id'],
  ]);
  book.addWorksheet('Trailing').addRows([
    ['Data Source', 'Field', 'Source Field'],
    ['case', 'id', 'form.'],
  ]);
  book.addWorksheet('Messaging').addRows([
    ['Data Source', 'Field', 'Source Field'],
    ['messaging-event.messages[*]', 'id', 'id'],
    [null, 'n', 'name'],
  ]);
  await book.xlsx.writeFile(path);
}

/** A MiniLinq query as people write them by hand: `name` and `missing_value` left out, `data_types` given. */
export const MINILINQ_QUERY = {
  List: [
    {
      Emit: {
        table: 'forms',
        headings: [{ Lit: 'id' }, { Lit: 'received' }],
        source: {
          Map: {
            source: {
              Apply: { fn: { Ref: 'api_data' }, args: [{ Lit: 'form' }, { Ref: 'checkpoint_manager' }] },
            },
            body: {
              List: [{ Ref: 'id' }, { Apply: { fn: { Ref: 'str2date' }, args: [{ Ref: 'received_on' }] } }],
            },
          },
        },
        data_types: [{ Lit: 'text' }, { Lit: 'date' }],
      },
    },
    {
      Emit: {
        table: 'crianças',
        headings: [{ Lit: 'name' }],
        source: {
          FlatMap: {
            source: {
              Apply: {
                fn: { Ref: 'api_data' },
                args: [
                  { Lit: 'form' },
                  { Ref: 'checkpoint_manager' },
                  { Lit: { 'xmlns.exact': ['http://x/y'] } },
                ],
              },
            },
            body: { Ref: 'form.child[*]' },
          },
        },
        missing_value: '---',
      },
    },
  ],
};

export interface DumpCase {
  /** The recorded file: test/fixtures/queries/det-dump/<name>.json. */
  readonly name: string;
  /** Writes (or names) the query file. */
  readonly query: (dir: string) => Promise<string>;
  readonly args: readonly string[];
  /** DET also prints the commcare_locations query, which needs HQ: the recording leaves it out. */
  readonly withoutLocations?: boolean;
}

const fixture = (file: string) => async () => join(FIXTURES, file);
const constructs = async (dir: string) => {
  const path = join(dir, 'constructs.xlsx');
  await writeConstructsWorkbook(path);
  return path;
};

export const DUMP_CASES: readonly DumpCase[] = [
  { name: 'small', query: fixture('small.xlsx'), args: [] },
  { name: 'all-headers', query: fixture('all-headers.xlsx'), args: [] },
  { name: 'functions', query: fixture('functions.xlsx'), args: [] },
  { name: 'hq-visit-layout', query: fixture('hq-visit-layout.xlsx'), args: [] },
  {
    name: 'household-registration',
    query: async () => join(REPO_ROOT, 'examples', 'household-registration.xlsx'),
    args: ['--output-format', 'sql', '--output', 'postgresql://u@localhost/warehouse'],
  },
  { name: 'constructs', query: constructs, args: [] },
  { name: 'constructs-csv', query: constructs, args: ['--output-format', 'csv', '--output', 'reports.zip'] },
  {
    name: 'constructs-users-missing-root',
    query: constructs,
    args: ['--users', '--missing-value=---', '--export-root-if-no-subdocument'],
  },
  {
    name: 'constructs-organization',
    query: constructs,
    args: ['--with-organization'],
    withoutLocations: true,
  },
  {
    name: 'minilinq',
    query: async (dir) => {
      const path = join(dir, 'query.json');
      writeFileSync(path, JSON.stringify(MINILINQ_QUERY, null, 2));
      return path;
    },
    args: ['--output-format', 'markdown'],
  },
];

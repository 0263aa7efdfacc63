/**
 * Builds `household-registration.xlsx`, the bundled demo query: a DET workbook in the layout HQ
 * generates (Source Field | Field | Map Via | Data Source | Filter Name | Filter Value | Table Name),
 * with a household table and a child table of household members from the repeat group.
 *
 *   node --import tsx examples/build-demo-query.ts
 */
import { fileURLToPath } from 'node:url';
import ExcelJS from 'exceljs';

const REGISTRATION = 'http://openrosa.org/formdesigner/5C1B5E2A-7F3D-4E11-9C2B-REGISTRATION';
const HEADERS = [
  'Source Field',
  'Field',
  'Map Via',
  'Data Source',
  'Filter Name',
  'Filter Value',
  'Table Name',
];

type Column = [source: string, field: string, mapVia?: string];

const households: Column[] = [
  ['id', 'id'],
  ['form.household_name', 'household_name'],
  ['form.household_size', 'household_size', 'str2num'],
  ['form.services', 'services'],
  ['form.services', 'receives_anc', 'selected(anc)'],
  ['form.services', 'service_count', 'count-selected'],
  ['form.location_info.village', 'village'],
  ['form.location_info.gps', 'gps'],
  ['form.case.@case_id', 'case_id'],
  ['form.meta.username', 'username'],
  ['received_on', 'received_on', 'str2date'],
  ['id', 'form_link', 'form_url'],
];

const members: Column[] = [
  ['id', 'id'],
  ['$.id', 'form_id'],
  ['member_name', 'member_name'],
  ['age', 'age', 'str2num'],
  ['sex', 'sex'],
];

function addSheet(
  workbook: ExcelJS.Workbook,
  title: string,
  source: string,
  table: string,
  columns: Column[],
): void {
  const sheet = workbook.addWorksheet(title);
  sheet.addRow(HEADERS);
  columns.forEach(([sourceField, field, mapVia], index) => {
    const first = index === 0;
    sheet.addRow([
      sourceField,
      field,
      mapVia ?? null,
      first ? source : null,
      first ? 'xmlns.exact' : null,
      first ? REGISTRATION : null,
      first ? table : null,
    ]);
  });
}

export async function buildDemoQuery(path: string): Promise<void> {
  const workbook = new ExcelJS.Workbook();
  addSheet(workbook, 'Households', 'form', 'households', households);
  addSheet(workbook, 'Members', 'form.form.members[*]', 'household_members', members);
  await workbook.xlsx.writeFile(path);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await buildDemoQuery(fileURLToPath(new URL('household-registration.xlsx', import.meta.url)));
}

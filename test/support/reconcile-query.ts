/**
 * A query with the shapes a reconcile must handle: registration forms (`households`), their members as
 * child rows (`household_members`, ids `<form id>.<n>`) and household cases (`cases`): two data sources,
 * one of them with a child table.
 */
import ExcelJS from 'exceljs';
import type { JsonObject } from '../../functions/common/json';
import type { SandboxDataset } from '../../functions/sandbox';
import { HQ_LAYOUT_HEADINGS } from './query-workbook';

const XMLNS = 'http://openrosa.org/formdesigner/5C1B5E2A-7F3D-4E11-9C2B-REGISTRATION';

/** Writes the query workbook to `path`. */
export async function writeHouseholdsMembersCasesQuery(path: string): Promise<void> {
  const book = new ExcelJS.Workbook();
  const head = HQ_LAYOUT_HEADINGS;
  book
    .addWorksheet('Households')
    .addRows([
      head,
      ['id', 'id', null, 'form', 'xmlns.exact', XMLNS, 'households'],
      ['form.household_name', 'household_name'],
    ]);
  book
    .addWorksheet('Members')
    .addRows([
      head,
      ['id', 'id', null, 'form.form.members[*]', 'xmlns.exact', XMLNS, 'household_members'],
      ['$.id', 'form_id'],
    ]);
  book.addWorksheet('Cases').addRows([head, ['id', 'id', null, 'case', 'type', 'household', 'cases']]);
  await book.xlsx.writeFile(path);
}

/** The household cases of a project HQ lists today (the `cases` table's records). */
export function householdCases(dataset: SandboxDataset, project: string): JsonObject[] {
  return [...dataset.finalState(project, 'case')]
    .map(([, c]) => c)
    .filter((c) => (c.properties as JsonObject).case_type === 'household');
}

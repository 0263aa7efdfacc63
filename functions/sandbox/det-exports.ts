/**
 * Exports defined in HQ's Export Data screens that the Data Export Tool can run, as HQ serves them:
 * `DETExportInstanceResource` (`corehq/apps/api/resources/v1_0.py`: list and detail under
 * `/a/<d>/api/det_export_instance/v1/`, permission View Reports, tastypie paging) and the config download
 * `DownloadDETSchemaView` (`corehq/apps/export/views/download.py`: `/a/<d>/data/export/custom/schema/det/
 * download/<id>/`, an xlsx attachment named `<name>-DET.xlsx`; a config HQ cannot build answers 200 with a
 * text message instead of a workbook).
 */
import ExcelJS from 'exceljs';
import type { JsonObject } from '../common/json';
import { hex32 } from './prng';
import { FORM_TYPES } from './records';

/** One column of an export: the workbook's Field and Source Field. */
export interface SandboxDetColumn {
  readonly field: string;
  readonly source: string;
}

/** An export instance flagged for DET config download. */
export interface SandboxDetExport {
  readonly id: string;
  readonly name: string;
  readonly type: 'form' | 'case';
  /** The form's xmlns (form exports). */
  readonly xmlns?: string;
  /** The case type (case exports). */
  readonly caseType?: string;
  readonly exportFormat?: string;
  readonly isDeidentified?: boolean;
  readonly columns: readonly SandboxDetColumn[];
  /** HQ cannot build this export's config (DETConfigError): the download answers a text message. @default false */
  readonly broken?: boolean;
}

/** The exports a project has when its definition names none. */
export function defaultDetExports(salt: number): SandboxDetExport[] {
  const registration = FORM_TYPES[0]!;
  return [
    {
      id: hex32(salt, 300),
      name: 'Household registrations',
      type: 'form',
      xmlns: registration.xmlns,
      exportFormat: 'xlsx',
      columns: [
        { field: 'formid', source: 'id' },
        { field: 'received_on', source: 'received_on' },
        { field: 'household_name', source: 'form.household_name' },
        { field: 'household_size', source: 'form.household_size' },
        { field: 'village', source: 'form.location_info.village' },
      ],
    },
    {
      id: hex32(salt, 301),
      name: 'household cases',
      type: 'case',
      caseType: 'household',
      exportFormat: 'csv',
      isDeidentified: true,
      columns: [
        { field: 'caseid', source: 'id' },
        { field: 'name', source: 'properties.case_name' },
        { field: 'household_size', source: 'properties.household_size' },
        { field: 'village', source: 'properties.village' },
      ],
    },
  ];
}

export const DET_DOWNLOAD_PATH = /^\/a\/([^/]+)\/data\/export\/custom\/schema\/det\/download\/([^/]+)\/?$/;
export const DET_LIST_PATH = /^\/a\/([^/]+)\/api\/det_export_instance\/v1\/(?:([^/]+)\/)?$/;

/** The tastypie object of one export; `det_config_url` is relative, as `reverse()` builds it. */
export function detExportObject(domain: string, e: SandboxDetExport): JsonObject {
  return {
    id: e.id,
    name: e.name,
    type: e.type,
    export_format: e.exportFormat ?? 'csv',
    is_deidentified: e.isDeidentified ?? false,
    case_type: e.type === 'case' ? (e.caseType ?? null) : null,
    xmlns: e.type === 'form' ? (e.xmlns ?? null) : null,
    det_config_url: `/a/${domain}/data/export/custom/schema/det/download/${e.id}/`,
    resource_uri: `/a/${domain}/api/det_export_instance/v1/${e.id}/`,
  };
}

/**
 * The DET config workbook HQ generates for an export (`generate_from_export_instance`): one sheet, the
 * Data Source in row 2, the export's filter (xmlns or case type) as Filter Name / Filter Value, then one
 * row per column with its Field and Source Field.
 */
export async function detConfigWorkbook(e: SandboxDetExport): Promise<Buffer> {
  const workbook = new ExcelJS.Workbook();
  const sheet = workbook.addWorksheet(e.name.slice(0, 31).replace(/[[\]:*?/\\]/g, ' ') || 'Export');
  sheet.addRow(['Data Source', 'Filter Name', 'Filter Value', 'Field', 'Source Field']);
  const filter: [string, string] =
    e.type === 'form' ? ['xmlns.exact', e.xmlns ?? ''] : ['type', e.caseType ?? ''];
  e.columns.forEach((column, k) => {
    sheet.addRow([
      k === 0 ? e.type : null,
      k === 0 ? filter[0] : null,
      k === 0 ? filter[1] : null,
      column.field,
      column.source,
    ]);
  });
  return Buffer.from(await workbook.xlsx.writeBuffer());
}

/**
 * Exports defined in CommCare HQ's Export Data screens that the Data Export Tool can run: HQ lists them
 * at `/a/<project>/api/det_export_instance/v1/` (permission View Reports; `DETExportInstanceResource` in
 * `corehq/apps/api/resources/v1_0.py`) with `det_config_url`, where the export's DET config workbook is
 * downloaded with the same API key (`DownloadDETSchemaView`, `corehq/apps/export/views/download.py`).
 */
import type { JsonObject } from '../common/json';
import { CommCareConfigError, CommCareDetConfigError, CommCareResponseError } from './errors';

/** One DET export of a project, as HQ lists it. */
export interface HqExport {
  readonly id: string;
  readonly name: string;
  readonly type: 'form' | 'case';
  readonly exportFormat: string | null;
  readonly isDeidentified: boolean;
  readonly caseType: string | null;
  readonly xmlns: string | null;
  /** Where the DET config workbook is downloaded (HQ sends it relative or absolute). */
  readonly configUrl: string;
}

const str = (value: unknown): string | null => (typeof value === 'string' ? value : null);

export function parseHqExport(record: JsonObject): HqExport {
  const id = str(record.id);
  const configUrl = str(record.det_config_url);
  const type = record.type;
  if (id === null || configUrl === null || (type !== 'form' && type !== 'case'))
    throw new CommCareResponseError(
      `an entry of det_export_instance lacks an id, a det_config_url or a type of "form" or "case": ${JSON.stringify(record).slice(0, 200)}`,
    );
  return {
    id,
    name: str(record.name) ?? id,
    type,
    exportFormat: str(record.export_format),
    isDeidentified: record.is_deidentified === true,
    caseType: str(record.case_type),
    xmlns: str(record.xmlns),
    configUrl,
  };
}

/**
 * The export a `hq:<name or id>` reference means: an id matches first, then an exact name. Two exports
 * with that name are refused with both ids, since running the wrong one would write the wrong tables.
 */
export function findHqExport(exports: readonly HqExport[], project: string, ref: string): HqExport {
  const byId = exports.find((e) => e.id === ref);
  if (byId) return byId;
  const named = exports.filter((e) => e.name === ref);
  if (named.length === 1) return named[0]!;
  if (named.length > 1)
    throw new CommCareConfigError(
      `${named.length} HQ exports of project "${project}" are named "${ref}" (ids ${named.map((e) => e.id).join(', ')}); give the id instead`,
    );
  const known = exports.map((e) => `"${e.name}" (${e.id})`).join(', ') || 'none';
  throw new CommCareConfigError(
    `project "${project}" has no HQ export named or with id "${ref}" that the Data Export Tool can run; its exports: ${known}`,
  );
}

/**
 * An xlsx file is a zip. HQ's download view answers 200 with anything else only when building the
 * workbook raised `DETConfigError` (`_render_det_download`: "Sorry, something went wrong creating that
 * file: <error>", translated into the user's language); its other failures are 4xx/5xx. So a 200
 * answer that is not a workbook is `CommCareDetConfigError`, permanent.
 */
export function requireWorkbook(bytes: Buffer, exportName: string): Buffer {
  if (bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b) return bytes;
  const text = bytes.toString('utf8', 0, Math.min(bytes.length, 300)).replace(/\s+/g, ' ').trim();
  throw new CommCareDetConfigError(
    `CommCare HQ did not send a DET config workbook for export "${exportName}"; it said: ${text || '(an empty answer)'}. ` +
      "HQ cannot build this export's config: edit the export in HQ (Data > Export Data) so that DET can run it; a retry gets the same answer",
  );
}

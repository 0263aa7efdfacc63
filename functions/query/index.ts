/**
 * DET query files -> `CompiledQuery`. Excel workbooks (by extension) and JSON MiniLinq files.
 *
 *   const q = await compileQueryFile('forms.xlsx', { baseUrl: 'https://www.commcarehq.org' });
 *   for (const source of q.sources) for (const record of pull(source)) for (const t of source.tables) t.rowsFor(record);
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { QueryParams } from '../commcare/types';
import { DELETED_AT_COLUMN, DELETED_COLUMN } from '../sinks/types';
import { formatIssue, QueryFileError, type QueryFileIssue } from './errors';
import { compileSheets, readWorkbook, sqlChecks, type TableDescription } from './excel';
import { compileJsonQuery } from './json-query';
import { groupSources, makeTablePlan } from './plan';
import type { CompiledQuery } from './types';

export {
  BUILTIN_TABLE_NAMES,
  type BuiltinOptions,
  BuiltinPrefetchError,
  type BuiltinRecordSource,
  type BuiltinResource,
  builtinSources,
  LOCATIONS_TABLE_NAME,
  locationsTablePlan,
  USERS_TABLE_NAME,
  usersTablePlan,
} from './builtin';
export {
  formatIssue,
  JsonPathSyntaxError,
  QueryFileError,
  type QueryFileIssue,
  QueryRuntimeError,
} from './errors';
export type { ExcelColumnDescription, TableDescription } from './excel';
export { compileMapFormatVia } from './excel';
export { compilePath, parsePath, safeSourceField } from './jsonpath';
export { fromJValue, toJValue } from './minilinq';

export interface CompileOptions {
  /** CommCare HQ base URL (DET `--commcare-hq`), used by `attachment_url`, `form_url`, `case_url`. */
  readonly baseUrl: string;
  /** Cell value when a path matches nothing (DET `--missing-value`). @default null */
  readonly missingValue?: string | null;
  /** Emit one row from the root record when a child table's repeat is absent/empty. @default false */
  readonly exportRootIfNoSubdocument?: boolean;
  /** Add `commcare_userid` to every form and case table (DET `--with-organization`). @default false */
  readonly withOrganization?: boolean;
  /**
   * Apply every check the SQL output makes before a run (DET's: reserved table names, 63-byte column
   * names, an `id` field; ours: our and DET's checkpoint tables, names that map to one PostgreSQL table
   * or column, and with `deletions: 'mark'` the `_deleted`/`_deleted_at` columns the run adds). @default false
   */
  readonly forSql?: boolean;
  /** The run's deletions mode, for the SQL checks: `mark` adds `_deleted` and `_deleted_at` to every table. @default 'remove' */
  readonly deletions?: 'remove' | 'mark' | 'ignore';
  /**
   * Accept Map Via cells DET turns into a literal `Error: ...` cell value (malformed `selected(`, `substr(a, b)`),
   * writing DET's text like DET does, as warnings instead of errors. @default false - such files are refused
   */
  readonly lenient?: boolean;
}

export interface ValidationResult {
  readonly file: string | null;
  readonly tables: readonly TableDescription[];
  readonly errors: readonly QueryFileIssue[];
  readonly warnings: readonly QueryFileIssue[];
}

interface Analysis extends ValidationResult {
  readonly compiled: CompiledQuery | null;
}

function normBase(url: string): string {
  return url.replace(/\/+$/, '');
}

async function analyseBytes(
  bytes: Uint8Array,
  kind: 'xlsx' | 'json',
  options: CompileOptions,
  file: string | null,
  mode: 'run' | 'validate',
): Promise<Analysis> {
  const md5 = createHash('md5').update(bytes).digest('hex');
  const baseUrl = normBase(options.baseUrl);
  const missingValue = options.missingValue ?? null;
  let result: {
    tables: {
      description: TableDescription;
      resource: never | string;
      params: QueryParams;
      draft: Parameters<typeof makeTablePlan>[0];
    }[];
    errors: QueryFileIssue[];
    warnings: QueryFileIssue[];
  };
  if (kind === 'xlsx') {
    let sheets: Awaited<ReturnType<typeof readWorkbook>>;
    try {
      sheets = await readWorkbook(bytes);
    } catch (e) {
      const issue = {
        message: `not a readable .xlsx workbook (${(e as Error).message ?? String(e)}); save it again from Excel as .xlsx`,
      };
      return { file, tables: [], errors: [issue], warnings: [], compiled: null };
    }
    result = compileSheets(sheets, {
      baseUrl,
      missingValue,
      exportRootIfNoSubdocument: options.exportRootIfNoSubdocument ?? false,
      withOrganization: options.withOrganization ?? false,
      lenient: options.lenient ?? false,
    });
  } else {
    let json: unknown;
    try {
      json = JSON.parse(Buffer.from(bytes).toString('utf8'));
    } catch (e) {
      return {
        file,
        tables: [],
        errors: [{ message: `not valid JSON: ${(e as Error).message}` }],
        warnings: [],
        compiled: null,
      };
    }
    if (options.withOrganization)
      return {
        file,
        tables: [],
        errors: [{ message: 'withOrganization applies to Excel query files only (as in DET)' }],
        warnings: [],
        compiled: null,
      };
    result = compileJsonQuery(json, { baseUrl, missingValue });
  }
  let errors = [...result.errors];
  const warnings = [...result.warnings];
  if (mode === 'run' && kind === 'xlsx') {
    // DET runs a workbook whose sheet it cannot parse, logging 'Ignoring sheet "X": reason' and
    // exporting the others (HQ-generated workbooks can hold such a sheet, e.g. Source Field
    // `case.update.`). A run does the same; validate-query keeps reporting the sheet as an error.
    const broken = new Map<string, string[]>();
    for (const e of errors) {
      if (e.sheet === undefined) continue;
      const reason = e.cell !== undefined ? `cell ${e.cell}: ${e.message}` : e.message;
      broken.set(e.sheet, [...(broken.get(e.sheet) ?? []), reason]);
    }
    for (const [sheet, reasons] of broken) {
      warnings.push({ sheet, message: `Ignoring sheet, as DET does: ${reasons.join('; ')}` });
    }
    errors = errors.filter((e) => e.sheet === undefined);
    result = { ...result, tables: result.tables.filter((t) => !broken.has(t.description.sheet ?? '')) };
  }
  if (result.tables.length === 0 && errors.length === 0) {
    const skipped = warnings.filter((w) => w.sheet !== undefined && w.message.startsWith('Ignoring sheet'));
    const why =
      skipped.length > 0
        ? `every sheet was skipped (${skipped.map((w) => `"${w.sheet}": ${w.message}`).join('; ')})`
        : 'the file has no table';
    errors.push({
      message:
        `no sheet describes a table: ${why}; a table sheet has a header row (row 1) with at least ` +
        '"Data Source", "Field" and "Source Field" (in any order and case, as DET reads them)',
    });
  }
  if (options.forSql)
    errors.push(
      ...sqlChecks(
        result.tables.map((t) => ({
          sheet: t.description.sheet,
          name: t.draft.name,
          headings: t.draft.headings,
        })),
        sqlCheckOptions(options),
      ),
    );
  const tables = result.tables.map((t) => t.description);
  if (errors.length > 0) return { file, tables, errors, warnings, compiled: null };
  const sources = groupSources(
    result.tables.map((t) => ({
      resource: t.resource as never,
      params: t.params,
      table: makeTablePlan(t.draft),
    })),
  );
  return {
    file,
    tables,
    errors,
    warnings,
    compiled: { sources, queryFileMd5: md5, warnings: warnings.map(formatIssue) },
  };
}

/** What the run adds to every table before the SQL output sees it. */
function sqlCheckOptions(options: CompileOptions): Parameters<typeof sqlChecks>[1] {
  return options.deletions === 'mark'
    ? {
        addedColumns: {
          names: [DELETED_COLUMN, DELETED_AT_COLUMN],
          why: 'deletions "mark" adds it to every table',
        },
      }
    : {};
}

function kindOf(path: string): 'xlsx' | 'json' {
  return /\.xlsx?$/i.test(path) ? 'xlsx' : 'json';
}

async function readBytes(path: string): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new QueryFileError([{ message: `cannot read ${path}: ${(e as Error).message}` }], {
      cause: e,
      file: path,
    });
  }
}

function finish(a: Analysis, file?: string): CompiledQuery {
  if (!a.compiled) throw new QueryFileError(a.errors, file ? { file } : undefined);
  return a.compiled;
}

/** Compiles a DET query file: `.xlsx`/`.xls` as an Excel query, anything else as JSON MiniLinq. */
export async function compileQueryFile(path: string, options: CompileOptions): Promise<CompiledQuery> {
  const bytes = await readBytes(path);
  return finish(await analyseBytes(bytes, kindOf(path), options, path, 'run'), path);
}

/** Compiles an Excel query file held in memory. */
export async function compileWorkbook(buffer: Uint8Array, options: CompileOptions): Promise<CompiledQuery> {
  return finish(await analyseBytes(buffer, 'xlsx', options, null, 'run'));
}

/** Compiles a JSON MiniLinq query (parsed JSON, or its text). */
export function compileMiniLinq(json: unknown, options: CompileOptions): CompiledQuery {
  const text = typeof json === 'string' ? json : JSON.stringify(json);
  const bytes = Buffer.from(text, 'utf8');
  // JSON compilation is synchronous; analyseBytes only awaits for workbooks.
  const baseUrl = normBase(options.baseUrl);
  const parsed = typeof json === 'string' ? safeParse(json) : { ok: true as const, value: json };
  if (!parsed.ok) throw new QueryFileError([{ message: `not valid JSON: ${parsed.error}` }]);
  const r = compileJsonQuery(parsed.value, { baseUrl, missingValue: options.missingValue ?? null });
  const errors = [...r.errors];
  if (options.forSql)
    errors.push(
      ...sqlChecks(
        r.tables.map((t) => ({ sheet: null, name: t.draft.name, headings: t.draft.headings })),
        sqlCheckOptions(options),
      ),
    );
  if (errors.length > 0) throw new QueryFileError(errors);
  return {
    sources: groupSources(
      r.tables.map((t) => ({ resource: t.resource, params: t.params, table: makeTablePlan(t.draft) })),
    ),
    queryFileMd5: createHash('md5').update(bytes).digest('hex'),
    warnings: r.warnings.map(formatIssue),
  };
}

function safeParse(s: string): { ok: true; value: unknown } | { ok: false; error: string } {
  try {
    return { ok: true, value: JSON.parse(s) };
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  }
}

/** Checks a query file without running it: every table with its source, plus all errors and warnings. */
export async function validateQueryFile(path: string, options: CompileOptions): Promise<ValidationResult> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    return {
      file: path,
      tables: [],
      errors: [{ message: `cannot read ${path}: ${(e as Error).message}` }],
      warnings: [],
    };
  }
  const { compiled: _c, ...rest } = await analyseBytes(bytes, kindOf(path), options, path, 'validate');
  return rest;
}

/** Human-readable report of a validation: tables with source, filters and columns, then problems. */
export function formatValidation(result: ValidationResult): string {
  const out: string[] = [];
  if (result.file) out.push(`Query file: ${result.file}`);
  out.push(`${result.tables.length} table(s)`);
  for (const t of result.tables) {
    out.push('');
    out.push(`Table "${t.name}"${t.sheet && t.sheet !== t.name ? ` (sheet "${t.sheet}")` : ''}`);
    out.push(`  source: ${t.resource}${t.rowPath ? `, one row per ${t.rowPath}` : ''}`);
    const filters = Object.entries(t.params);
    out.push(
      `  filters: ${filters.length === 0 ? '(none)' : filters.map(([k, v]) => v.map((x) => `${k}=${x}`).join(' OR ')).join(', ')}`,
    );
    out.push(`  columns (${t.columns.length}):`);
    for (const c of t.columns) {
      const parts = [c.sourceField ?? '(expression)'];
      if (c.alternateSourceFields.length > 0) parts.push(`or ${c.alternateSourceFields.join(', ')}`);
      if (c.mapVia) parts.push(`map via ${c.mapVia}`);
      if (c.formatVia) parts.push(`format via ${c.formatVia}`);
      if (c.dataType) parts.push(`[${c.dataType}]`);
      out.push(`    ${c.heading} <- ${parts.join(' ')}`);
    }
  }
  if (result.errors.length > 0) {
    out.push('', `${result.errors.length} error(s):`);
    for (const e of result.errors) out.push(`  - ${formatIssue(e)}`);
  }
  if (result.warnings.length > 0) {
    out.push('', `${result.warnings.length} warning(s):`);
    for (const w of result.warnings) out.push(`  - ${formatIssue(w)}`);
  }
  if (result.errors.length === 0) out.push('', 'OK');
  return out.join('\n');
}

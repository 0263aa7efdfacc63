/**
 * DET Excel query files (`commcare_export/excel_query.py`, `map_format.py`): every sheet but `Mappings`
 * is a table; the headers and their meaning follow DET exactly, problems are reported per cell.
 */
import type { Buffer as ExcelBuffer } from 'exceljs';
import type { QueryParams, ResourceName } from '../commcare/types';
import { pgTableProblems } from '../sinks/postgres/reserved';
import type { QueryFileIssue } from './errors';
import { BUILTINS, MAP_VIA_FUNCTIONS } from './functions';
import {
  isDict,
  type PathNode,
  parsePath,
  pathToString,
  pyStr,
  safeSourceField,
  splitLeftmost,
} from './jsonpath';
import { Apply, type CompileContext, compileExpr, compileValue, Lit, type MLNode, Ref } from './minilinq';
import { DATA_TYPES, paramText, RESOURCES, type TableDraft } from './plan';
import { recordKeysOf } from './record-keys';
import type { DataType } from './types';
import { expressionKind, type ValueKind } from './value-kinds';
import { unwrapVal } from './values';
import { readPlainWorkbook } from './xlsx-light';

export type CellValue = string | number | boolean | Date | null;

/** One sheet as a grid of plain values (1-based rows and columns, like openpyxl). */
export interface SheetGrid {
  readonly title: string;
  readonly rows: number;
  readonly cols: number;
  get(row: number, col: number): CellValue;
  /** The last row holding a value in `col` (0 when none). @default `rows` */
  lastRow?(col: number): number;
}

export function colLetter(col: number): string {
  let s = '';
  let n = col;
  while (n > 0) {
    const m = (n - 1) % 26;
    s = String.fromCharCode(65 + m) + s;
    n = Math.floor((n - 1) / 26);
  }
  return s;
}

function normalize(v: unknown): CellValue {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' || v instanceof Date) return v;
  if (isDict(v)) {
    if (Array.isArray(v.richText))
      return v.richText.map((r) => (isDict(r) ? String(r.text ?? '') : '')).join('');
    if ('formula' in v || 'sharedFormula' in v) return normalize(v.result);
    if ('hyperlink' in v) return normalize(v.text);
    if ('error' in v) return null;
    if ('text' in v) return normalize(v.text);
  }
  return String(v);
}

/**
 * Reads every sheet of an xlsx buffer into grids, as exceljs reads them: plain workbooks (strings,
 * numbers, booleans, as query files are) by xlsx-light.ts, others by exceljs. Throws whatever exceljs
 * throws on a broken file.
 *
 * Sheets are kept sparse, only the cells that hold a value: a sheet's dimensions come from its farthest
 * cell, and one stray cell at row 1,000,000, column 2000 would make a dense grid of two billion cells.
 * Columns are read down to their own last value, never to the sheet's last row.
 */
export async function readWorkbook(buffer: Buffer | Uint8Array): Promise<SheetGrid[]> {
  const plain = readPlainWorkbook(buffer);
  if (!plain) return await readWorkbookWithExcelJs(buffer);
  return plain.map(({ title, cells }) => {
    let rows = 0;
    let cols = 0;
    const lastRows = new Map<number, number>();
    for (const [r, line] of cells) {
      rows = Math.max(rows, r);
      for (const c of line.keys()) {
        cols = Math.max(cols, c);
        lastRows.set(c, Math.max(lastRows.get(c) ?? 0, r));
      }
    }
    return {
      title,
      rows,
      cols,
      get: (r: number, c: number) => cells.get(r)?.get(c) ?? null,
      lastRow: (c: number) => lastRows.get(c) ?? 0,
    };
  });
}

/**
 * `readWorkbook` through exceljs, for the workbooks the plain reader (xlsx-light.ts) leaves to it: date
 * cells, merged cells, hyperlinks, and anything it is unsure of. Throws whatever exceljs throws.
 */
export async function readWorkbookWithExcelJs(buffer: Buffer | Uint8Array): Promise<SheetGrid[]> {
  // exceljs's own prebuilt bundle (no polyfills) rather than its Node entry, which loads hundreds of
  // modules: the same reader in about a fifth of the CPU. Loaded only when needed: it is ~1 MB of code,
  // ~0.2 s of CPU and ~12 MB of memory at the start of every run otherwise.
  const { default: ExcelJS } = await import('exceljs/dist/exceljs.bare.min.js');
  const wb = new ExcelJS.Workbook();
  // exceljs's typings want its own Buffer type; a Node Buffer is what it reads.
  await wb.xlsx.load(Buffer.from(buffer) as unknown as ExcelBuffer);
  return wb.worksheets.map((ws) => {
    const cells = new Map<number, Map<number, CellValue>>();
    const lastRows = new Map<number, number>();
    ws.eachRow({ includeEmpty: false }, (row, r) => {
      row.eachCell({ includeEmpty: false }, (cell, c) => {
        const value = normalize(cell.value);
        if (value === null) return;
        let line = cells.get(r);
        if (!line) {
          line = new Map();
          cells.set(r, line);
        }
        line.set(c, value);
        lastRows.set(c, Math.max(lastRows.get(c) ?? 0, r));
      });
    });
    return {
      title: ws.name,
      rows: ws.rowCount,
      cols: ws.columnCount,
      get: (r: number, c: number) => cells.get(r)?.get(c) ?? null,
      lastRow: (c: number) => lastRows.get(c) ?? 0,
    };
  });
}

interface ColCell {
  readonly value: CellValue;
  readonly ref: string;
}

/** Python truthiness of a cell value (`without_empty_tail` drops falsy trailing cells, including 0). */
function truthy(v: CellValue): boolean {
  return !(v === null || v === '' || v === 0 || v === false);
}

function column(ws: SheetGrid, col: number): ColCell[] {
  const cells: ColCell[] = [];
  const last = ws.lastRow ? ws.lastRow(col) : ws.rows;
  for (let r = 2; r <= last; r++) cells.push({ value: ws.get(r, col), ref: `${colLetter(col)}${r}` });
  while (cells.length > 0 && !truthy(cells[cells.length - 1]!.value)) cells.pop();
  return cells;
}

function headerText(v: CellValue): string | null {
  if (v === null) return null;
  return (typeof v === 'string' ? v : pyStr(v)).toLowerCase().trim();
}

/** `get_column_by_name`: the first column whose trimmed, lower-cased header equals `name`. */
function columnByName(ws: SheetGrid, name: string): { col: number; cells: ColCell[] } | null {
  for (let c = 1; c <= ws.cols; c++)
    if (headerText(ws.get(1, c)) === name) return { col: c, cells: column(ws, c) };
  return null;
}

const KNOWN_HEADERS = [
  'data source',
  'filter name',
  'filter value',
  'include referenced items',
  'field',
  'source field',
  'alternate source fields',
  'map via',
  'format via',
  'table name',
  'data type',
];

export interface ExcelColumnDescription {
  readonly heading: string;
  readonly sourceField: string | null;
  readonly alternateSourceFields: readonly string[];
  readonly mapVia: string | null;
  readonly formatVia: string | null;
  readonly dataType: DataType | null;
}

export interface TableDescription {
  readonly sheet: string | null;
  readonly name: string;
  readonly resource: string;
  /** The path iterated inside each record for child tables (`form.child.[*]`), null for one row per record. */
  readonly rowPath: string | null;
  readonly params: QueryParams;
  readonly columns: readonly ExcelColumnDescription[];
}

export interface ExcelCompileOptions {
  readonly baseUrl: string;
  readonly missingValue: string | null;
  readonly exportRootIfNoSubdocument: boolean;
  readonly withOrganization: boolean;
  /** Turn DET's literal `Error: ...` Map Via results into warnings instead of refusing the file. */
  readonly lenient: boolean;
}

export interface ExcelSheetResult {
  readonly description: TableDescription;
  readonly resource: ResourceName;
  readonly params: QueryParams;
  readonly draft: TableDraft;
}

export interface ExcelCompileResult {
  readonly tables: ExcelSheetResult[];
  readonly errors: QueryFileIssue[];
  readonly warnings: QueryFileIssue[];
}

type Mappings = Map<string, Map<unknown, unknown>>;

/** `compile_mappings`: `Mapping Name | Source | Destination`; source keys keep their cell type. */
function compileMappings(ws: SheetGrid): Mappings {
  const names = columnByName(ws, 'mapping name')?.cells ?? [];
  const sources = columnByName(ws, 'source')?.cells ?? [];
  const dests = columnByName(ws, 'destination')?.cells ?? [];
  const out: Mappings = new Map();
  names.forEach((n, i) => {
    const src = sources[i]?.value ?? null;
    if (!truthy(n.value) || !truthy(src)) return;
    const key = typeof n.value === 'string' ? n.value : pyStr(n.value);
    let m = out.get(key);
    if (!m) {
      m = new Map();
      out.set(key, m);
    }
    m.set(src, dests[i]?.value ?? null);
  });
  return out;
}

/** Result of parsing one `Map Via` cell (`map_format.compile_map_format_via`). */
export interface MapViaResult {
  readonly node: MLNode;
  /** DET's literal error text when DET would write it into every row instead of a value. */
  readonly literalError?: string;
  /** Set when DET would crash on the first row (unknown function). */
  readonly unknownFunction?: string;
  /** Paths referenced by `template(fmt, path...)`. */
  readonly paths: readonly string[];
}

function parseFunctionArg(slug: string, text: string): string | null {
  // `^slug\((.*)\)$` with Python's `.` (no newlines) and `$` also matching before a final newline.
  const m = new RegExp(`^${slug.replace(/-/g, '\\-')}\\((.*)\\)\\n?$`).exec(text);
  return m ? m[1]! : null;
}

export function compileMapFormatVia(value: MLNode, text: string): MapViaResult {
  const fnName = text.split('(')[0]!;
  const unable = `Error: Unable to parse: ${text}`;
  switch (fnName) {
    case 'selected-at': {
      const arg = parseFunctionArg('selected-at', text);
      if (arg === null) return { node: Lit(unable), literalError: unable, paths: [] };
      if (!/^\s*[+-]?\d+(?:_\d+)*\s*$/.test(arg)) {
        const msg = `Error: selected-at index must be an integer: ${text}`;
        return { node: Lit(msg), literalError: msg, paths: [] };
      }
      return {
        node: Apply(Ref('selected-at'), value, Lit(Number.parseInt(arg.replace(/_/g, ''), 10))),
        paths: [],
      };
    }
    case 'selected': {
      const arg = parseFunctionArg('selected', text);
      if (arg === null) return { node: Lit(unable), literalError: unable, paths: [] };
      return { node: Apply(Ref('selected'), value, Lit(arg)), paths: [] };
    }
    case 'template': {
      const arg = parseFunctionArg('template', text);
      if (arg === null) return { node: Lit(unable), literalError: unable, paths: [] };
      const args = arg
        .split(',')
        .map((a) => a.trim())
        .filter((a) => a.length > 0);
      if (args.length < 1) {
        const msg = `Error: template function requires the format template: ${text}`;
        return { node: Lit(msg), literalError: msg, paths: [] };
      }
      const [fmt, ...paths] = args as [string, ...string[]];
      const argNodes = paths.length > 0 ? paths.map((p) => Ref(p)) : [value];
      return { node: Apply(Ref('template'), Lit(fmt), ...argNodes), paths };
    }
    case 'substr': {
      const arg = parseFunctionArg('substr', text);
      if (arg === null) return { node: Lit(unable), literalError: unable, paths: [] };
      const m = /^\s*(\d+)\s*,\s*(\d+)\s*$/.exec(arg);
      if (!m) {
        const msg = `Error: both substr arguments must be non-negative integers: ${text}`;
        return { node: Lit(msg), literalError: msg, paths: [] };
      }
      return { node: Apply(Ref('substr'), value, Lit(Number(m[1])), Lit(Number(m[2]))), paths: [] };
    }
    default: {
      const node = Apply(Ref(text), value);
      if (!Object.hasOwn(BUILTINS, text)) return { node, unknownFunction: text, paths: [] };
      return { node, paths: [] };
    }
  }
}

/** `compile_mapped_field`: look the (string) value up in the mapping, falling back to the value. */
function mappedField(mapping: Map<unknown, unknown>, expr: MLNode): MLNode {
  // DET builds `mapping."<value>"` and resolves it with JSONPath; only string values can match (numeric
  // mapping keys never match), and a falsy destination falls back to the original value (`default`).
  return { t: 'Apply', fn: Ref('__mapping'), args: [Lit(mapping), expr] };
}

/** Number of positional fields a Python format string consumes (for compile-time checks). */
function formatFieldCount(fmt: string): number {
  let auto = 0;
  let maxIdx = -1;
  for (const m of fmt.replace(/\{\{|\}\}/g, '').matchAll(/\{([^{}]*)\}/g)) {
    const head = (m[1] ?? '').split(':')[0]!.split('!')[0]!;
    if (head === '') auto++;
    else if (/^\d+$/.test(head)) maxIdx = Math.max(maxIdx, Number(head));
    else return Number.POSITIVE_INFINITY;
  }
  return Math.max(auto, maxIdx + 1);
}

interface FieldSpec {
  heading: string;
  headingRef: string;
  source: string | null;
  sourceRef: string;
  alternates: string[];
  alternatesRef: string;
  mapVia: string | null;
  mapViaRef: string;
  formatVia: string | null;
  formatViaRef: string;
  dataType: DataType | null;
}

const RESERVED_TABLES = ['commcare_users', 'commcare_locations'];
const ORG_COLUMNS: Record<string, string> = { form: '$.metadata.userID', case: '$.user_id' };

/** Compiles every table sheet; never throws for content problems (they come back as issues). */
export function compileSheets(sheets: readonly SheetGrid[], opts: ExcelCompileOptions): ExcelCompileResult {
  const errors: QueryFileIssue[] = [];
  const warnings: QueryFileIssue[] = [];
  const mappingsSheet = sheets.find((s) => s.title === 'Mappings');
  const mappings = mappingsSheet ? compileMappings(mappingsSheet) : new Map();
  const tables: ExcelSheetResult[] = [];

  for (const ws of sheets) {
    if (ws.title === 'Mappings') continue;
    const sheet = ws.title;
    const err = (cell: string | undefined, message: string) =>
      errors.push({ sheet, ...(cell ? { cell } : {}), message });
    const warn = (cell: string | undefined, message: string) =>
      warnings.push({ sheet, ...(cell ? { cell } : {}), message });

    // Unknown headers: DET ignores them silently.
    for (let c = 1; c <= ws.cols; c++) {
      const h = headerText(ws.get(1, c));
      if (!h) continue;
      if (!KNOWN_HEADERS.includes(h) && !h.startsWith('alternate source field'))
        warn(`${colLetter(c)}1`, `unknown header "${pyStr(ws.get(1, c))}" is ignored (DET ignores it too)`);
    }

    // ---- Data Source (row 2 only)
    const ds = columnByName(ws, 'data source');
    if (!ds) {
      warn(undefined, 'Ignoring sheet: it has no "Data Source" column (DET skips it too)');
      continue;
    }
    if (ds.cells.length === 0) {
      warn(
        undefined,
        'Ignoring sheet: it has only its header row; a table needs its "Data Source" in row 2 (e.g. "form") ' +
          'and at least one "Field" with its "Source Field" (DET skips it too)',
      );
      continue;
    }
    const dsCell = ds.cells[0]!;
    if (!truthy(dsCell.value)) {
      err(dsCell.ref, 'the "Data Source" must be in row 2, e.g. "form" or "form.form.child[*]"');
      continue;
    }
    const dsText = typeof dsCell.value === 'string' ? dsCell.value : pyStr(dsCell.value);
    let resourceNode: PathNode;
    let rest: PathNode;
    try {
      [resourceNode, rest] = splitLeftmost(parsePath(dsText));
    } catch (e) {
      err(dsCell.ref, `Data Source ${(e as Error).message}`);
      continue;
    }
    if (resourceNode.t !== 'fields' || resourceNode.names.length !== 1) {
      err(
        dsCell.ref,
        `bad Data Source "${dsText}": it must start with a resource name such as "form" or "case"`,
      );
      continue;
    }
    const resource = resourceNode.names[0]!;
    if (!(RESOURCES as readonly string[]).includes(resource)) {
      err(dsCell.ref, `unknown Data Source resource "${resource}"; expected one of ${RESOURCES.join(', ')}`);
      continue;
    }
    const [maybeSlice, afterSlice] = splitLeftmost(rest);
    if (maybeSlice.t === 'slice') rest = afterSlice; // `form[*].form.child[*]`: the leading [*] is redundant
    const rowPath = rest.t === 'this' || rest.t === 'root' ? null : rest;

    // ---- filters and referenced items -> query parameters
    const params: Record<string, string[]> = {};
    const fNames = columnByName(ws, 'filter name')?.cells ?? [];
    const fValues = columnByName(ws, 'filter value')?.cells ?? [];
    fNames.forEach((n, i) => {
      if (n.value === null || n.value === '') {
        if (fValues[i] && truthy(fValues[i]!.value))
          warn(n.ref, 'a Filter Value without a Filter Name is ignored');
        return;
      }
      const name = typeof n.value === 'string' ? n.value : pyStr(n.value);
      const text = paramText(fValues[i]?.value ?? null);
      if (!params[name]) params[name] = [];
      if (text === null)
        warn(fValues[i]?.ref ?? n.ref, `filter "${name}" has no value; it is not sent (DET drops it too)`);
      else params[name].push(text);
    });
    for (const c of columnByName(ws, 'include referenced items')?.cells ?? []) {
      if (!truthy(c.value)) continue;
      const key = `${pyStr(c.value)}__full`;
      params[key] = [...(params[key] ?? []), 'true'];
    }
    for (const k of Object.keys(params)) if (params[k]!.length === 0) delete params[k];

    // ---- table name
    const tn = columnByName(ws, 'table name');
    const tnValue = tn?.cells[0]?.value ?? null;
    const name = truthy(tnValue) ? pyStr(tnValue) : sheet;

    // ---- fields
    const fieldCol = columnByName(ws, 'field');
    const fieldCells = fieldCol?.cells ?? [];
    if (fieldCells.length === 0) {
      err(undefined, 'the sheet has a Data Source but no "Field" rows; DET would fail on the first record');
      continue;
    }
    const at = (col: { col: number } | null, i: number) => (col ? `${colLetter(col.col)}${i + 2}` : '');
    const srcCol = columnByName(ws, 'source field');
    const mapCol = columnByName(ws, 'map via');
    const fmtCol = columnByName(ws, 'format via');
    const typeCol = columnByName(ws, 'data type');
    const altCsv = columnByName(ws, 'alternate source fields');
    const altCols: { header: string; col: number; cells: ColCell[] }[] = [];
    for (let c = 1; c <= ws.cols; c++) {
      const raw = ws.get(1, c);
      if (raw !== null && headerText(raw)!.startsWith('alternate source field'))
        altCols.push({ header: pyStr(raw), col: c, cells: column(ws, c) });
    }
    altCols.sort((a, b) => (a.header < b.header ? -1 : a.header > b.header ? 1 : 0));
    const useCsv = altCsv !== null && altCsv.cells.length > 0;

    const specs: FieldSpec[] = fieldCells.map((f, i) => {
      const text = (v: CellValue | undefined) =>
        v === null || v === undefined ? null : typeof v === 'string' ? v : pyStr(v);
      let alternates: string[] = [];
      let alternatesRef = '';
      if (useCsv) {
        const v = altCsv.cells[i]?.value;
        if (truthy(v ?? null))
          alternates = text(v)!
            .split(',')
            .map((s) => s.trim());
        alternatesRef = at(altCsv, i);
      } else {
        for (const ac of altCols) {
          const v = ac.cells[i]?.value ?? null;
          if (truthy(v)) alternates.push(text(v)!);
        }
        alternatesRef = altCols[0] ? `${colLetter(altCols[0].col)}${i + 2}` : '';
      }
      const dtRaw = typeCol?.cells[i]?.value ?? null;
      let dataType: DataType | null = null;
      if (truthy(dtRaw)) {
        const t = pyStr(dtRaw).trim().toLowerCase();
        if ((DATA_TYPES as readonly string[]).includes(t)) dataType = t as DataType;
        else {
          warn(
            at(typeCol, i),
            `unknown Data Type "${pyStr(dtRaw)}"; expected one of ${DATA_TYPES.join(', ')}; using text`,
          );
          dataType = 'text';
        }
      }
      if (!truthy(f.value)) warn(f.ref, 'empty Field name: the column gets an empty heading');
      return {
        heading: text(f.value) ?? '',
        headingRef: f.ref,
        source: text(srcCol?.cells[i]?.value),
        sourceRef: srcCol ? at(srcCol, i) : f.ref,
        alternates,
        alternatesRef,
        mapVia: truthy(mapCol?.cells[i]?.value ?? null) ? text(mapCol!.cells[i]!.value) : null,
        mapViaRef: at(mapCol, i),
        formatVia: truthy(fmtCol?.cells[i]?.value ?? null) ? text(fmtCol!.cells[i]!.value) : null,
        formatViaRef: at(fmtCol, i),
        dataType,
      };
    });

    // ---- --with-organization: the commcare_userid column (`builtin_queries.ColumnEnforcer`)
    if (opts.withOrganization && ORG_COLUMNS[resource]) {
      const src = ORG_COLUMNS[resource];
      const existing = specs.find((s) => s.heading === 'commcare_userid');
      if (existing) {
        const same =
          existing.source !== null &&
          safeOrSelf(existing.source) === src &&
          !existing.mapVia &&
          !existing.formatVia &&
          existing.alternates.length === 0 &&
          !mappings.has('commcare_userid');
        if (!same)
          err(
            existing.headingRef,
            `Field name "commcare_userid" conflicts with an internal name (with-organization adds it from ${src})`,
          );
      } else {
        specs.push({
          heading: 'commcare_userid',
          headingRef: '',
          source: src,
          sourceRef: '',
          alternates: [],
          alternatesRef: '',
          mapVia: null,
          mapViaRef: '',
          formatVia: null,
          formatViaRef: '',
          dataType: null,
        });
      }
    }

    // ---- compile every field
    const fields: ReturnType<typeof compileField>[] = [];
    const fieldNodes: MLNode[] = [];
    const valueKinds: (ValueKind | null)[] = [];
    const fieldErrorsBefore = errors.length;
    for (const s of specs) {
      if (s.source === null || s.source === '') {
        err(
          s.sourceRef || s.headingRef,
          `Field "${s.heading}" has no Source Field (DET would drop the whole sheet)`,
        );
        continue;
      }
      let safe: string;
      try {
        safe = safeSourceField(s.source);
        parsePath(safe);
        if (safe !== s.source)
          warn(
            s.sourceRef,
            `Source Field "${s.source}" is read as ${safe} (DET quotes segments that are not valid paths)`,
          );
      } catch (e) {
        err(s.sourceRef, `Source Field ${(e as Error).message}`);
        continue;
      }
      let expr: MLNode = Ref(safe);
      if (s.alternates.length > 0) {
        for (const alt of s.alternates) {
          try {
            parsePath(alt);
          } catch (e) {
            err(s.alternatesRef, `Alternate Source Field ${(e as Error).message}`);
          }
        }
        expr = Apply(Ref('or'), expr, ...s.alternates.map((a) => Ref(a)));
      }
      for (const [text, ref, label] of [
        [s.mapVia, s.mapViaRef, 'Map Via'],
        [s.formatVia, s.formatViaRef, 'Format Via'],
      ] as const) {
        if (!text) continue;
        const r = compileMapFormatVia(expr, text);
        if (r.unknownFunction !== undefined) {
          err(
            ref,
            `unknown ${label} function "${r.unknownFunction}"; expected one of ${MAP_VIA_FUNCTIONS.join(', ')}, or selected(x), selected-at(n), template(...), substr(a, b)`,
          );
        } else if (r.literalError !== undefined) {
          const m = `${label} "${text}" is malformed; DET would write "${r.literalError}" into every row`;
          if (opts.lenient) warn(ref, m);
          else err(ref, m);
        }
        for (const p of r.paths) {
          try {
            parsePath(p);
          } catch (e) {
            err(ref, `${label} template path ${(e as Error).message}`);
          }
        }
        if (r.node.t === 'Apply' && r.node.fn.t === 'Ref' && r.node.fn.ref === 'template') {
          const fmtNode = r.node.args[0];
          const fmt = fmtNode?.t === 'Lit' ? String(fmtNode.v) : '';
          const need = formatFieldCount(fmt);
          if (need > r.node.args.length - 1)
            err(
              ref,
              `${label} "${text}" has ${need === Number.POSITIVE_INFINITY ? 'named' : need} placeholder(s) but ${r.node.args.length - 1} value(s); DET would fail on the first record`,
            );
        }
        if (r.unknownFunction === undefined) expr = r.node;
      }
      const mapping = mappings.get(s.heading);
      if (mapping) expr = mappedField(mapping, expr);
      valueKinds.push(expressionKind(expr));
      fieldNodes.push(expr);
      fields.push(
        compileField(expr, {
          baseUrl: opts.baseUrl,
          report: (m) => err(s.sourceRef || s.headingRef || undefined, m),
        }),
      );
    }
    // ---- row source: the record, or each item of the child path
    let items: MLNode | null = null;
    if (rowPath) {
      const pathText = pathToString(rowPath);
      items = opts.exportRootIfNoSubdocument
        ? Apply(Ref('_or_raw'), Ref(pathText), {
            t: 'Bind',
            name: '__root_only',
            value: Lit(true),
            body: Ref('$'),
          })
        : Ref(pathText);
    }
    const cc: CompileContext = { baseUrl: opts.baseUrl, report: (m) => err(dsCell.ref, m) };
    const itemsFn = items ? compileExpr(items, cc) : null;
    if (errors.length > fieldErrorsBefore) continue;

    const description: TableDescription = {
      sheet,
      name,
      resource,
      rowPath: rowPath ? pathToString(rowPath) : null,
      params,
      columns: specs.map((s) => ({
        heading: s.heading,
        sourceField: s.source,
        alternateSourceFields: s.alternates,
        mapVia: s.mapVia,
        formatVia: s.formatVia,
        dataType: s.dataType,
      })),
    };
    tables.push({
      description,
      resource: resource as ResourceName,
      params,
      draft: {
        name,
        headings: specs.map((s) => s.heading),
        dataTypes: specs.map((s) => s.dataType),
        valueKinds,
        missingValue: opts.missingValue,
        producer: { kind: 'fields', items: itemsFn, fields },
        recordKeys: recordKeysOf(items ? [items, ...fieldNodes] : fieldNodes),
      },
    });
  }
  return { tables, errors, warnings };
}

function safeOrSelf(p: string): string {
  try {
    return safeSourceField(p);
  } catch {
    return p;
  }
}

/** Compiles a field expression, with the mapping lookup DET expresses through JSONPath done directly. */
function compileField(node: MLNode, cc: CompileContext) {
  if (node.t === 'Apply' && node.fn.t === 'Ref' && node.fn.ref === '__mapping') {
    const mapping = (node.args[0] as { v: Map<unknown, unknown> }).v;
    const inner = compileValue(node.args[1]!, cc);
    return (env: Parameters<typeof inner>[0]) => {
      const raw = inner(env);
      const v = unwrapForMapping(raw);
      if (typeof v === 'string' && mapping.has(v)) {
        const dest = mapping.get(v);
        if (dest !== null && dest !== undefined && dest !== '' && dest !== 0 && dest !== false) return dest;
      }
      return raw;
    };
  }
  return compileValue(node, cc);
}

function unwrapForMapping(raw: unknown): unknown {
  return unwrapVal(raw);
}

/** Checks DET runs before a SQL export (`get_queries_from_excel` with the SQL writer). */
export function sqlChecks(
  tables: readonly { sheet: string | null; name: string; headings: readonly string[] }[],
  options: {
    /** Columns the run adds to every table (`_deleted`, `_deleted_at` with deletions `mark`), and why. */
    readonly addedColumns?: { readonly names: readonly string[]; readonly why: string };
  } = {},
): QueryFileIssue[] {
  const out: QueryFileIssue[] = [];
  const added = options.addedColumns;
  for (const t of tables) {
    const sheet = t.sheet ?? t.name;
    for (const name of added?.names ?? [])
      if (t.headings.includes(name))
        out.push({
          sheet,
          message: `table "${t.name}" has a field named "${name}", a column the run adds itself (${added?.why}); rename the field`,
        });
    if (RESERVED_TABLES.includes(t.name))
      out.push({
        sheet,
        message: `table name "${t.name}" is reserved for the built-in users/locations tables`,
      });
    for (const h of t.headings)
      if (Buffer.byteLength(h, 'utf8') > 63)
        out.push({
          sheet,
          message: `column name "${h}" is ${Buffer.byteLength(h, 'utf8')} bytes; PostgreSQL allows at most 63`,
        });
    if (!t.headings.includes('id'))
      out.push({
        sheet,
        message: `table "${t.name}" has no "id" field; the SQL output needs one as its primary key`,
      });
  }
  // The rest of what the PostgreSQL output refuses at the start of a run (reserved and clashing names).
  for (const problem of pgTableProblems(tables)) {
    const table = tables.find((t) => t.name === problem.table);
    out.push({ sheet: table?.sheet ?? problem.table, message: problem.message });
  }
  return out;
}

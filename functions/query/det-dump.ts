/**
 * What DET 1.15 prints for `--dump-query`: `json.dumps(query.to_jvalue(), indent=4)` of the MiniLinq it
 * builds from the query file (`commcare_export/excel_query.py` `get_queries_from_excel`, `map_format.py`,
 * `minilinq.py` `to_jvalue`, `cli.py` `get_queries`). Our engine compiles workbooks to tables directly
 * (`excel.ts`); this module rebuilds DET's expression tree only to print it, step by step as DET does, so
 * that a DET user comparing dumps sees the same JSON.
 *
 * Followed on purpose, DET's quirks included: `Emit.data_types` prints the headings (DET's `to_jvalue`
 * writes `headings` there), `json.dumps` escapes every non-ASCII character, sheets are grouped by equal
 * data source (one `Map` with several `Emit`s when the output writes several tables at once: every format
 * but csv and markdown), and a sheet DET cannot read is left out with DET's "Ignoring sheet" warning.
 *
 * Where DET fails instead of printing, this prints what DET's tree holds: a sheet without Field rows has
 * `"body": null` (DET's `to_jvalue` crashes on it), and a date cell prints as its ISO text (DET's
 * `json.dumps` refuses a datetime). The `commcare_locations` query (`--locations`, `--with-organization`)
 * is built by DET from HQ's location types, which needs a request; it is left out with a warning.
 */
import { USER_COLUMNS } from './builtin';
import { type CellValue, compileMapFormatVia, readWorkbook, type SheetGrid } from './excel';
import { isDict, parsePath, pathToString, pyStr, splitLeftmost } from './jsonpath';
import { fromJValue, Ref, toJValue } from './minilinq';

/** A JSON value as Python holds it: dicts as `Map`s, so that key order and non-string keys survive. */
export type PyJson =
  | null
  | boolean
  | number
  | string
  | Date
  | readonly PyJson[]
  | ReadonlyMap<PyJson, PyJson>
  | { readonly [key: string]: PyJson };

export interface DetDumpOptions {
  /** `--output-format`: csv and markdown writers cannot write one table twice, so DET emits per sheet. */
  readonly outputFormat: string;
  readonly missingValue: string | null;
  readonly exportRootIfNoSubdocument: boolean;
  readonly withOrganization: boolean;
  readonly users: boolean;
  readonly locations: boolean;
}

export interface DetDump {
  /** The MiniLinq as DET's `to_jvalue` returns it; null when DET would stop with an error. */
  readonly jvalue: PyJson | null;
  readonly warnings: readonly string[];
  /** DET's error message when it refuses the query (reserved table name, long or missing columns). */
  readonly error?: string;
}

// ---------------------------------------------------------------- MiniLinq nodes as DET prints them

type J = PyJson;
const lit = (v: J): J => ({ Lit: v });
const ref = (r: J): J => ({ Ref: r });
const apply = (fn: J, ...args: J[]): J => ({ Apply: { fn, args } });
const list = (items: J[]): J => ({ List: items });
const map = (source: J, body: J | null, name: string | null = null): J => ({
  Map: { body, source, name },
});
const flatMap = (source: J, body: J, name: string | null = null): J => ({
  FlatMap: { body, source, name },
});
const bind = (name: string, value: J, body: J): J => ({ Bind: { name, value, body } });
const filter = (source: J, predicate: J): J => ({ Filter: { predicate, source, name: null } });
/** `Emit.to_jvalue` writes the headings where the data types belong (DET 1.15). */
const emit = (table: J, headings: J[], source: J, missingValue: string | null): J => ({
  Emit: { table, headings, source, missing_value: missingValue, data_types: headings },
});

// ---------------------------------------------------------------- sheet reading as openpyxl + DET do

interface Cell {
  readonly value: CellValue;
}

function falsy(v: CellValue | undefined): boolean {
  return v === null || v === undefined || v === '' || v === 0 || v === false;
}

/** `get_column_by_name`: the cells below the first header equal to `name` (lower-cased, trimmed), or null. */
function columnByName(ws: SheetGrid, name: string): Cell[] | null {
  for (let c = 1; c <= ws.cols; c++) {
    const header = ws.get(1, c);
    if (header === null || header === '') continue;
    if (pyStr(header).toLowerCase().trim() === name) return columnCells(ws, c);
  }
  return null;
}

/** The cells of a column from row 2 without the empty tail (`without_empty_tail`). */
function columnCells(ws: SheetGrid, c: number): Cell[] {
  const last = ws.lastRow ? ws.lastRow(c) : ws.rows;
  const cells: Cell[] = [];
  for (let r = 2; r <= last; r++) cells.push({ value: ws.get(r, c) });
  while (cells.length > 0 && falsy(cells[cells.length - 1]?.value)) cells.pop();
  return cells;
}

/** `extended_to_len`: the list cut or padded with `undefined` (DET's `None`) to `n` items. */
function extended<T>(n: number, items: readonly T[] | null): (T | undefined)[] {
  return Array.from({ length: n }, (_, i) => items?.[i]);
}

/** A sheet DET skips ("Ignoring sheet"), with DET's reason. */
class IgnoredSheet extends Error {}

function text(v: CellValue | undefined, what: string): string {
  if (typeof v !== 'string') throw new IgnoredSheet(`${what} is not text (${pyStr(v ?? null)})`);
  return v;
}

/** `jsonpath_ng.parse` succeeds. */
function parses(path: string): boolean {
  try {
    parsePath(path);
    return true;
  } catch {
    return false;
  }
}

/** `_get_safe_source_field`: a path that does not parse gets its failing segments double-quoted. */
function safeSourceField(source: CellValue | undefined): J {
  const path = text(source, 'a Source Field');
  if (parses(path)) return ref(path);
  const quoted = path
    .split('.')
    .map((node) => (node && !parses(node) ? `"${node}"` : node))
    .join('.');
  if (quoted.endsWith('.')) throw new IgnoredSheet(`Blank node path: ${quoted}`);
  return ref(quoted);
}

type Mappings = Map<CellValue, Map<CellValue, CellValue>>;

/** `compile_mappings`: every row with a Mapping Name cell and a Source cell, empty ones included. */
function compileMappings(ws: SheetGrid): Mappings {
  const names = columnByName(ws, 'mapping name') ?? [];
  const sources = extended(names.length, columnByName(ws, 'source'));
  const destinations = extended(names.length, columnByName(ws, 'destination'));
  const mappings: Mappings = new Map();
  names.forEach((name, i) => {
    const source = sources[i];
    if (!source) return;
    let mapping = mappings.get(name.value);
    if (!mapping) {
      mapping = new Map();
      mappings.set(name.value, mapping);
    }
    mapping.set(source.value, destinations[i]?.value ?? null);
  });
  return mappings;
}

function compileMappedField(fieldMappings: Map<CellValue, CellValue>, expr: J): J {
  const quoted = apply(ref('join'), lit(''), lit('"'), expr, lit('"'));
  const mappingRef = apply(ref('join'), lit('.'), lit('mapping'), quoted);
  const mapped = flatMap(lit([fieldMappings]), ref(mappingRef), 'mapping');
  return apply(ref('default'), mapped, expr);
}

/** Stands for the value expression while `compileMapFormatVia` builds the call around it. */
const VALUE_PLACEHOLDER = '\u0000value';

function compileMapFormat(expr: J, via: CellValue): J {
  const spec = text(via, 'a Map Via / Format Via');
  // map_format.compile_map_format_via, built on our node type, then printed with DET's expression in place.
  const built = toJValue(compileMapFormatVia(Ref(VALUE_PLACEHOLDER), spec).node) as J;
  return substitute(built, expr);
}

function substitute(j: J, expr: J): J {
  if (isDict(j) && !(j instanceof Map) && (j as { Ref?: unknown }).Ref === VALUE_PLACEHOLDER) return expr;
  if (Array.isArray(j)) return j.map((x) => substitute(x, expr));
  if (j === null || typeof j !== 'object' || j instanceof Date || j instanceof Map) return j;
  return Object.fromEntries(Object.entries(j).map(([k, v]) => [k, substitute(v as J, expr)]));
}

/** A PyJson tree as plain JSON (Maps become objects), for messages. */
function plainJson(j: J): unknown {
  if (j instanceof Map) return Object.fromEntries([...j].map(([k, v]) => [pyKey(k), plainJson(v)]));
  if (Array.isArray(j)) return j.map(plainJson);
  if (j instanceof Date || j === null || typeof j !== 'object') return j;
  return Object.fromEntries(Object.entries(j).map(([k, v]) => [k, plainJson(v as J)]));
}

function compileField(
  field: CellValue,
  source: CellValue | undefined,
  alternates: readonly CellValue[] | null,
  mapVia: CellValue,
  formatVia: CellValue,
  mappings: Mappings | null,
): J {
  let expr = safeSourceField(source);
  if (alternates && alternates.length > 0) expr = apply(ref('or'), expr, ...alternates.map((a) => ref(a)));
  if (!falsy(mapVia)) expr = compileMapFormat(expr, mapVia);
  if (!falsy(formatVia)) expr = compileMapFormat(expr, formatVia);
  const fieldMappings = mappings && mappings.size > 0 ? mappings.get(field) : undefined;
  if (fieldMappings) expr = compileMappedField(fieldMappings, expr);
  return expr;
}

/** `get_alternate_source_fields`: the comma-separated column, else the numbered columns, else none. */
function alternateSourceFields(ws: SheetGrid, n: number): (readonly CellValue[] | null)[] {
  const csv = columnByName(ws, 'alternate source fields');
  if (csv && csv.length > 0 && n > 0) {
    return extended(n, csv).map((cell) =>
      cell && !falsy(cell.value)
        ? text(cell.value, 'an Alternate Source Fields cell')
            .split(',')
            .map((s) => s.trim())
        : null,
    );
  }
  const columns: { header: string; cells: Cell[] }[] = [];
  for (let c = 1; c <= ws.cols; c++) {
    const header = ws.get(1, c);
    if (falsy(header)) continue;
    const name = pyStr(header);
    if (name.toLowerCase().startsWith('alternate source field'))
      columns.push({ header: name, cells: columnCells(ws, c) });
  }
  // Python's sorted() on the header text: code-point order.
  columns.sort((a, b) => (a.header < b.header ? -1 : a.header > b.header ? 1 : 0));
  if (columns.length === 0 || n === 0) return extended(n, []).map(() => null);
  return Array.from({ length: n }, (_, i) =>
    columns.map((col) => col.cells[i]?.value ?? null).filter((v) => !falsy(v)),
  );
}

interface SheetParts {
  readonly name: J;
  readonly headings: J[];
  readonly source: J;
  readonly body: J | null;
  readonly rootExpr: J | null;
  readonly dataSource: string | null;
}

const ORGANIZATION_COLUMNS: Record<string, string> = { form: '$.metadata.userID', case: '$.user_id' };

function parseSheet(ws: SheetGrid, mappings: Mappings | null, options: DetDumpOptions): SheetParts {
  // ---- compile_source
  const dataSourceColumn = columnByName(ws, 'data source');
  if (!dataSourceColumn || dataSourceColumn.length === 0)
    throw new IgnoredSheet('Sheet has no "Data Source" column.');
  const dataSourceText = text(dataSourceColumn[0]?.value ?? null, 'the Data Source');
  let leftmost: ReturnType<typeof parsePath>;
  let rest: ReturnType<typeof parsePath>;
  try {
    [leftmost, rest] = splitLeftmost(parsePath(dataSourceText));
  } catch (e) {
    throw new IgnoredSheet((e as Error).message);
  }
  const [maybeSlice, afterSlice] = splitLeftmost(rest);
  if (leftmost.t !== 'fields' || leftmost.names.length > 1)
    throw new IgnoredSheet(`Bad value for data source: ${pathToString(leftmost)}`);
  const dataSource = leftmost.names[0] ?? '';
  if (maybeSlice.t === 'slice') rest = afterSlice;

  const filterNames = (columnByName(ws, 'filter name') ?? []).map((c) => c.value);
  const filters = new Map<CellValue, CellValue[]>();
  if (filterNames.length > 0) {
    const values = extended(
      filterNames.length,
      (columnByName(ws, 'filter value') ?? []).map((c) => c.value),
    );
    filterNames.forEach((name, i) => {
      const list = filters.get(name) ?? [];
      list.push(values[i] ?? null);
      filters.set(name, list);
    });
  }
  const referenced = (columnByName(ws, 'include referenced items') ?? []).map((c) => c.value);
  const apiArgs: J[] = [ref('api_data'), lit(dataSource), ref('checkpoint_manager')];
  if (filters.size === 0) {
    if (referenced.length > 0) apiArgs.push(lit(null));
  } else apiArgs.push(lit(filters));
  if (referenced.length > 0) apiArgs.push(lit(referenced));
  const source = apply(apiArgs[0] as J, ...apiArgs.slice(1));

  let rootExpr: J | null = null;
  if (rest.t !== 'this' && rest.t !== 'root') {
    const path = pathToString(rest);
    rootExpr = options.exportRootIfNoSubdocument
      ? apply(ref('_or_raw'), ref(path), bind('__root_only', lit(true), ref('$')))
      : ref(path);
  }

  // ---- parse_sheet
  const tableNameColumn = columnByName(ws, 'table name');
  const name: J =
    tableNameColumn && tableNameColumn.length > 0 ? (tableNameColumn[0]?.value ?? null) : ws.title;
  const headingCells = columnByName(ws, 'field') ?? [];
  const fields = headingCells;
  if (fields.length === 0) return { name, headings: [], source, body: null, rootExpr, dataSource };

  const sourceFields = extended(fields.length, columnByName(ws, 'source field'));
  const mapVias = extended(fields.length, columnByName(ws, 'map via'));
  const formatVias = extended(fields.length, columnByName(ws, 'format via'));
  const alternates = alternateSourceFields(ws, fields.length);
  const outputFields = fields.map((field, i) => {
    const sourceCell = sourceFields[i];
    if (!sourceCell) throw new IgnoredSheet("'NoneType' object has no attribute 'value'");
    return compileField(
      field.value,
      sourceCell.value,
      alternates[i] ?? null,
      mapVias[i]?.value ?? null,
      formatVias[i]?.value ?? null,
      mappings,
    );
  });
  let headings: J[] = headingCells.map((c) => lit(c.value));
  let body: J[] = outputFields;

  // ---- require_column_in_sheet (--with-organization)
  const requiredSource = options.withOrganization ? ORGANIZATION_COLUMNS[dataSource] : undefined;
  if (requiredSource !== undefined) {
    let extend = true;
    headingCells.forEach((cell, i) => {
      if (cell.value !== 'commcare_userid') return;
      const field = outputFields[i] as { Ref?: unknown };
      if (isDict(field) && field.Ref === requiredSource) extend = false;
      else throw new IgnoredSheet('Field name "commcare_userid" conflicts with an internal name.');
    });
    if (extend) {
      headings = [...headings, lit('commcare_userid')];
      body = [...body, safeSourceField(requiredSource)];
    }
  }
  return { name, headings, source, body: list(body), rootExpr, dataSource };
}

// ---------------------------------------------------------------- compile_queries

/** Python `==` between two trees (dicts compare without regard to key order). */
function pyEqual(a: J, b: J): boolean {
  if (a === b) return true;
  if (a instanceof Date || b instanceof Date)
    return a instanceof Date && b instanceof Date && a.getTime() === b.getTime();
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((x, i) => pyEqual(x, b[i] as J));
  }
  const entries = (x: J) =>
    x instanceof Map ? [...x] : Object.entries(x as { [key: string]: J }).map(([k, v]) => [k, v] as const);
  const ea = entries(a);
  const eb = entries(b);
  if (ea.length !== eb.length) return false;
  return ea.every(([k, v]) => eb.some(([k2, v2]) => pyEqual(k as J, k2 as J) && pyEqual(v as J, v2 as J)));
}

function checkpointBind(dataSource: string | null, tables: J[], body: J): J {
  return bind('checkpoint_manager', apply(ref('get_checkpoint_manager'), lit(dataSource), lit(tables)), body);
}

function singleEmitQuery(sheet: SheetParts, missingValue: string | null): J {
  const source = sheet.rootExpr ? flatMap(sheet.source, sheet.rootExpr) : sheet.source;
  return checkpointBind(
    sheet.dataSource,
    [sheet.name],
    emit(sheet.name, sheet.headings, map(source, sheet.body), missingValue),
  );
}

function multiEmitQuery(source: J, sheets: readonly SheetParts[], missingValue: string | null): J {
  const emits = sheets.map((sheet) =>
    emit(sheet.name, sheet.headings, map(sheet.rootExpr ?? ref('`this`'), sheet.body), missingValue),
  );
  return checkpointBind(
    sheets[0]?.dataSource ?? null,
    sheets.map((s) => s.name),
    filter(map(source, list(emits)), apply(ref('filter_empty'), ref('$'))),
  );
}

function compileQueries(sheets: readonly SheetParts[], missingValue: string | null, combine: boolean): J[] {
  const groups: { source: J; sheets: SheetParts[] }[] = [];
  for (const sheet of sheets) {
    const group = groups.find((g) => pyEqual(g.source, sheet.source));
    if (group) group.sheets.push(sheet);
    else groups.push({ source: sheet.source, sheets: [sheet] });
  }
  return groups.flatMap((g) =>
    g.sheets.length > 1 && combine
      ? [multiEmitQuery(g.source, g.sheets, missingValue)]
      : g.sheets.map((s) => singleEmitQuery(s, missingValue)),
  );
}

// ---------------------------------------------------------------- built-in tables and the whole query

/** `builtin_queries.users_query`: its SheetParts has no data source, so the checkpoint gets `null`. */
function usersQuery(): J {
  return singleEmitQuery(
    {
      name: 'commcare_users',
      headings: USER_COLUMNS.map(([name]) => lit(name)),
      source: apply(ref('api_data'), lit('user'), ref('checkpoint_manager')),
      body: list(USER_COLUMNS.map(([, path]) => ref(path))),
      rootExpr: null,
      dataSource: null,
    },
    null,
  );
}

/** The writers that cannot write one table in several passes (`supports_multi_table_write = False`). */
const SINGLE_PASS_FORMATS = ['csv', 'markdown'];

function builtinParts(query: J | null, options: DetDumpOptions, warnings: string[]): J | null {
  const parts: J[] = query === null ? [] : [query];
  if (options.users || options.withOrganization) parts.push(usersQuery());
  if (options.locations || options.withOrganization)
    warnings.push(
      "the commcare_locations query is left out: DET builds it from the project's location types, " +
        'which takes a request to HQ, and --dump-query makes none',
    );
  if (parts.length === 0) return null;
  return parts.length > 1 ? list(parts) : (parts[0] as J);
}

/** DET's dump of an Excel query file. */
export function detDumpOfSheets(sheets: readonly SheetGrid[], options: DetDumpOptions): DetDump {
  const warnings: string[] = [];
  const mappingsSheet = sheets.find((s) => s.title === 'Mappings');
  const mappings = mappingsSheet ? compileMappings(mappingsSheet) : null;
  const parsed: SheetParts[] = [];
  for (const ws of sheets) {
    if (ws.title === 'Mappings') continue;
    try {
      parsed.push(parseSheet(ws, mappings, options));
    } catch (e) {
      // DET catches every exception of a sheet, its own and Python's, and goes on with the next.
      if (!(e instanceof Error)) throw e;
      warnings.push(`Ignoring sheet "${ws.title}": ${(e as Error).message}`);
    }
  }
  for (const sheet of parsed) {
    if (sheet.name === 'commcare_users' || sheet.name === 'commcare_locations')
      return {
        jvalue: null,
        warnings,
        error: `Table name "${sheet.name}" conflicts with an internal table name. Please export to a different table.`,
      };
  }
  if (options.outputFormat === 'sql') {
    const long = parsed
      .map((s) => ({
        name: s.name,
        columns: s.headings.map((h) => String((h as { Lit: J }).Lit)).filter((c) => c.length > 63),
      }))
      .filter((s) => s.columns.length > 0);
    if (long.length > 0)
      return {
        jvalue: null,
        warnings,
        error: `${long
          .map(
            (s) =>
              `Table "${pyStr(s.name)}" has field names longer than the maximum allowed for this database (63):\n${s.columns.map((c) => `    ${c}\n`).join('')}`,
          )
          .join('')}\nPlease adjust field names to be within the maximum length limit of 63`,
      };
    const missing = parsed.filter((s) => !s.headings.some((h) => (h as { Lit: J }).Lit === 'id'));
    if (missing.length > 0)
      return {
        jvalue: null,
        warnings,
        error: missing
          .map((s) => `Sheet "${pyStr(s.name)}" is missing definitions for required fields: "id"`)
          .join('\n'),
      };
  }
  const queries = compileQueries(
    parsed,
    options.missingValue,
    !SINGLE_PASS_FORMATS.includes(options.outputFormat),
  );
  if (queries.length === 0 && !options.users && !options.withOrganization)
    return {
      jvalue: null,
      warnings,
      error: 'No sheet of the query file could be read (DET stops here too).',
    };
  const query = queries.length === 0 ? null : queries.length > 1 ? list(queries) : (queries[0] as J);
  return { jvalue: builtinParts(query, options, warnings), warnings };
}

export async function detDumpOfWorkbook(bytes: Uint8Array, options: DetDumpOptions): Promise<DetDump> {
  return detDumpOfSheets(await readWorkbook(bytes), options);
}

/**
 * DET's dump of a JSON (MiniLinq) query file: `MiniLinq.from_jvalue` then `to_jvalue`, which fills in
 * `name: null` and `missing_value: null` where the file leaves them out and prints `Emit.data_types` as
 * the headings. Throws `MiniLinqSyntaxError` for a node DET cannot read either.
 */
export function detDumpOfJson(json: unknown, options: DetDumpOptions): DetDump {
  const warnings: string[] = [];
  const query = detRoundTrip(json);
  return { jvalue: builtinParts(query, options, warnings), warnings };
}

function detRoundTrip(j: unknown): J {
  // Our parser validates each node as DET's does; the tree is then printed from the original values.
  fromJValue(j);
  return roundTrip(j);
}

function roundTrip(j: unknown): J {
  if (typeof j === 'string') return j;
  if (Array.isArray(j)) return j.map(roundTrip);
  if (!isDict(j)) return j as J;
  const [slug] = Object.keys(j);
  const body = j[slug as string] as Record<string, unknown>;
  switch (slug) {
    case 'Lit':
      return { Lit: j.Lit as J };
    case 'Ref':
      return { Ref: roundTrip(j.Ref) };
    case 'List':
      return { List: (j.List as unknown[]).map(roundTrip) };
    case 'Map':
    case 'FlatMap':
      return {
        [slug]: {
          body: roundTrip(body.body),
          source: roundTrip(body.source),
          name: (body.name ?? null) as J,
        },
      };
    case 'Filter':
      return {
        Filter: {
          predicate: roundTrip(body.predicate ?? body.body),
          source: roundTrip(body.source),
          name: (body.name ?? null) as J,
        },
      };
    case 'Bind':
      return { Bind: { name: body.name as J, value: roundTrip(body.value), body: roundTrip(body.body) } };
    case 'Apply':
      return { Apply: { fn: roundTrip(body.fn), args: ((body.args ?? []) as unknown[]).map(roundTrip) } };
    case 'Emit': {
      const headings = ((body.headings ?? []) as unknown[]).map(roundTrip);
      return {
        Emit: {
          table: body.table as J,
          headings,
          source: roundTrip(body.source),
          missing_value: (body.missing_value ?? null) as J,
          data_types: headings,
        },
      };
    }
    default:
      return j as J;
  }
}

// ---------------------------------------------------------------- json.dumps(..., indent=4)

function pyKey(k: J): string {
  if (typeof k === 'string') return k;
  if (k === null) return 'null';
  if (typeof k === 'boolean') return k ? 'true' : 'false';
  if (typeof k === 'number') return pyNumber(k);
  if (k instanceof Date) return k.toISOString();
  return JSON.stringify(plainJson(k));
}

function pyNumber(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (!Number.isFinite(n)) return n > 0 ? 'Infinity' : '-Infinity';
  return String(n);
}

/** `json.dumps` string escaping with `ensure_ascii`: everything outside printable ASCII as `\uXXXX`. */
function pyString(s: string): string {
  return JSON.stringify(s).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** Python's `json.dumps(value, indent=4)`, byte for byte for the values a query holds. */
export function pyJsonDumps(value: J, indent = 4, level = 0): string {
  const pad = ' '.repeat(indent * (level + 1));
  const end = ' '.repeat(indent * level);
  if (value === null) return 'null';
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') return pyNumber(value);
  if (typeof value === 'string') return pyString(value);
  if (value instanceof Date) return pyString(value.toISOString());
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return `[\n${value.map((v) => pad + pyJsonDumps(v, indent, level + 1)).join(',\n')}\n${end}]`;
  }
  const entries: [string, J][] =
    value instanceof Map
      ? [...value].map(([k, v]) => [pyKey(k), v])
      : Object.entries(value as { [key: string]: J });
  if (entries.length === 0) return '{}';
  return `{\n${entries.map(([k, v]) => `${pad}${pyString(k)}: ${pyJsonDumps(v, indent, level + 1)}`).join(',\n')}\n${end}}`;
}

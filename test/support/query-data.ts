/**
 * Records shaped by a query file, for running a query side by side (ours and DET's) or against an
 * expected result: for each data source (resource and filters) a set of forms or cases that pass its
 * filters, with every Source Field path of its tables filled, and the values cycling through what HQ
 * really sends and what trips exporters up: a repeat of one entry given as a dict, `[]`, null,
 * missing, unicode, numbers as strings, dates in many formats, a dict where text is expected, and
 * `indexed_on` values shared by several records (ties that straddle page boundaries at a small page).
 */
import type { JsonObject, JsonValue } from '../../functions/common/json';

/** What the generator needs of a table: `TableDescription` of the query compiler has it. */
export interface TableShape {
  readonly resource: string;
  readonly rowPath: string | null;
  readonly params: Readonly<Record<string, readonly string[]>>;
  readonly columns: readonly {
    readonly sourceField: string | null;
    readonly alternateSourceFields?: readonly string[];
    readonly mapVia?: string | null;
    readonly formatVia?: string | null;
  }[];
}

/** Leaf values in the order they cycle: each path of each record gets the next one. */
export const LEAF_VALUES: readonly JsonValue[] = [
  'plain text',
  '12',
  'Zoë नमस्ते 你好',
  '',
  null,
  '2024-03-05',
  '2024-03-05T10:20:30.123456Z',
  '3.50',
  'true',
  '05/03/2024',
  { '#text': 'value', '@id': 'x' },
  '2024-03-05 10:20:30',
  'a b c',
  '-7',
  '1e3',
  'false',
  'x, "quoted", y',
];

/** Values of a column converted by `str2date`: the date formats HQ and its users produce, and gaps. */
export const DATE_VALUES: readonly JsonValue[] = [
  '2024-03-05',
  '2024-03-05T10:20:30.123456Z',
  '2024-03-05 10:20:30',
  '',
  '2024-03-05T10:20:30+03:00',
  null,
  '2024-12-31T23:59:59Z',
  '2024-03-05T10:20:30.5',
];

/** Values of a column converted by `str2num`, `str2bool` or `bool2int`: numbers and booleans as HQ sends them (strings). */
export const NUMBER_VALUES: readonly JsonValue[] = [
  '12',
  '-7',
  '3.50',
  '',
  null,
  '0',
  '1e3',
  'true',
  'false',
  'yes',
];

/** Repeat shapes in the order they cycle: two entries, one entry as a dict, empty, absent, null. */
type RepeatShape = 'two' | 'dict' | 'empty' | 'missing' | 'null' | 'one';
const REPEAT_SHAPES: readonly RepeatShape[] = ['two', 'dict', 'empty', 'two', 'missing', 'null', 'one'];

/** Splits a simple DET path (`form.a.b[*].c`, `$.id`, `@case_id`) into segments; null for anything else. */
export function pathSegments(path: string): string[] | null {
  // A descendant (`form..case`) is generated as a direct child, which it also matches.
  const text = path
    .replace(/^\$\.?/, '')
    .replaceAll('..', '.')
    .replaceAll('.[', '[')
    .trim();
  if (text === '' || /[()|&=<>?`]|\[\d*:|\bwhere\b/.test(text)) return null;
  const segments: string[] = [];
  for (const part of text.split('.')) {
    const m = /^([^[\]]+)((?:\[(?:\*|\d+)\])*)$/.exec(part);
    if (!m) return null;
    segments.push(m[1]!.replace(/^"|"$/g, ''));
    for (const idx of m[2]!.match(/\[(\*|\d+)\]/g) ?? []) segments.push(idx.slice(1, -1));
  }
  return segments;
}

function isIndex(segment: string | undefined): boolean {
  return segment === '*' || (segment !== undefined && /^\d+$/.test(segment));
}

/**
 * Sets `segments` under `target`, creating objects and repeats. A repeat (`*`) takes the record's
 * repeat shape; indexed segments create arrays long enough.
 */
function setPath(
  target: JsonObject,
  segments: readonly string[],
  leaf: () => JsonValue,
  shape: RepeatShape,
): void {
  let node: JsonObject = target;
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i]!;
    const last = i === segments.length - 1;
    const next = segments[i + 1];
    if (last) {
      if (!(segment in node)) node[segment] = leaf();
      return;
    }
    if (isIndex(next)) {
      const rest = segments.slice(i + 2);
      const existing = node[segment];
      if (existing === null || (Array.isArray(existing) && existing.length === 0)) return;
      if (existing === undefined) {
        if (shape === 'missing') return;
        if (shape === 'null') {
          node[segment] = null;
          return;
        }
        if (shape === 'empty') {
          node[segment] = [];
          return;
        }
        const count = next === '*' ? (shape === 'two' ? 2 : 1) : Number(next) + 1;
        const items: JsonObject[] = Array.from({ length: count }, () => ({}));
        node[segment] = shape === 'dict' && count === 1 ? items[0]! : items;
      }
      const holder = node[segment];
      const items = Array.isArray(holder) ? holder : [holder];
      const chosen = next === '*' ? items : [items[Number(next)]];
      for (const item of chosen) {
        if (item && typeof item === 'object' && !Array.isArray(item) && rest.length > 0) {
          setPath(item as JsonObject, rest, leaf, 'one');
        }
      }
      return;
    }
    const child = node[segment];
    if (child === null || typeof child !== 'object' || Array.isArray(child)) {
      if (child !== undefined) return;
      node[segment] = {};
    }
    node = node[segment] as JsonObject;
  }
}

/** `resource` plus its sorted filters: records are generated once per such source. */
function sourceKey(table: TableShape): string {
  const filters = Object.entries(table.params)
    .map(([k, v]) => `${k}=${[...v].sort().join('|')}`)
    .sort();
  return [table.resource, ...filters].join('&');
}

function resourceOf(table: TableShape): 'form' | 'case' | null {
  if (table.resource === 'form') return 'form';
  if (table.resource === 'case' || table.resource === 'case-v2') return 'case';
  return null;
}

/** The fields a filter sets on a record so that HQ would return it (`xmlns.exact`, `type`, `app_id`, ...). */
function filterFields(params: TableShape['params']): JsonObject {
  const fields: JsonObject = {};
  for (const [name, values] of Object.entries(params)) {
    const value = values[0];
    if (value === undefined) continue;
    const field = name === 'xmlns.exact' ? 'xmlns' : name === 'type' ? 'case_type' : name;
    if (/_start$|_end$|^include_archived$/.test(field)) continue;
    fields[field] = value;
  }
  return fields;
}

export interface GeneratedData {
  readonly forms: JsonObject[];
  readonly cases: JsonObject[];
}

/**
 * `perSource` records for each data source of the tables, `indexed_on` rising by one minute every
 * `tieRun` records (so records share values), with every path of the source's tables filled.
 */
export function recordsForTables(
  tables: readonly TableShape[],
  options: { perSource?: number; tieRun?: number; seedText?: string } = {},
): GeneratedData {
  const perSource = options.perSource ?? 14;
  const tieRun = options.tieRun ?? 3;
  const bySource = new Map<string, TableShape[]>();
  for (const table of tables) {
    if (!resourceOf(table)) continue;
    const key = sourceKey(table);
    bySource.set(key, [...(bySource.get(key) ?? []), table]);
  }
  const forms: JsonObject[] = [];
  const cases: JsonObject[] = [];
  let serial = 0;
  let leafCursor = 0;
  for (const [key, group] of bySource) {
    const resource = resourceOf(group[0]!)!;
    const fields = filterFields(group[0]!.params);
    for (let n = 0; n < perSource; n++) {
      const id = `${resource}-${String(serial).padStart(5, '0')}-${key.length % 97}`;
      const minute = Math.floor(serial / tieRun);
      const at = new Date(Date.UTC(2024, 0, 1, 8, minute)).toISOString().slice(0, 19);
      serial += 1;
      const record: JsonObject =
        resource === 'form'
          ? {
              id,
              indexed_on: `${at}.${String(serial % 1_000_000).padStart(6, '0')}Z`,
              received_on: `${at}.000000Z`,
              type: 'data',
              xmlns: 'http://openrosa.org/formdesigner/corpus',
              app_id: 'corpus-app',
              form: { '@name': 'Corpus form', meta: { userID: `user-${n % 3}`, timeEnd: `${at}.000Z` } },
              metadata: { userID: `user-${n % 3}`, username: `worker${n % 3}`, timeEnd: `${at}.000Z` },
              ...fields,
            }
          : {
              id,
              case_id: id,
              indexed_on: `${at}.${String(serial % 1_000_000).padStart(6, '0')}Z`,
              server_date_modified: `${at}.000000Z`,
              case_type: 'corpus_case',
              closed: n % 4 === 0,
              user_id: `user-${n % 3}`,
              properties: { case_name: `Case ${n}`, owner_id: `owner-${n % 2}` },
              xform_ids: n % 5 === 0 ? [] : [`form-ref-${n}`, `form-ref-${n + 1}`],
              indices: {},
              ...fields,
            };
      if (resource === 'case' && typeof record.case_type === 'string') {
        (record.properties as JsonObject).case_type = record.case_type;
      }
      const shape = REPEAT_SHAPES[n % REPEAT_SHAPES.length]!;
      const leaf = () => LEAF_VALUES[leafCursor++ % LEAF_VALUES.length]!;
      const dateLeaf = () => DATE_VALUES[leafCursor++ % DATE_VALUES.length]!;
      const numberLeaf = () => NUMBER_VALUES[leafCursor++ % NUMBER_VALUES.length]!;
      for (const table of group) {
        const rowSegments = table.rowPath ? pathSegments(table.rowPath) : [];
        if (rowSegments === null) continue;
        for (const column of table.columns) {
          // A converted column gets what its function expects, as HQ sends it (text).
          const functions = `${column.mapVia ?? ''} ${column.formatVia ?? ''}`;
          const leafFor = /str2date/.test(functions)
            ? dateLeaf
            : /str2num|str2bool|bool2int/.test(functions)
              ? numberLeaf
              : leaf;
          const paths = [column.sourceField, ...(column.alternateSourceFields ?? [])];
          for (const path of paths) {
            if (path === null || path === undefined) continue;
            const segments = pathSegments(path);
            if (segments === null || segments.length === 0) continue;
            if (path.startsWith('$') || rowSegments.length === 0) {
              setPath(record, segments, leafFor, shape);
            } else {
              setPath(record, [...rowSegments, ...segments], leafFor, shape);
            }
          }
        }
        if (rowSegments.length > 0) setPath(record, [...rowSegments, 'label'], leaf, shape);
      }
      (resource === 'form' ? forms : cases).push(record);
    }
  }
  return { forms, cases };
}

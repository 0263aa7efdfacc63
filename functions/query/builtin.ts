/**
 * DET's built-in tables (`--users`, `--locations`, `--with-organization`; `commcare_export/builtin_queries.py`
 * and `location_info_provider.py`): `commcare_users` from `/user/` and `commcare_locations` from `/location/`,
 * the latter widened with the location type's fields and one column per location-type code holding the
 * ancestor location's `location_id`.
 *
 *   const sources = await builtinSources(client, 'demo', { users: true, locations: true });
 *   // then pull each source like a compiled query's: full pulls, no checkpoint (DET's SimplePaginator)
 */
import type { JsonObject } from '../common/json';
import { isDict } from './jsonpath';
import { Apply, type CompileContext, type Compiled, compileValue, type MLNode, Ref } from './minilinq';
import { makeTablePlan } from './plan';
import type { SourcePlan, TablePlan } from './types';
import { functionKind } from './value-kinds';
import { unwrapVal } from './values';

export const USERS_TABLE_NAME = 'commcare_users';
export const LOCATIONS_TABLE_NAME = 'commcare_locations';
/** Names a query file may not use for its own tables (DET's `excel_query.blacklist`). */
export const BUILTIN_TABLE_NAMES: readonly string[] = [USERS_TABLE_NAME, LOCATIONS_TABLE_NAME];

export type BuiltinResource = 'user' | 'location' | 'location_type';

/** What `builtinSources` reads from: a `CommCareClient` fits. */
export interface BuiltinRecordSource {
  records(request: { project: string; resource: BuiltinResource }): AsyncIterable<JsonObject>;
}

export interface BuiltinOptions {
  /** Add `commcare_users` (DET `--users`; `--with-organization` implies it). */
  readonly users: boolean;
  /** Add `commcare_locations` (DET `--locations`; `--with-organization` implies it). */
  readonly locations: boolean;
  /** Data problems DET logs and skips (an unknown parent or type, a cycle). @default ignored */
  readonly onWarning?: (message: string) => void;
}

/** `commcare_users` columns: heading and source path (`builtin_queries.user_columns`); `--dump-query` prints the same. */
export const USER_COLUMNS: readonly (readonly [string, string])[] = [
  ['id', 'id'],
  ['default_phone_number', 'default_phone_number'],
  ['email', 'email'],
  ['first_name', 'first_name'],
  ['groups', 'groups'],
  ['last_name', 'last_name'],
  ['phone_numbers', 'phone_numbers'],
  ['resource_uri', 'resource_uri'],
  ['commcare_location_id', 'user_data.commcare_location_id'],
  ['commcare_location_ids', 'user_data.commcare_location_ids'],
  ['commcare_primary_case_sharing_id', 'user_data.commcare_primary_case_sharing_id'],
  ['commcare_project', 'user_data.commcare_project'],
  ['username', 'username'],
];

/** `commcare_locations` columns read from the record itself, with DET's Map Via where it has one. */
const LOCATION_COLUMNS: readonly (readonly [string, string, string | null])[] = [
  ['id', 'id', null],
  ['created_at', 'created_at', 'str2date'],
  ['domain', 'domain', null],
  ['external_id', 'external_id', null],
  ['last_modified', 'last_modified', 'str2date'],
  ['latitude', 'latitude', null],
  ['location_data', 'location_data', 'json2str'],
  ['location_id', 'location_id', null],
  ['location_type', 'location_type', null],
  ['longitude', 'longitude', null],
  ['name', 'name', null],
  ['parent', 'parent', null],
  ['resource_uri', 'resource_uri', null],
  ['site_code', 'site_code', null],
];

/** Columns taken from the location's type record (`get_location_info(location_type, field)`). */
const LOCATION_TYPE_FIELDS = ['administrative', 'code', 'name', 'parent'] as const;

/** The fixed paths above are known to compile; a report here is a bug in this file. */
const CC: CompileContext = {
  baseUrl: '',
  report: (message) => {
    throw new Error(`built-in table column does not compile: ${message}`);
  },
};

function column(source: string, mapVia: string | null = null): Compiled {
  const node: MLNode = mapVia ? Apply(Ref(mapVia), Ref(source)) : Ref(source);
  return compileValue(node, CC);
}

/** The `commcare_users` table (pure; no data needed up front). */
export function usersTablePlan(): TablePlan {
  return makeTablePlan({
    name: USERS_TABLE_NAME,
    headings: USER_COLUMNS.map(([h]) => h),
    // DET declares no types for its built-in tables (the SQL writer infers them from the values).
    dataTypes: USER_COLUMNS.map(() => null),
    // DET compiles them with `missing_value=None` whatever `--missing-value` says.
    missingValue: null,
    producer: { kind: 'fields', items: null, fields: USER_COLUMNS.map(([, s]) => column(s)) },
  });
}

/** A value usable as a Python dict key, as DET's lookups key on it (lists and dicts are unhashable). */
type Key = string | number | boolean | null;
function keyOf(v: unknown): Key | undefined {
  const t = typeof v;
  return t === 'string' || t === 'number' || t === 'boolean' || v === null ? (v as Key) : undefined;
}

/** Location types keyed by `resource_uri`, in the order HQ listed them (a later duplicate wins, first position kept). */
function typesByUri(types: Iterable<JsonObject>, warn: (m: string) => void): Map<unknown, JsonObject> {
  const out = new Map<unknown, JsonObject>();
  for (const t of types) {
    const uri = keyOf(t.resource_uri);
    if (uri === undefined || uri === null) {
      warn(`location type without a resource_uri skipped: ${JSON.stringify(t).slice(0, 200)}`);
      continue;
    }
    out.set(uri, t);
  }
  return out;
}

/**
 * The ancestor columns, deepest level first (ties keep HQ's order), as `get_locations_query` orders them;
 * hyphens in codes become underscores.
 */
function ancestorColumns(
  types: Map<unknown, JsonObject>,
  warn: (m: string) => void,
): { heading: string; code: string }[] {
  const depth = new Map<unknown, number>();
  const depthOf = (uri: unknown, seen: Set<unknown>): number => {
    const known = depth.get(uri);
    if (known !== undefined) return known;
    const parent = types.get(uri)?.parent ?? null;
    let d = 0;
    if (parent !== null) {
      if (!types.has(parent))
        warn(`location type ${String(uri)} has an unknown parent type ${String(parent)}`);
      else if (seen.has(parent)) warn(`location types form a cycle at ${String(uri)}`);
      else d = depthOf(parent, new Set(seen).add(uri)) + 1;
    }
    depth.set(uri, d);
    return d;
  };
  const entries = [...types.entries()].map(([uri, t], i) => ({ t, i, d: depthOf(uri, new Set([uri])) }));
  entries.sort((a, b) => b.d - a.d || a.i - b.i);
  const out: { heading: string; code: string }[] = [];
  for (const { t } of entries) {
    if (typeof t.code !== 'string') {
      warn(`location type ${String(t.resource_uri)} has no text code; no ancestor column for it`);
      continue;
    }
    out.push({ heading: t.code.replace(/-/g, '_'), code: t.code });
  }
  return out;
}

/**
 * For each location `resource_uri`: type code -> `location_id` of the location itself and each ancestor
 * (`LocationInfoProvider.get_location_hierarchy`). A walk stops at an unknown location or type, as DET's does,
 * and at a cycle (DET would loop forever).
 */
function hierarchy(
  locations: Iterable<JsonObject>,
  types: Map<unknown, JsonObject>,
  warn: (m: string) => void,
): Map<unknown, Map<unknown, unknown>> {
  const byUri = new Map<unknown, { id: unknown; type: unknown; parent: unknown }>();
  for (const l of locations) {
    const uri = keyOf(l.resource_uri);
    if (uri === undefined || uri === null) {
      warn(`location without a resource_uri skipped: ${String(l.location_id ?? l.id)}`);
      continue;
    }
    byUri.set(uri, { id: l.location_id ?? null, type: l.location_type ?? null, parent: l.parent ?? null });
  }
  const out = new Map<unknown, Map<unknown, unknown>>();
  for (const start of byUri.keys()) {
    const codes = new Map<unknown, unknown>();
    const visited = new Set<unknown>();
    let uri: unknown = start;
    while (uri !== null && uri !== undefined) {
      if (visited.has(uri)) {
        warn(`location parents form a cycle at ${String(uri)}`);
        break;
      }
      visited.add(uri);
      const loc = byUri.get(uri);
      if (!loc) {
        warn(`Unknown location referenced: ${String(uri)}`);
        break;
      }
      const type = types.get(keyOf(loc.type));
      if (!type) {
        warn(`Unknown location type referenced: ${String(loc.type)}`);
        break;
      }
      codes.set(type.code ?? null, loc.id);
      uri = keyOf(loc.parent);
    }
    out.set(start, codes);
  }
  return out;
}

/**
 * The `commcare_locations` table for a project's location types and locations (pure: both lists are the
 * complete `/location_type/` and `/location/` listings, fetched before the table's own pull).
 */
export function locationsTablePlan(
  locationTypes: Iterable<JsonObject>,
  locations: Iterable<JsonObject>,
  onWarning: (message: string) => void = () => {},
): TablePlan {
  const types = typesByUri(locationTypes, onWarning);
  const ancestors = hierarchy(locations, types, onWarning);
  const codes = ancestorColumns(types, onWarning);

  const typeRef = column('location_type');
  const typeInfo =
    (field: string): Compiled =>
    (env) => {
      const t = types.get(keyOf(unwrapVal(typeRef(env))));
      return t && Object.hasOwn(t, field) ? t[field] : null;
    };
  const uriRef = column('resource_uri');
  const ancestor =
    (code: string): Compiled =>
    (env) => {
      const byCode = ancestors.get(keyOf(unwrapVal(uriRef(env))));
      return byCode?.has(code) ? byCode.get(code) : null;
    };

  const headings = [
    ...LOCATION_COLUMNS.map(([h]) => h),
    ...LOCATION_TYPE_FIELDS.map((f) => `location_type_${f}`),
    ...codes.map((c) => c.heading),
  ];
  const fields: Compiled[] = [
    ...LOCATION_COLUMNS.map(([, s, via]) => column(s, via)),
    ...LOCATION_TYPE_FIELDS.map(typeInfo),
    ...codes.map((c) => ancestor(c.code)),
  ];
  return makeTablePlan({
    name: LOCATIONS_TABLE_NAME,
    headings,
    dataTypes: headings.map(() => null),
    valueKinds: headings.map((_, i) => functionKind(LOCATION_COLUMNS[i]?.[2] ?? null)),
    missingValue: null,
    producer: { kind: 'fields', items: null, fields },
  });
}

/** A failure fetching the location listings `commcare_locations` needs before its pull. */
export class BuiltinPrefetchError extends Error {
  override readonly name = 'BuiltinPrefetchError';
}

async function all(
  fetch: BuiltinRecordSource,
  project: string,
  resource: BuiltinResource,
): Promise<JsonObject[]> {
  const out: JsonObject[] = [];
  try {
    for await (const r of fetch.records({ project, resource })) if (isDict(r)) out.push(r);
  } catch (e) {
    throw new BuiltinPrefetchError(
      `fetching every ${resource} of project ${project} for ${LOCATIONS_TABLE_NAME} failed: ${(e as Error)?.message ?? String(e)}`,
      { cause: e },
    );
  }
  return out;
}

/**
 * DET's built-in tables as sources to pull like a compiled query's: `user` -> `commcare_users`,
 * `location` -> `commcare_locations`. With `locations`, every location type and location is fetched first
 * (small listings) to build the hierarchy columns. Pull the returned sources in full every run: DET keeps no
 * checkpoint for them.
 */
export async function builtinSources(
  fetch: BuiltinRecordSource,
  project: string,
  options: BuiltinOptions,
): Promise<SourcePlan[]> {
  const sources: SourcePlan[] = [];
  if (options.users) sources.push({ resource: 'user', params: {}, tables: [usersTablePlan()] });
  if (options.locations) {
    const types = await all(fetch, project, 'location_type');
    const locations = await all(fetch, project, 'location');
    sources.push({
      resource: 'location',
      params: {},
      tables: [locationsTablePlan(types, locations, options.onWarning)],
    });
  }
  return sources;
}

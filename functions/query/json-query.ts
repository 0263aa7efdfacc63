/**
 * JSON MiniLinq query files: finds the `Emit`s (single-emit `Emit(Map(FlatMap(api_data)))` and the
 * multi-emit `Bind(checkpoint_manager, Filter(Map(api_data, List([Emit...]))))` shapes, and any other
 * expression with one `api_data` call per Emit) and turns each into a table over one record.
 */
import type { QueryParams, ResourceName } from '../commcare/types';
import type { QueryFileIssue } from './errors';
import type { TableDescription } from './excel';
import { isDict, pyStr } from './jsonpath';
import {
  type CompileContext,
  callsApiData,
  compileExpr,
  findApiData,
  fromJValue,
  MiniLinqSyntaxError,
  type MLNode,
} from './minilinq';
import { DATA_TYPES, paramText, RESOURCES, type TableDraft } from './plan';
import type { DataType } from './types';

export interface JsonTable {
  readonly description: TableDescription;
  readonly resource: ResourceName;
  readonly params: QueryParams;
  readonly draft: TableDraft;
}

export interface JsonCompileResult {
  readonly tables: JsonTable[];
  readonly errors: QueryFileIssue[];
  readonly warnings: QueryFileIssue[];
}

interface Ctx {
  readonly baseUrl: string;
  readonly missingValue: string | null;
  readonly errors: QueryFileIssue[];
  readonly warnings: QueryFileIssue[];
  readonly tables: JsonTable[];
}

/** Reads `api_data(resource, checkpoint_manager[, filters][, include_referenced_items])`. */
function apiSource(
  call: Extract<MLNode, { t: 'Apply' }>,
  where: string,
  ctx: Ctx,
): { resource: ResourceName; params: QueryParams } | null {
  const [res, , filters, include] = call.args;
  if (res?.t !== 'Lit' || typeof res.v !== 'string') {
    ctx.errors.push({ message: `${where}: api_data needs a literal resource name as its first argument` });
    return null;
  }
  if (!(RESOURCES as readonly string[]).includes(res.v)) {
    ctx.errors.push({
      message: `${where}: unknown api_data resource "${res.v}"; expected one of ${RESOURCES.join(', ')}`,
    });
    return null;
  }
  const params: Record<string, string[]> = {};
  if (filters && !(filters.t === 'Lit' && (filters.v === null || filters.v === undefined))) {
    if (filters.t !== 'Lit' || !isDict(filters.v)) {
      ctx.errors.push({ message: `${where}: api_data filters must be a literal object of parameter lists` });
      return null;
    }
    for (const [k, v] of Object.entries(filters.v)) {
      const vals = (Array.isArray(v) ? v : [v]).map(paramText).filter((x): x is string => x !== null);
      if (vals.length > 0) params[k] = vals;
    }
  }
  if (include && include.t === 'Lit' && Array.isArray(include.v)) {
    for (const x of include.v) if (x !== null && x !== '') params[`${pyStr(x)}__full`] = ['true'];
  }
  return { resource: res.v as ResourceName, params };
}

function emitTable(
  emit: Extract<MLNode, { t: 'Emit' }>,
  rowsNode: MLNode,
  recordName: string | null,
  api: { resource: ResourceName; params: QueryParams },
  where: string,
  ctx: Ctx,
) {
  const report = (m: string) => ctx.errors.push({ message: `${where} (table "${emit.table}"): ${m}` });
  const cc: CompileContext = { baseUrl: ctx.baseUrl, report };
  const headings = emit.headings.map((h) => {
    if (h.t === 'Lit') return h.v === null || h.v === undefined ? '' : pyStr(h.v);
    report('headings must be literals');
    return '';
  });
  // DET's `--dump-query` writes the headings into `data_types` (a bug); such values are not types.
  const dataTypes: (DataType | null)[] = headings.map((_, i) => {
    const raw = emit.dataTypes[i];
    const v = isDict(raw) && 'Lit' in raw ? raw.Lit : raw;
    if (v === null || v === undefined || v === '') return null;
    if (typeof v === 'string' && (DATA_TYPES as readonly string[]).includes(v)) return v as DataType;
    ctx.warnings.push({
      message: `${where} (table "${emit.table}"): data type ${JSON.stringify(v)} is not one of ${DATA_TYPES.join(', ')}; ignored`,
    });
    return null;
  });
  const rows = compileExpr(rowsNode, cc);
  const draft: TableDraft = {
    name: emit.table,
    headings,
    dataTypes,
    missingValue: emit.missingValue === undefined ? ctx.missingValue : emit.missingValue,
    producer: { kind: 'rows', rows, recordName },
  };
  ctx.tables.push({
    resource: api.resource,
    params: api.params,
    draft,
    description: {
      sheet: null,
      name: emit.table,
      resource: api.resource,
      rowPath: null,
      params: api.params,
      columns: headings.map((h, i) => ({
        heading: h,
        sourceField: null,
        alternateSourceFields: [],
        mapVia: null,
        formatVia: null,
        dataType: dataTypes[i] ?? null,
      })),
    },
  });
}

function emitsIn(node: MLNode): Extract<MLNode, { t: 'Emit' }>[] | null {
  if (node.t === 'Emit') return [node];
  if (node.t === 'List') {
    const out: Extract<MLNode, { t: 'Emit' }>[] = [];
    for (const i of node.items) {
      const e = emitsIn(i);
      if (!e) return null;
      out.push(...e);
    }
    return out;
  }
  return null;
}

/** Walks the query's top level collecting tables. */
function walk(node: MLNode, where: string, ctx: Ctx): void {
  switch (node.t) {
    case 'List':
      for (let i = 0; i < node.items.length; i++) walk(node.items[i]!, `${where}.List[${i}]`, ctx);
      return;
    case 'Bind':
      // `Bind(checkpoint_manager, get_checkpoint_manager(...))` only scopes checkpoints; we checkpoint per source.
      if (
        !(
          node.value.t === 'Apply' &&
          node.value.fn.t === 'Ref' &&
          node.value.fn.ref === 'get_checkpoint_manager'
        )
      )
        ctx.warnings.push({
          message: `${where}: top-level Bind "${node.name}" is not visible inside the tables`,
        });
      walk(node.body, `${where}.Bind.body`, ctx);
      return;
    case 'Filter':
      // The multi-emit wrapper `Filter(filter_empty($), Map(...))` exists only to drop Emit's None results.
      walk(node.source, `${where}.Filter.source`, ctx);
      return;
    case 'Map':
    case 'FlatMap': {
      const emits = emitsIn(node.body);
      if (
        emits &&
        node.source.t === 'Apply' &&
        node.source.fn.t === 'Ref' &&
        node.source.fn.ref === 'api_data'
      ) {
        const api = apiSource(node.source, `${where}.${node.t}.source`, ctx);
        if (!api) return;
        for (const e of emits) {
          if (callsApiData(e.source)) {
            ctx.errors.push({
              message: `${where}: Emit "${e.table}" inside a per-record Map calls api_data again`,
            });
            continue;
          }
          emitTable(e, e.source, node.name, api, `${where}.${node.t}.body`, ctx);
        }
        return;
      }
      ctx.errors.push({ message: `${where}: expected Emit nodes over an api_data source here` });
      return;
    }
    case 'Emit': {
      const call = findApiData(node.source);
      if (!call) {
        ctx.errors.push({ message: `${where}: Emit "${node.table}" has no api_data source` });
        return;
      }
      const api = apiSource(call, `${where}.Emit.source`, ctx);
      if (!api) return;
      // The source is evaluated once per record with `api_data(...)` yielding just that record.
      emitTable(node, node.source, null, api, `${where}.Emit`, ctx);
      return;
    }
    default:
      ctx.errors.push({
        message: `${where}: a query must be an Emit, a List of queries, or a Bind/Filter/Map around Emits`,
      });
  }
}

export function compileJsonQuery(
  json: unknown,
  opts: { baseUrl: string; missingValue: string | null },
): JsonCompileResult {
  const ctx: Ctx = {
    baseUrl: opts.baseUrl,
    missingValue: opts.missingValue,
    errors: [],
    warnings: [],
    tables: [],
  };
  let root: MLNode;
  try {
    root = fromJValue(json);
  } catch (e) {
    if (e instanceof MiniLinqSyntaxError)
      return { tables: [], errors: [{ message: e.message }], warnings: [] };
    throw e;
  }
  walk(root, '$', ctx);
  if (ctx.tables.length === 0 && ctx.errors.length === 0)
    ctx.errors.push({ message: 'the query emits no table' });
  return ctx;
}

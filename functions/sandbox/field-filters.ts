/**
 * Case API v2's `fields` and `exclude` parameters, as HQ applies them
 * (`corehq/apps/hqcase/api/field_filters.py`, `docs/api/openapi/paths/case-v2.yaml`):
 *
 * - `fields=case_id,case_name` keeps only those fields of each case; `exclude=properties` drops them;
 * - values are comma-separated, a dot reaches into a nested object (`fields=properties.dob`), and
 *   `fields.properties=dob,edd` is the same as `fields=properties.dob,properties.edd`;
 * - sending both families is a 400 ("You cannot specify both 'fields' and 'exclude'");
 * - only the cases are filtered, never the envelope (`matching_records`, `next`), and the parameters
 *   travel inside the cursor like every other one, so every page of a pull is filtered the same way.
 */
import type { JsonObject } from '../common/json';
import { SandboxBadRequest } from './answers';

/** A field tree: an empty node keeps (or drops) the whole value, a non-empty one descends into it. */
interface FieldTree {
  [name: string]: FieldTree;
}

/** True for `fields`, `exclude`, `fields.<parent>` and `exclude.<parent>`. */
export function isFieldFilterParam(name: string): boolean {
  const family = name.split('.')[0];
  return family === 'fields' || family === 'exclude';
}

function treeOf(params: Readonly<Record<string, readonly string[]>>, family: string): FieldTree {
  const tree: FieldTree = {};
  for (const [name, values] of Object.entries(params)) {
    const path = name.split('.');
    if (path[0] !== family) continue;
    for (const value of values)
      for (const field of value.split(',')) {
        let node = tree;
        for (const part of [...path.slice(1), ...field.split('.')]) {
          node[part] ??= {};
          node = node[part];
        }
      }
  }
  return tree;
}

function limit(data: JsonObject, tree: FieldTree): JsonObject {
  const out: JsonObject = {};
  for (const [key, sub] of Object.entries(tree)) {
    if (!(key in data)) continue;
    const value = data[key];
    if (Object.keys(sub).length === 0) out[key] = value ?? null;
    else if (value !== null && typeof value === 'object' && !Array.isArray(value))
      out[key] = limit(value, sub);
  }
  return out;
}

function exclude(data: JsonObject, tree: FieldTree): JsonObject {
  const out: JsonObject = {};
  for (const [key, value] of Object.entries(data)) {
    const sub = tree[key];
    if (sub === undefined) out[key] = value;
    else if (Object.keys(sub).length > 0)
      out[key] =
        value !== null && typeof value === 'object' && !Array.isArray(value) ? exclude(value, sub) : value;
  }
  return out;
}

/** The function HQ applies to each case of a page: identity when neither family is sent. */
export function caseFieldFilter(
  params: Readonly<Record<string, readonly string[]>>,
): (record: JsonObject) => JsonObject {
  const keep = treeOf(params, 'fields');
  const drop = treeOf(params, 'exclude');
  const keeping = Object.keys(keep).length > 0;
  const dropping = Object.keys(drop).length > 0;
  if (keeping && dropping) throw new SandboxBadRequest("You cannot specify both 'fields' and 'exclude'");
  if (keeping) return (record) => limit(record, keep);
  if (dropping) return (record) => exclude(record, drop);
  return (record) => record;
}

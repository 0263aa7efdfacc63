/**
 * Which top-level keys of a record a table's expressions can read. The client then leaves every other
 * key out of the records it hands over (commcare/page-body.ts `ListItems.record`): a form's `metadata`
 * and `attachments` and a dozen small fields, about half of its bytes in the DET comparison's workbook,
 * are never decoded or parsed.
 *
 * Over-approximated on purpose: every field name of every path counts, at any depth and whatever the
 * path is relative to, so a name reached through a child item or bound by a Map is kept as well when
 * it happens to be a top-level key too. The answer is null, meaning "the whole record", as soon as an
 * expression could see a key it does not name: a wildcard (`*`) or recursive descent (`..`) over the
 * record itself rather than inside one of its members, the record as a value (`$` or `` `this` `` not
 * followed by a field), `` `parent` ``, a path computed at run time, a path that does not parse, or
 * `api_data()` inside a field.
 */
import { type PathNode, parsePath } from './jsonpath';
import type { MLNode } from './minilinq';

/**
 * Keys the built-in functions read by path on their own, whatever their arguments: `form_url`,
 * `case_url` and `attachment_url` look up `$.domain` and `$.id` (functions.ts `docUrl`). DET also
 * gives nested items ids made from the record's `id`.
 */
export const KEYS_READ_BY_FUNCTIONS: readonly string[] = ['domain', 'id'];

/** The top-level record keys `nodes` may read (sorted), or null when they may read any key. */
export function recordKeysOf(nodes: readonly MLNode[]): string[] | null {
  const keys = new Set<string>(KEYS_READ_BY_FUNCTIONS);
  for (const node of nodes) if (!nodeKeys(node, keys)) return null;
  return [...keys].sort();
}

function nodeKeys(node: MLNode, keys: Set<string>): boolean {
  switch (node.t) {
    case 'Lit':
      return true;
    case 'Ref':
      if (typeof node.ref !== 'string') return false;
      try {
        return pathKeys(parsePath(node.ref), keys);
      } catch {
        return false;
      }
    case 'List':
      return node.items.every((item) => nodeKeys(item, keys));
    case 'Map':
    case 'FlatMap':
      return nodeKeys(node.source, keys) && nodeKeys(node.body, keys);
    case 'Filter':
      return nodeKeys(node.source, keys) && nodeKeys(node.predicate, keys);
    case 'Bind':
      return nodeKeys(node.value, keys) && nodeKeys(node.body, keys);
    case 'Apply': {
      // The function's name is a Ref to a built-in, not a path; `api_data()` is the record itself.
      const name = node.fn.t === 'Ref' && typeof node.fn.ref === 'string' ? node.fn.ref : null;
      if (name === null || name === 'api_data') return false;
      return node.args.every((arg) => nodeKeys(arg, keys));
    }
    case 'Emit':
      return false;
  }
}

/** Where a path step stands: at the record itself, or inside a member it named. */
type Place = 'record' | 'inside';

/**
 * Adds the field names of `path` to `keys`; false when the path can see a key of the record it does not
 * name, or yields the record itself. Relative paths are taken as starting at the record (a child
 * table's are relative to its items, which only makes this more cautious).
 */
function pathKeys(path: PathNode, keys: Set<string>): boolean {
  return placeAfter(path, 'record', keys) === 'inside';
}

/** Where `path` leaves a walk that starts at `from`; null when it may see an unnamed key of the record. */
function placeAfter(path: PathNode, from: Place, keys: Set<string>): Place | null {
  switch (path.t) {
    case 'fields':
      if (from === 'record' && path.names.includes('*')) return null;
      for (const name of path.names) if (name !== '*') keys.add(name);
      return 'inside';
    case 'index':
    case 'slice':
      return from;
    case 'root':
    case 'this':
      return 'record';
    case 'parent':
      return null;
    case 'child': {
      const left = placeAfter(path.left, from, keys);
      return left === null ? null : placeAfter(path.right, left, keys);
    }
    case 'where': {
      // The condition is tested on each match of the left side; the matches are what the path yields.
      const left = placeAfter(path.left, from, keys);
      return left === null || placeAfter(path.right, left, keys) === null ? null : left;
    }
    case 'desc': {
      // Recursive descent is fine inside a named member (`form..case_name`), not over the record.
      const left = placeAfter(path.left, from, keys);
      return left === 'inside' ? placeAfter(path.right, 'inside', keys) : null;
    }
    case 'union':
    case 'intersect': {
      const left = placeAfter(path.left, from, keys);
      const right = placeAfter(path.right, from, keys);
      if (left === null || right === null) return null;
      return left === 'record' || right === 'record' ? 'record' : 'inside';
    }
  }
}

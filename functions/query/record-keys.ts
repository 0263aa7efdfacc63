/**
 * Which parts of a record a table's expressions can read, as key paths from the record's top level:
 * `["form", "meta", "username"]` reads `username` of `meta` of `form`, and nothing else of `form` or of
 * `meta` through that path. The client then leaves every other part out of the records it hands over
 * (commcare/page-body.ts `ListItems.record`): a form's `metadata`, `attachments`, the case blocks and
 * most of `meta` inside `form`, about five sixths of its bytes in the DET comparison's workbook, are
 * never decoded or parsed.
 *
 * A path's last key is read whole: a value a column shows, a list a child table iterates, anything an
 * index, a filter, a wildcard or a recursive descent applies to. Every object a path walks through keeps
 * its own `id` as well, since DET's ids of nested items (jsonpath-ng's `id_pseudopath`) read the `id` of
 * each object on the way.
 *
 * Over-approximated on purpose: every path counts as starting at the record, so a path relative to a
 * child item names keys the record keeps for nothing, while the item itself lies in a value its table's
 * source path reads whole. The answer is null, meaning "the whole record", as soon as an expression could
 * see a key it does not name: a wildcard (`*`) or recursive descent (`..`) over the record itself rather
 * than inside one of its members, the record as a value (`$` or `` `this` `` not followed by a field),
 * `` `parent` ``, a path computed at run time, a path that does not parse, or `api_data()` inside a field.
 */
import { addKeyPath, type KeyTree, keyPathsOf } from '../commcare/key-paths';
import type { RecordKeyPath } from '../commcare/types';
import { type PathNode, parsePath } from './jsonpath';
import type { MLNode } from './minilinq';

/**
 * Keys the built-in functions read by path on their own, whatever their arguments: `form_url`,
 * `case_url` and `attachment_url` look up `$.domain` and `$.id` (functions.ts `docUrl`). DET also
 * gives nested items ids made from the record's `id`.
 */
export const KEYS_READ_BY_FUNCTIONS: readonly string[] = ['domain', 'id'];

/** The key paths `nodes` may read (sorted, none a prefix of another), or null when they may read any key. */
export function recordKeysOf(nodes: readonly MLNode[]): RecordKeyPath[] | null {
  const paths: KeyTree = new Map();
  for (const key of KEYS_READ_BY_FUNCTIONS) addKeyPath(paths, [key]);
  for (const node of nodes) if (!nodeKeys(node, paths)) return null;
  return keyPathsOf(paths);
}

function nodeKeys(node: MLNode, paths: KeyTree): boolean {
  switch (node.t) {
    case 'Lit':
      return true;
    case 'Ref':
      if (typeof node.ref !== 'string') return false;
      try {
        return pathKeys(parsePath(node.ref), paths);
      } catch {
        return false;
      }
    case 'List':
      return node.items.every((item) => nodeKeys(item, paths));
    case 'Map':
    case 'FlatMap':
      return nodeKeys(node.source, paths) && nodeKeys(node.body, paths);
    case 'Filter':
      return nodeKeys(node.source, paths) && nodeKeys(node.predicate, paths);
    case 'Bind':
      return nodeKeys(node.value, paths) && nodeKeys(node.body, paths);
    case 'Apply': {
      // The function's name is a Ref to a built-in, not a path; `api_data()` is the record itself.
      const name = node.fn.t === 'Ref' && typeof node.fn.ref === 'string' ? node.fn.ref : null;
      if (name === null || name === 'api_data') return false;
      return node.args.every((arg) => nodeKeys(arg, paths));
    }
    case 'Emit':
      return false;
  }
}

/**
 * Where a walk along a path stands: at the key path it has followed from the record (the record itself
 * when empty), or `WHOLE`, inside a value already read whole, where further steps read nothing more.
 */
type Place = RecordKeyPath | typeof WHOLE;
const WHOLE = 'whole';

/**
 * Adds what `path` reads to `paths`; false when the path can see a key of the record it does not name,
 * or yields the record itself.
 */
function pathKeys(path: PathNode, paths: KeyTree): boolean {
  return endsRead(placeAfter(path, [], paths), paths);
}

/**
 * Notes that a walk ending at `end` reads its value whole: true when it did or already was (`WHOLE`),
 * false when `end` is the record itself or anything (null).
 */
function endsRead(end: Place | null, paths: KeyTree): boolean {
  return end !== null && (end === WHOLE || readWhole(end, paths));
}

/** Notes that the value at `place` is read whole (with the `id` of each object on the way); false for the record. */
function readWhole(place: RecordKeyPath, paths: KeyTree): boolean {
  if (place.length === 0) return false;
  addKeyPath(paths, place);
  for (let k = 1; k < place.length; k += 1) addKeyPath(paths, [...place.slice(0, k), 'id']);
  return true;
}

/** Where `path` leaves a walk that starts at `from`; null when it may see an unnamed key of the record. */
function placeAfter(path: PathNode, from: Place, paths: KeyTree): Place | null {
  switch (path.t) {
    case 'fields': {
      if (from === WHOLE) return WHOLE;
      if (path.names.includes('*')) return readWhole(from, paths) ? WHOLE : null;
      if (path.names.length === 1) return [...from, path.names[0]!];
      for (const name of path.names) readWhole([...from, name], paths);
      return WHOLE;
    }
    case 'index':
    case 'slice':
      // jsonpath-ng gives a dict itself for `[*]` or `[0]`; a list is read whole, items included.
      if (from === WHOLE || from.length === 0) return from;
      readWhole(from, paths);
      return WHOLE;
    case 'root':
    case 'this':
      return [];
    case 'parent':
      return null;
    case 'child': {
      const left = placeAfter(path.left, from, paths);
      return left === null ? null : placeAfter(path.right, left, paths);
    }
    case 'where': {
      // The condition is tested on each match of the left side; the matches are what the path yields.
      const left = placeAfter(path.left, from, paths);
      if (left === null) return null;
      const matches = endsRead(left, paths) ? WHOLE : left;
      // A condition that ends at the match or the record (`@`, `$`) finds it whatever was left out.
      const condition = placeAfter(path.right, matches, paths);
      if (condition === null) return null;
      endsRead(condition, paths);
      return matches;
    }
    case 'desc': {
      // Recursive descent is fine inside a named member (`form..case_name`), not over the record.
      const left = placeAfter(path.left, from, paths);
      if (!endsRead(left, paths)) return null;
      return endsRead(placeAfter(path.right, WHOLE, paths), paths) ? WHOLE : null;
    }
    case 'union':
    case 'intersect': {
      const left = placeAfter(path.left, from, paths);
      const right = placeAfter(path.right, from, paths);
      if (left === null || right === null) return null;
      const leftRead = endsRead(left, paths);
      const rightRead = endsRead(right, paths);
      // Either side may yield the record itself (`$`), which the whole path then yields as well.
      return leftRead ? (rightRead ? WHOLE : right) : left;
    }
  }
}

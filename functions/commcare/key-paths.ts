/**
 * Sets of key paths (`RecordKeyPath`), held as a tree of keys: a key maps to the keys read inside its
 * value, or to null when its value is read whole. A path that extends one read whole adds nothing.
 */
import type { RecordKeyPath } from './types';

export type KeyTree = Map<string, KeyTree | null>;

/** Notes in `tree` that `path` is read whole. */
export function addKeyPath(tree: KeyTree, path: RecordKeyPath): void {
  let node = tree;
  for (let k = 0; k < path.length; k += 1) {
    const key = path[k]!;
    const next = node.get(key);
    if (next === null) return;
    if (k === path.length - 1) {
      node.set(key, null);
      return;
    }
    if (next === undefined) {
      const created: KeyTree = new Map();
      node.set(key, created);
      node = created;
    } else node = next;
  }
}

/** The tree of `paths`. */
export function keyTreeOf(paths: readonly RecordKeyPath[]): KeyTree {
  const tree: KeyTree = new Map();
  for (const path of paths) addKeyPath(tree, path);
  return tree;
}

/** Every path `tree` reads whole, sorted key by key; none is a prefix of another. */
export function keyPathsOf(tree: KeyTree): RecordKeyPath[] {
  const out: RecordKeyPath[] = [];
  const walk = (node: KeyTree, prefix: readonly string[]) => {
    for (const key of [...node.keys()].sort()) {
      const next = node.get(key)!;
      if (next === null) out.push([...prefix, key]);
      else walk(next, [...prefix, key]);
    }
  };
  walk(tree, []);
  return out;
}

/** Everything several sets of paths read, as one set in the form `keyPathsOf` gives. */
export function unionOfKeyPaths(sets: readonly (readonly RecordKeyPath[])[]): RecordKeyPath[] {
  return keyPathsOf(keyTreeOf(sets.flat()));
}

/**
 * Runtime values of the MiniLinq evaluator and DET's unwrapping rules (`commcare_export/misc.py::unwrap_val`,
 * `Emit.coerce_cell`, `EmitterEnv._unwrap_row_vals`).
 */

import { Datum, datumValue, isDict } from './jsonpath';
import type { Cell } from './types';

/** The lazy iterator of matches a path lookup returns in DET (`RepeatableIterator` of `DatumInContext`). */
export class Matches {
  constructor(readonly items: readonly Datum[]) {}
}

/** A function value (a builtin looked up by name). */
export type Fn = (...args: unknown[]) => unknown;

/** `unwrap_val`: a one-item sequence becomes its item, matches become their values. */
export function unwrapVal(val: unknown): unknown {
  let v: unknown = val;
  if (v instanceof Matches) v = v.items;
  if (Array.isArray(v)) {
    v = v.length === 1 ? v[0] : v.map(unwrapVal);
  }
  if (v instanceof Datum) v = datumValue(v);
  return v;
}

/** DET's "no value": `None` or an empty list. */
export function notVal(v: unknown): boolean {
  return v === null || v === undefined || (Array.isArray(v) && v.length === 0);
}

/** `Emit.coerce_cell` then `EmitterEnv._unwrap_row_vals`. */
export function coerceCell(raw: unknown, missing: string | null): Cell {
  const t = typeof raw;
  if (t === 'string' || t === 'number' || t === 'boolean' || raw === null) return raw as Cell;
  if (raw instanceof Matches && raw.items.length === 1) {
    // An XML element with attributes: its '#text' is the cell, no need to render DET's injected id.
    const v = raw.items[0]!.value;
    if (
      v !== null &&
      typeof v === 'object' &&
      !Array.isArray(v) &&
      Object.hasOwn(v, '#text') &&
      raw.items[0]!.autoIdOf === null
    )
      return ((v as Record<string, unknown>)['#text'] ?? null) as Cell;
  }
  return unwrapRowVal(coerceInner(raw, missing));
}

function coerceInner(raw: unknown, missing: string | null): unknown {
  const v = unwrapVal(raw);
  if (Array.isArray(v)) {
    if (v.length === 0) return missing; // jsonpath gives an empty list when the path is absent
    const parts: string[] = [];
    for (const item of v) {
      const c = coerceInner(item, missing);
      // Python's `','.join` raises on a non-string; DET logs it and writes ''.
      if (typeof c !== 'string') return '';
      parts.push(c);
    }
    return parts.join(',');
  }
  return v === undefined ? missing : v;
}

function unwrapRowVal(v: unknown): Cell {
  if (isDict(v)) {
    // HQ's XML-to-JSON: an element with attributes keeps its text under '#text'.
    if (Object.hasOwn(v, '#text')) return (v['#text'] ?? null) as Cell;
    if (Object.keys(v).every((k) => k === 'id' || k.startsWith('@'))) return '';
  }
  return v as Cell;
}

/**
 * What kind of value a column holds, as far as a typed output is concerned. One classification for
 * both ways a column's type is found: the PostgreSQL output looks at the first value it receives
 * (`kindOfCell`, as DET's `best_type_for` does), the Parquet output and the Glue catalog look at what
 * the query file says a column's expression returns (`expressionKind`), because the catalog is created
 * at deploy, before any value exists. Each output maps a kind to its own types.
 */
import type { MLNode } from './minilinq';
import type { Cell } from './types';

/**
 * `integer`: a whole number; `number`: any number (whole or not); `datetime`: a date-time (`Date`);
 * `boolean`; `text`: anything else (strings, dicts, lists).
 */
export type ValueKind = 'boolean' | 'datetime' | 'integer' | 'number' | 'text';

/** The kind of one value. */
export function kindOfCell(cell: Exclude<Cell, null>): ValueKind {
  if (typeof cell === 'boolean') return 'boolean';
  if (cell instanceof Date) return 'datetime';
  if (typeof cell === 'number') return Number.isInteger(cell) ? 'integer' : 'number';
  return 'text';
}

/**
 * Map Via / Format Via functions whose every result (null aside) is of one kind (`functions.ts`):
 * `str2num` gives whole numbers or fractions, so its kind is `number`.
 */
const FUNCTION_KINDS: Readonly<Record<string, ValueKind>> = {
  str2bool: 'boolean',
  bool: 'boolean',
  str2date: 'datetime',
  str2num: 'number',
  bool2int: 'integer',
  'count-selected': 'integer',
  len: 'integer',
};

/** The kind every result of a Map Via function has, or null when its results vary (or it is unknown). */
export function functionKind(name: string | null): ValueKind | null {
  return name !== null && Object.hasOwn(FUNCTION_KINDS, name) ? (FUNCTION_KINDS[name] ?? null) : null;
}

/**
 * The kind of every value an expression gives, when the query file determines it: the outermost
 * function is one of `FUNCTION_KINDS`. A plain field (`form.age`) is null: HQ sends form answers and
 * case properties as strings, and nothing in the query file says more.
 */
export function expressionKind(node: MLNode): ValueKind | null {
  if (node.t !== 'Apply' || node.fn.t !== 'Ref' || typeof node.fn.ref !== 'string') return null;
  return functionKind(node.fn.ref);
}

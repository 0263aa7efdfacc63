/** Builds the runtime plan objects (`TablePlan`, `SourcePlan`) from compiled closures. */
import type { QueryParams, RecordKeyPath, ResourceName } from '../commcare/types';
import type { JsonObject } from '../common/json';
import { QueryRuntimeError } from './errors';
import { pyStr } from './jsonpath';
import { type Compiled, iterate, makeEnv } from './minilinq';
import type { Cell, DataType, SourcePlan, TablePlan } from './types';
import type { ValueKind } from './value-kinds';
import { coerceCell } from './values';

export const DATA_TYPES: readonly DataType[] = ['text', 'boolean', 'date', 'datetime', 'integer', 'json'];

/** Resources DET's `api_data` accepts, plus the extra ones our HQ client pages. */
export const RESOURCES: readonly ResourceName[] = [
  'form',
  'case',
  'user',
  'location',
  'application',
  'web-user',
  'messaging-event',
  'ucr',
  'case-v2',
  'group',
  'location-v2',
  'location_type',
];

/** How a table turns one record into rows. */
export type RowProducer =
  | {
      /** Excel-shaped: iterate `items` (or the record itself), evaluate `fields` in each item's env. */
      readonly kind: 'fields';
      readonly items: Compiled | null;
      readonly fields: readonly Compiled[];
    }
  | {
      /** General MiniLinq: `rows` yields the rows (lists of cell values) for one record. */
      readonly kind: 'rows';
      readonly rows: Compiled;
      /** Binds the Map's `name` for multi-emit bodies, or replaces the env with the record when null. */
      readonly recordName: string | null;
    };

export interface TableDraft {
  readonly name: string;
  readonly headings: readonly string[];
  readonly dataTypes: readonly (DataType | null)[];
  /** What the query file says each column's values are (`expressionKind`). @default - nothing: null everywhere */
  readonly valueKinds?: readonly (ValueKind | null)[];
  readonly missingValue: string | null;
  readonly producer: RowProducer;
  /** See `TablePlan.recordKeys`. @default - null: whole records */
  readonly recordKeys?: readonly RecordKeyPath[] | null;
}

function docId(record: JsonObject): string {
  const id = record.id;
  return id === undefined ? 'unknown' : pyStr(id);
}

export function makeTablePlan(d: TableDraft): TablePlan {
  const { producer, missingValue } = d;
  let rowsFor: (record: JsonObject) => Cell[][];
  if (producer.kind === 'fields') {
    const { items, fields } = producer;
    const n = fields.length;
    rowsFor = (record) => {
      const list: unknown[] = items ? iterate(items(makeEnv(record, record))) : [record];
      const out: Cell[][] = new Array(list.length);
      for (let r = 0; r < list.length; r++) {
        const env = makeEnv(list[r], record);
        const row: Cell[] = new Array(n);
        for (let c = 0; c < n; c++) row[c] = coerceCell(fields[c]!(env), missingValue);
        out[r] = row;
      }
      return out;
    };
  } else {
    const { rows, recordName } = producer;
    rowsFor = (record) => {
      const env = recordName ? makeEnv({ [recordName]: record }, record) : makeEnv(record, record);
      return iterate(rows(env)).map((row) => iterate(row).map((cell) => coerceCell(cell, missingValue)));
    };
  }
  const name = d.name;
  return {
    name,
    headings: d.headings,
    dataTypes: d.dataTypes,
    ...(d.valueKinds?.some((k) => k !== null) ? { valueKinds: d.valueKinds } : {}),
    ...(missingValue !== null ? { missingValue } : {}),
    recordKeys: d.recordKeys ?? null,
    rowsFor(record) {
      try {
        return rowsFor(record);
      } catch (e) {
        if (e instanceof QueryRuntimeError)
          throw new QueryRuntimeError(
            `${e.message}: error processing document '${docId(record)}' for table "${name}"`,
            {
              cause: e,
            },
          );
        throw e;
      }
    },
  };
}

/** A table together with what it reads. */
export interface SourcedTable {
  readonly resource: ResourceName;
  readonly params: QueryParams;
  readonly table: TablePlan;
}

export function sourceKey(resource: string, params: QueryParams): string {
  return JSON.stringify([
    resource,
    Object.keys(params)
      .sort()
      .map((k) => [k, params[k]]),
  ]);
}

/** One `SourcePlan` per distinct resource + params, tables in file order (one API pass each). */
export function groupSources(tables: readonly SourcedTable[]): SourcePlan[] {
  const byKey = new Map<string, { resource: ResourceName; params: QueryParams; tables: TablePlan[] }>();
  for (const t of tables) {
    const key = sourceKey(t.resource, t.params);
    let g = byKey.get(key);
    if (!g) {
      g = { resource: t.resource, params: t.params, tables: [] };
      byKey.set(key, g);
    }
    g.tables.push(t.table);
  }
  return [...byKey.values()];
}

/** Renders a filter value the way `requests` sends a Python value (None dropped). */
export function paramText(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  return pyStr(v);
}

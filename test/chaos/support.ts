/**
 * Shared by the crash tests (`test/chaos/*.test.ts`) and `scripts/chaos.ts`: the ground truth of an
 * export computed from the sandbox's own time line, readers for what the targets hold (PostgreSQL
 * tables, reassembled file outputs), and a runner for `node bin/ccexport.js` as a child process that
 * can be SIGKILLed after a chosen number of pages.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ObjectCheckpointStore } from '../../functions/checkpoints/object-store';
import type { PullPosition } from '../../functions/commcare/types';
import type { JsonObject } from '../../functions/common/json';
import type { Cell, CompiledQuery, SourcePlan } from '../../functions/query/types';
import type { SandboxDataset } from '../../functions/sandbox';
import { cellToText } from '../../functions/sinks/cells';
import { readManifests } from '../../functions/sinks/file-sink';
import { pgName } from '../../functions/sinks/postgres/naming';
import type { ObjectStore } from '../../functions/sinks/store/types';
import type { SourceCheckpoint } from '../../functions/sinks/types';
import { shellEnv } from '../support/cli-process';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(REPO_ROOT, 'bin', 'ccexport.js');
export const HOUSEHOLD_QUERY = join(REPO_ROOT, 'examples', 'household-registration.xlsx');

/** Sandbox credentials for these tests: a made-up key, never a real one. */
export const CHAOS_USER = 'chaos@example.org';
export const CHAOS_KEY = 'chaos-key-5d1f0c9a2e7b4411';

/** How rows of one id combine across versions: file reassembly keeps the last row, SQL merges non-null cells. */
export type MergeRule = 'replace' | 'coalesce';

export interface TableTruth {
  readonly name: string;
  readonly headings: readonly string[];
  /** id -> cells in heading order. */
  readonly rows: Map<string, Cell[]>;
}

/** `indexed_on` as a fixed-width naive string (microseconds), so strings compare as times. */
export function naiveMicros(value: string): string {
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?Z?$/.exec(value);
  if (!m) throw new Error(`unexpected indexed_on "${value}"`);
  return `${m[1]}.${(m[2] ?? '').padEnd(6, '0')}`;
}

/** Does a record pass the source's server-side filters? Only the filters our queries use are known. */
function passesFilters(record: JsonObject, source: SourcePlan): boolean {
  for (const [name, values] of Object.entries(source.params)) {
    if (name === 'xmlns.exact' || name === 'xmlns') {
      const form = record.form as JsonObject | undefined;
      const xmlns = String(form?.['@xmlns'] ?? record.xmlns ?? '');
      if (!values.includes(xmlns)) return false;
    } else {
      throw new Error(`ground truth does not know the filter "${name}"`);
    }
  }
  return true;
}

function idIndex(headings: readonly string[], table: string): number {
  const i = headings.indexOf('id');
  if (i < 0) throw new Error(`table ${table} has no id column`);
  return i;
}

/**
 * What an exact export of `query` from the sandbox holds: every served version of every form, in
 * `indexed_on` order (archived ones, served with `include_archived`, remove the form's rows), mapped
 * through the query; rows of one id combined by `rule`. `upTo` limits it to the versions a checkpoint
 * covers (before the position, plus the boundary ids at it).
 */
export function groundTruth(
  dataset: SandboxDataset,
  project: string,
  query: CompiledQuery,
  rule: MergeRule,
  upTo?: PullPosition | null,
): Map<string, TableTruth> {
  const out = new Map<string, TableTruth>();
  for (const source of query.sources) {
    if (source.resource !== 'form')
      throw new Error(`ground truth handles form sources only (${source.resource})`);
    for (const t of source.tables) out.set(t.name, { name: t.name, headings: t.headings, rows: new Map() });
  }
  const limit = upTo?.indexedOn ? naiveMicros(upTo.indexedOn) : null;
  const boundary = new Set(upTo?.boundaryIds ?? []);
  if (upTo === null) return out;
  for (const record of dataset.timeline(project, 'form')) {
    if (limit !== null) {
      const at = naiveMicros(String(record.indexed_on));
      if (at > limit) break;
      if (at === limit && !boundary.has(String(record.id))) continue;
    }
    for (const source of query.sources) {
      if (!passesFilters(record, source)) continue;
      if (record.archived === true) {
        // `--deletions remove` (the default): an archived form's rows and child rows go.
        const id = String(record.id);
        for (const table of source.tables) {
          const truth = out.get(table.name)!;
          const idAt = idIndex(table.headings, table.name);
          for (const row of table.rowsFor(record)) truth.rows.delete(String(row[idAt]));
          for (const rowId of [...truth.rows.keys()])
            if (rowId === id || rowId.startsWith(`${id}.`)) truth.rows.delete(rowId);
        }
        continue;
      }
      for (const table of source.tables) {
        const truth = out.get(table.name)!;
        const idAt = idIndex(table.headings, table.name);
        for (const row of table.rowsFor(record)) {
          const id = String(row[idAt]);
          const before = truth.rows.get(id);
          if (rule === 'replace' || !before) truth.rows.set(id, [...row]);
          else
            truth.rows.set(
              id,
              row.map((cell, i) => (cell === null ? (before[i] ?? null) : cell)),
            );
        }
      }
    }
  }
  return out;
}

/** A comparable text for a cell from either side: dates and timestamps as naive ISO without trailing zeros. */
export function normalizeValue(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (value instanceof Date) return trimIso(value.toISOString());
  if (typeof value === 'string') {
    if (/^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?Z?$/.test(value)) return trimIso(value);
    return value;
  }
  if (typeof value === 'object') return JSON.stringify(sortKeys(value));
  return String(value);
}

function trimIso(value: string): string {
  return value
    .replace(' ', 'T')
    .replace(/Z$/, '')
    .replace(/(\.\d*?)0+$/, '$1')
    .replace(/\.$/, '');
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, sortKeys((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

/** Differences between a truth and what a target holds, as readable lines (empty when equal). */
export function diffTables(
  truth: Map<string, TableTruth>,
  actual: Map<string, Map<string, (string | null)[]>>,
  limit = 10,
): string[] {
  const problems: string[] = [];
  for (const [name, t] of truth) {
    const got = actual.get(name) ?? new Map();
    for (const [id, cells] of t.rows) {
      const row = got.get(id);
      if (!row) {
        problems.push(`${name}: row ${id} missing`);
        continue;
      }
      const want = cells.map(normalizeValue);
      for (let i = 0; i < want.length; i++) {
        if (want[i] !== row[i]) {
          problems.push(`${name}: row ${id} column ${t.headings[i]}: want ${want[i]}, got ${row[i]}`);
        }
      }
    }
    for (const id of got.keys()) if (!t.rows.has(id)) problems.push(`${name}: unexpected row ${id}`);
    if (problems.length >= limit) break;
  }
  return problems.slice(0, limit);
}

// ---------------------------------------------------------------- PostgreSQL

/** Rows of each table by id, cells in the truth's heading order (a column not created yet reads null). */
export async function readPostgresTables(
  url: string,
  truth: Map<string, TableTruth>,
  schema = 'public',
): Promise<Map<string, Map<string, (string | null)[]>>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const out = new Map<string, Map<string, (string | null)[]>>();
    for (const t of truth.values()) {
      const table = pgName(t.name);
      const rows = new Map<string, (string | null)[]>();
      out.set(t.name, rows);
      const exists = await client.query<{ n: string | null }>('SELECT to_regclass($1) AS n', [
        `"${schema}"."${table.replaceAll('"', '""')}"`,
      ]);
      if (!exists.rows[0]?.n) continue;
      // to_jsonb keeps numbers, booleans and timestamps (as naive ISO) apart from text.
      const result = await client.query<{ r: Record<string, unknown> }>(
        `SELECT to_jsonb(t) AS r FROM "${schema}"."${table.replaceAll('"', '""')}" t`,
      );
      for (const { r } of result.rows) {
        rows.set(
          String(r.id),
          t.headings.map((h) => normalizeValue(r[pgName(h)])),
        );
      }
    }
    return out;
  } finally {
    await client.end();
  }
}

export async function readPostgresCheckpoint(
  url: string,
  checkpointKey: string,
  project: string,
): Promise<PullPosition | null> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const exists = await client.query<{ n: string | null }>(
      "SELECT to_regclass('public.commcare_export_checkpoints') AS n",
    );
    if (!exists.rows[0]?.n) return null;
    const { rows } = await client.query<{ position: PullPosition }>(
      'SELECT position FROM commcare_export_checkpoints WHERE checkpoint_key = $1 AND project = $2',
      [checkpointKey, project],
    );
    if (rows.length > 1) throw new Error(`expected one checkpoint row, found ${rows.length}`);
    return rows[0]?.position ?? null;
  } finally {
    await client.end();
  }
}

export async function createDatabase(adminUrl: string, name: string): Promise<string> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE "${name}"`);
  } finally {
    await client.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

export async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  } finally {
    await client.end();
  }
}

// ---------------------------------------------------------------- file outputs

/** RFC 4180 records (quoted fields may hold CR, LF, commas and doubled quotes). */
export function parseCsv(text: string): string[][] {
  const records: string[][] = [];
  let field = '';
  let record: string[] = [];
  let i = 0;
  let quoted = false;
  while (i < text.length) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
      } else field += c;
      i++;
      continue;
    }
    if (c === '"') quoted = true;
    else if (c === ',') {
      record.push(field);
      field = '';
    } else if (c === '\r' && text[i + 1] === '\n') {
      record.push(field);
      records.push(record);
      record = [];
      field = '';
      i++;
    } else field += c;
    i++;
  }
  if (field !== '' || record.length > 0) {
    record.push(field);
    records.push(record);
  }
  return records;
}

/**
 * The latest state of a csv output, reassembled as its README says: manifests oldest first, each
 * manifest's objects of a table in part order, the last row per id wins. Also counts rows per table
 * over all listed objects and checks every object's header.
 */
export async function reassembleCsv(
  store: ObjectStore,
  truth: Map<string, TableTruth>,
): Promise<Map<string, Map<string, (string | null)[]>>> {
  const out = new Map<string, Map<string, (string | null)[]>>();
  for (const name of truth.keys()) out.set(name, new Map());
  for (const manifest of await readManifests(store)) {
    const objects = [...manifest.objects].sort((a, b) => a.table.localeCompare(b.table) || a.part - b.part);
    for (const object of objects) {
      const t = truth.get(object.table);
      if (!t) throw new Error(`manifest ${manifest.runId} lists table ${object.table}, not in the query`);
      const found = await store.get(object.key);
      if (!found) throw new Error(`manifest ${manifest.runId} lists ${object.key}, which is missing`);
      const [header, ...rows] = parseCsv(found.body);
      if (JSON.stringify(header) !== JSON.stringify(t.headings)) {
        throw new Error(
          `${object.key}: header ${JSON.stringify(header)} is not ${JSON.stringify(t.headings)}`,
        );
      }
      if (rows.length !== object.rows) {
        throw new Error(`${object.key}: ${rows.length} rows, the manifest says ${object.rows}`);
      }
      const idAt = idIndex(t.headings, t.name);
      const table = out.get(object.table)!;
      for (const row of rows)
        table.set(
          row[idAt]!,
          row.map((c) => (c === '' ? null : c)),
        );
    }
    // The run's deletions after its rows (the sinks README's reassembly): each id, and its child rows.
    for (const object of manifest.deletions ?? []) {
      const table = out.get(object.table)!;
      const found = await store.get(object.key);
      if (!found) throw new Error(`manifest ${manifest.runId} lists ${object.key}, which is missing`);
      const [, ...lines] = parseCsv(found.body);
      for (const [id] of lines)
        for (const rowId of [...table.keys()])
          if (rowId === id || rowId.startsWith(`${id}.`)) table.delete(rowId);
    }
  }
  return out;
}

/** The csv rendering of a truth, for comparison with a reassembled csv output. */
export function csvTruth(truth: Map<string, TableTruth>): Map<string, TableTruth> {
  const out = new Map<string, TableTruth>();
  for (const [name, t] of truth) {
    const rows = new Map<string, Cell[]>();
    for (const [id, cells] of t.rows)
      rows.set(
        id,
        cells.map((c) => (c === null ? null : cellToText(c) || null)),
      );
    out.set(name, { ...t, rows });
  }
  return out;
}

/** Raw csv cells compare as text: no date or JSON normalisation (the text must be exactly DET's). */
export function diffCsv(
  truth: Map<string, TableTruth>,
  actual: Map<string, Map<string, (string | null)[]>>,
  limit = 10,
): string[] {
  const problems: string[] = [];
  for (const [name, t] of truth) {
    const got = actual.get(name) ?? new Map();
    for (const [id, cells] of t.rows) {
      const row = got.get(id);
      if (!row) problems.push(`${name}: row ${id} missing`);
      else if (JSON.stringify(row) !== JSON.stringify(cells)) {
        problems.push(`${name}: row ${id}: want ${JSON.stringify(cells)}, got ${JSON.stringify(row)}`);
      }
    }
    for (const id of got.keys()) if (!t.rows.has(id)) problems.push(`${name}: unexpected row ${id}`);
  }
  return problems.slice(0, limit);
}

export async function readFileCheckpoint(
  store: ObjectStore,
  checkpointKey: string,
  project: string,
  dataSource: string,
): Promise<SourceCheckpoint | null> {
  return await new ObjectCheckpointStore(store).read(checkpointKey, project, dataSource);
}

// ---------------------------------------------------------------- the CLI as a child process

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Pages the run reported written before it ended or was killed. */
  readonly pages: number;
  readonly killed: boolean;
}

export interface CliRun {
  readonly args: readonly string[];
  readonly env: Record<string, string>;
  /** SIGKILL the process once this many `page` progress events were seen (0: at its first output). */
  readonly killAfterPages?: number;
  /** Hard limit so a hung child never hangs the caller. @default 120000 */
  readonly timeoutMs?: number;
}

export async function runCli(run: CliRun): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI, ...run.args], {
    cwd: REPO_ROOT,
    env: { ...shellEnv(), ...run.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let pages = 0;
  let killed = false;
  const kill = () => {
    if (!killed && child.exitCode === null) {
      killed = true;
      child.kill('SIGKILL');
    }
  };
  child.stdout.on('data', (c: Buffer) => {
    stdout += c.toString('utf8');
  });
  child.stderr.on('data', (c: Buffer) => {
    const text = c.toString('utf8');
    stderr += text;
    pages += text.split('"event":"page"').length - 1;
    if (run.killAfterPages !== undefined && pages >= run.killAfterPages) kill();
  });
  const timer = setTimeout(kill, run.timeoutMs ?? 120_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.on('close', (c, s) => resolve([c, s])),
  );
  clearTimeout(timer);
  return { code, signal, stdout, stderr, pages, killed };
}

/** A small deterministic PRNG (mulberry32) so a seed replays a chaos run. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

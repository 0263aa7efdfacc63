/**
 * The current state of each table of a file output: one row per id, the newest run's version, without
 * deleted rows. `ccexport latest` writes it for any folder or S3 output; file sinks can write it after
 * each run as `<prefix>/latest/<table>.<ext>` (the snapshot option). The rule is the same as the
 * `<table>_latest` view's SQL (`formats/parquet/latest-sql.ts`), so Athena and a spreadsheet agree:
 *
 * - runs are taken in manifest order (`startedAt`, then run id), parts in order, rows in order; the
 *   last version of an id wins;
 * - a row whose `_deleted` column is true (deletions marked) hides the id;
 * - a deletion record (`<table>/deletions/<run-id>.csv`: id, deleted_at, reason) hides a version of
 *   that id, or of a child row whose id starts with `<id>.`, written by a run that started at or
 *   before `deleted_at`; a version written later (the record came back: a form unarchived) is live.
 *   Only deletions objects a manifest lists count (`listedDeletions`): the manifest is their commit.
 *
 * Memory: two passes over the objects. The first keeps one number per id (which version is the
 * latest), the second writes the rows whose version that is; no row is held, only the ids.
 */
import type { Cell, DataType, TableSpec } from '../query/types';
import { SinkConfigError } from './errors';
import {
  listedDeletions,
  type ManifestObject,
  type RunManifest,
  readManifests,
  tableFolder,
} from './file-sink';
import type { FileFormat } from './formats/types';
import { READABLE_FORMATS, readObjectRows } from './read-back';
import type { ObjectStore } from './store/types';

/** Folder of the consolidated files under the output. */
export const LATEST_FOLDER = 'latest';

export interface LatestOptions {
  /** The export's output (folder or S3 prefix) with its manifests. */
  readonly source: ObjectStore;
  /** Where `latest/<table>.<ext>` is written. @default the source */
  readonly target?: ObjectStore;
  /** Format of the consolidated files. @default the format the runs wrote */
  readonly format?: FileFormat;
  /** Loads a format by name (the sinks' lazy loader); needed when `format` is not given. */
  readonly loadFormat?: (name: FileFormat['name']) => Promise<FileFormat>;
  /** Only these tables. @default every table of every manifest */
  readonly tables?: readonly string[];
}

export interface LatestTable {
  readonly table: string;
  /** Key of the consolidated object under the target. */
  readonly key: string;
  readonly uri: string;
  /** Rows written: ids whose latest version is live. */
  readonly rows: number;
  /** Row versions read over all runs. */
  readonly versions: number;
  /** Ids hidden by a deletion record or a `_deleted` mark. */
  readonly deleted: number;
}

interface Version {
  readonly manifest: RunManifest;
  readonly object: ManifestObject;
}

interface Deletion {
  readonly id: string;
  readonly deletedAt: number;
}

/** A deletion time as epoch ms: ISO 8601 with a zone, or `YYYY-MM-DD HH:MM:SS[.fff]` read as UTC. */
export function deletionTime(text: string): number {
  const trimmed = text.trim();
  const zoned = /(Z|[+-]\d{2}:?\d{2})$/i.test(trimmed) ? trimmed : `${trimmed.replace(' ', 'T')}Z`;
  return Date.parse(zoned);
}

/**
 * The latest deletion time that applies to a row id: a record's deletion covers its own row and its
 * child rows, whose ids are `<record id>.<n>...` (the deletions output's rule).
 */
function deletedAtFor(id: string, deletions: ReadonlyMap<string, number>): number | undefined {
  let at = deletions.get(id);
  for (let dot = id.indexOf('.'); dot > 0; dot = id.indexOf('.', dot + 1)) {
    const parent = deletions.get(id.slice(0, dot));
    if (parent !== undefined && (at === undefined || parent > at)) at = parent;
  }
  return at;
}

function isMarkedDeleted(cell: Cell | undefined): boolean {
  return cell === true || cell === 'True' || cell === 'true' || cell === 1 || cell === '1';
}

/** The deletion records of the table that the manifests list (an unlisted deletions object is not committed). */
async function readDeletions(
  store: ObjectStore,
  manifests: readonly RunManifest[],
  table: string,
): Promise<Deletion[]> {
  const out: Deletion[] = [];
  for (const { key } of listedDeletions(manifests, table)) {
    const { headings, rows } = await readObjectRows(store, key, 'csv');
    const idAt = headings.indexOf('id');
    const timeAt = headings.indexOf('deleted_at');
    for await (const row of rows) {
      const id = row[idAt];
      const at = deletionTime(String(row[timeAt] ?? ''));
      if (typeof id === 'string' && !Number.isNaN(at)) out.push({ id, deletedAt: at });
    }
  }
  return out;
}

/** The table as the newest manifest that has it declares it. */
function currentSpec(manifests: readonly RunManifest[], table: string): TableSpec {
  for (let i = manifests.length - 1; i >= 0; i--) {
    const found = manifests[i]?.tables.find((t) => t.name === table);
    if (found) {
      const dataTypes: (DataType | null)[] = found.headings.map((_, c) => found.dataTypes?.[c] ?? null);
      const valueKinds = found.valueKinds ? { valueKinds: [...found.valueKinds] } : {};
      return { name: found.name, headings: [...found.headings], dataTypes, ...valueKinds };
    }
  }
  throw new SinkConfigError(`No run wrote the table "${table}"`);
}

/**
 * Every version of the table in order, mapped to the current headings (a column added later reads
 * as null in older objects; a column removed is dropped).
 */
async function* versionsOf(
  store: ObjectStore,
  versions: readonly Version[],
  headings: readonly string[],
): AsyncGenerator<{ version: Version; row: Cell[] }> {
  for (const version of versions) {
    const read = await readObjectRows(store, version.object.key, version.manifest.outputFormat);
    const at = headings.map((h) => read.headings.indexOf(h));
    for await (const raw of read.rows) {
      yield { version, row: at.map((i) => (i < 0 ? null : (raw[i] ?? null))) };
    }
  }
}

/** Writes `latest/<table>.<ext>` for each table and says what each holds. */
export async function writeLatest(options: LatestOptions): Promise<LatestTable[]> {
  const { source } = options;
  const target = options.target ?? source;
  const manifests = await readManifests(source);
  if (manifests.length === 0) {
    throw new SinkConfigError(
      `${source.uri('manifests/')} has no run manifests: is this an export's output?`,
    );
  }
  for (const m of manifests) {
    if (!READABLE_FORMATS.includes(m.outputFormat)) {
      throw new SinkConfigError(
        `Run ${m.runId} wrote ${m.outputFormat}, which cannot be read back; latest reads ${READABLE_FORMATS.join(', ')} outputs`,
      );
    }
  }
  const format =
    options.format ??
    (await options.loadFormat?.(manifests.at(-1)!.outputFormat)) ??
    (() => {
      throw new SinkConfigError('writeLatest needs a format or a loadFormat');
    })();
  const names = options.tables ?? [...new Set(manifests.flatMap((m) => m.tables.map((t) => t.name)))];
  const results: LatestTable[] = [];
  for (const table of names) {
    const spec = currentSpec(manifests, table);
    const versions: Version[] = manifests.flatMap((manifest) =>
      manifest.objects
        .filter((o) => o.table === table)
        .sort((a, b) => a.part - b.part)
        .map((object) => ({ manifest, object })),
    );
    const idAt = spec.headings.indexOf('id');
    const deletedAt = spec.headings.indexOf('_deleted');

    // Pass 1: which version of each id is the latest, and is it live.
    const latest = new Map<string, number>();
    const writtenAt = new Map<string, number>();
    let ordinal = 0;
    let count = 0;
    if (idAt >= 0) {
      for await (const { version, row } of versionsOf(source, versions, spec.headings)) {
        const id = row[idAt];
        if (id !== null && id !== undefined) {
          const key = String(id);
          latest.set(key, isMarkedDeleted(row[deletedAt]) ? -1 : ordinal);
          writtenAt.set(key, Date.parse(version.manifest.startedAt));
        }
        ordinal++;
      }
      count = ordinal;
    }
    let deleted = [...latest.values()].filter((v) => v < 0).length;
    const deletions = new Map<string, number>();
    for (const d of await readDeletions(source, manifests, table)) {
      deletions.set(d.id, Math.max(d.deletedAt, deletions.get(d.id) ?? Number.NEGATIVE_INFINITY));
    }
    if (deletions.size > 0) {
      for (const [id, ordinalOf] of latest) {
        if (ordinalOf < 0) continue;
        const at = deletedAtFor(id, deletions);
        if (at !== undefined && at >= (writtenAt.get(id) ?? Number.POSITIVE_INFINITY)) {
          latest.set(id, -1);
          deleted++;
        }
      }
    }
    writtenAt.clear();

    // Pass 2: write the rows that are the latest live version (a table without ids: every row).
    const key = `${LATEST_FOLDER}/${tableFolder(table)}.${format.extension}`;
    const upload = target.openUpload(key, format.contentType);
    const encoder = format.open(spec, upload, {
      run: { runId: LATEST_FOLDER, exportedAt: new Date(), firstSequence: 0 },
    });
    let rows = 0;
    ordinal = 0;
    try {
      const batch: Cell[][] = [];
      for await (const { row } of versionsOf(source, versions, spec.headings)) {
        const id = row[idAt];
        const keep = idAt < 0 || (id !== null && id !== undefined && latest.get(String(id)) === ordinal);
        ordinal++;
        if (!keep) continue;
        batch.push(row);
        rows++;
        if (batch.length >= 500) await encoder.writeRows(batch.splice(0));
      }
      if (batch.length > 0) await encoder.writeRows(batch);
      await encoder.end();
      await upload.complete();
    } catch (error) {
      await upload.abort();
      throw error;
    }
    if (idAt < 0) count = ordinal;
    results.push({ table, key, uri: target.uri(key), rows, versions: count, deleted });
  }
  return results;
}

import type { Writable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import type { PullPosition } from '../commcare/types';
import type { Cell, TableSpec } from '../query/types';

/** The checkpoint of one data source (one API pass) of one export. */
export interface SourceCheckpoint {
  /** The export's checkpoint key: `--checkpoint-key`, else the query file's MD5 (DET's rule). */
  readonly checkpointKey: string;
  readonly project: string;
  /** Stable id of the data source: resource plus its sorted filters. */
  readonly dataSource: string;
  /** Tables this source feeds. */
  readonly tables: readonly string[];
  readonly position: PullPosition;
  /** ISO time the checkpoint was written. */
  readonly writtenAt: string;
  /** Set when the checkpoint is another tool's (DET's `commcare_export_runs`): what was taken over. */
  readonly takenOver?: string;
  /**
   * The headings of each table this source fed when the checkpoint was committed, so the next run can
   * say which columns appeared or disappeared. Absent in checkpoints written before they were kept.
   */
  readonly columns?: Readonly<Record<string, readonly string[]>>;
  /** The fingerprint of the query's config at that commit (an HQ export's `configFingerprint`). */
  readonly configFingerprint?: string;
}

/** Identifies one run of one export, for object names and logs. */
export interface RunContext {
  readonly runId: string;
  readonly checkpointKey: string;
  readonly project: string;
  /** Full snapshot (`--start-over`, first run) rather than an increment. */
  readonly snapshot: boolean;
  /** What the run does with archived and deleted records. @default 'ignore' */
  readonly deletions?: DeletionMode;
  /** The fingerprint of the query's config (an HQ export's), kept in the run's record where the sink has one. */
  readonly configFingerprint?: string;
}

/**
 * Where rows go. Calls come in this order: `begin`, then any number of `writeRows` and `commit`,
 * then `finish` (or `abort` on failure).
 *
 * `commit` is the durability point: every row written before it, and the checkpoints passed to it,
 * become durable together (PostgreSQL: one transaction; files: the current objects are completed and
 * then the checkpoint object is written). Nothing written after the last commit survives `abort`.
 */
export interface ExportSink {
  begin(tables: readonly TableSpec[], run: RunContext): Promise<void>;
  writeRows(table: string, rows: readonly Cell[][]): Promise<void>;
  commit(checkpoints: readonly SourceCheckpoint[]): Promise<void>;
  /**
   * Records HQ archived or deleted, for the tables of one data source. Applied after every row written
   * before the call, and durable with the next `commit` (PostgreSQL: removed or marked in the same
   * transaction; files: listed in `<table>/deletions/<run-id>.csv`). Sinks without it ignore deletions.
   */
  recordDeletions?(tables: readonly string[], deletions: readonly RecordDeletion[]): Promise<void>;
  finish(): Promise<void>;
  abort(error: unknown): Promise<void>;
  /**
   * Latest committed checkpoint of a data source, or null. `tables` (the source's tables, as the query
   * names them) lets an output fall back to a checkpoint DET left for those tables.
   */
  readCheckpoint(
    checkpointKey: string,
    project: string,
    dataSource: string,
    tables?: readonly string[],
  ): Promise<SourceCheckpoint | null>;
}

/**
 * What an export does with records HQ has archived or deleted (`--deletions`, config `deletions`):
 * - `remove`: their rows (and child rows) are deleted, so the tables hold what HQ holds today;
 * - `mark`: their rows stay with `_deleted = true` and `_deleted_at` set; every table has both columns;
 * - `ignore`: DET's behaviour (rows stay as they were, nothing added).
 */
export type DeletionMode = 'remove' | 'mark' | 'ignore';

export const DELETION_MODES: readonly DeletionMode[] = ['remove', 'mark', 'ignore'];

/**
 * Column names the `mark` mode adds to every table, after the query's own columns: the export loop
 * appends them to each `TableSpec` (data types boolean and datetime) and their cells to each row, so
 * every sink receives them as ordinary columns. PostgreSQL creates them as `boolean NOT NULL DEFAULT
 * false` and `timestamptz`, and overwrites them on upsert (a null `_deleted_at` clears the mark).
 */
export const DELETED_COLUMN = '_deleted';
export const DELETED_AT_COLUMN = '_deleted_at';

/**
 * Why a record left the export: `archived` (HQ served it with `archived: true`), or `deleted` (a
 * reconciliation found HQ no longer lists it: deleted, deleted with its mobile worker, archived
 * since, or no longer matching the query's filters).
 */
export type DeletionReason = 'archived' | 'deleted';

/**
 * One record gone from HQ, as the sinks receive it. Its rows are the rows whose id is `id` (the
 * record's own row) or starts with `id` + `.` (DET's ids for child rows: `<formid>.form.child...`),
 * plus `rowIds` (the exact ids of the rows the record's last served version produced, for tables whose
 * ids do not follow that rule).
 */
export interface RecordDeletion {
  /** HQ's id of the form or case. */
  readonly id: string;
  /** When the export learned of it. HQ's list APIs carry no archive or deletion time. */
  readonly deletedAt: Date;
  readonly reason: DeletionReason;
  /** Exact row ids per table (the archived version's rows); empty when only the id is known. */
  readonly rowIds?: Readonly<Record<string, readonly string[]>>;
}

/** Output formats a sink writes. `sql` is PostgreSQL (a server URL) or embedded PGlite (a folder). */
export type OutputFormat = 'csv' | 'xlsx' | 'json' | 'markdown' | 'parquet' | 'sql';

/**
 * TLS mode as libpq names it. `prefer` (the default) tries TLS without verifying the certificate and
 * falls back to plain TCP when the server has no TLS, as libpq does.
 */
export type SslMode = 'disable' | 'allow' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';

/** A PostgreSQL connection in the shape RDS generates for its secrets (`engine`, `dbInstanceIdentifier` ignored). */
export interface DatabaseConnection {
  readonly host: string;
  readonly port?: number;
  readonly username: string;
  readonly password?: string;
  readonly dbname: string;
  readonly sslmode?: SslMode;
  /** Path of a CA bundle file (e.g. RDS `global-bundle.pem`); required for `verify-ca`/`verify-full` with a private CA. */
  readonly caFile?: string;
}

/** What `createSink` builds. */
export interface SinkOptions {
  readonly format: OutputFormat;
  /**
   * A folder path, `s3://bucket/prefix`, or (format `sql`) `postgresql://...`; a folder with `sql` means
   * embedded PGlite. A file name with the format's extension (`reports.zip` for csv, `.xlsx`, `.json`,
   * `.md`) or `s3://bucket/key.zip` is one file, as DET writes it; `-` is `stdout` (json, markdown).
   */
  readonly output: string;
  /** Where `-` writes. @default process.stdout */
  readonly stdout?: Writable;
  /** PostgreSQL connection object (RDS secret shape); used with format `sql` instead of a URL in `output`. */
  readonly database?: DatabaseConnection;
  /** S3 client for `s3://` outputs. @default - a client from the default credential chain */
  readonly s3Client?: S3Client;
  /** PostgreSQL: fail on a value that does not fit its column instead of widening the column to text. @default false */
  readonly strictTypes?: boolean;
  /** PostgreSQL schema for the tables and our checkpoint table. @default 'public' */
  readonly schema?: string;
  /** PostgreSQL: rows per COPY + merge batch. @default 5000 */
  readonly batchRows?: number;
  /** S3 multipart part size in bytes (S3 minimum 5 MiB). @default 8 MiB */
  readonly partSizeBytes?: number;
  /** xlsx: rows per sheet including the heading row before a table continues on `name (2)`. @default 1048576 (Excel's limit) */
  readonly xlsxMaxRowsPerSheet?: number;
  /** parquet: rows per row group; memory holds one row group per table being written. @default 10000 */
  readonly parquetRowGroupRows?: number;
  /**
   * File outputs (csv, xlsx, json, parquet): after each run also write `latest/<table>.<ext>`, the
   * current state of each table, replaced whole. @default false
   */
  readonly keepLatest?: boolean;
  /** File outputs: how long a run's lease on its export lasts after its last renewal (renewed every third of it while the run is alive). @default 120 */
  readonly leaseSeconds?: number;
  /** File outputs: age after which a killed run's multipart upload or temporary file is removed by the next run. @default a day */
  readonly abandonedAfterMs?: number;
}

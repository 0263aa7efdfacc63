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
}

/** Identifies one run of one export, for object names and logs. */
export interface RunContext {
  readonly runId: string;
  readonly checkpointKey: string;
  readonly project: string;
  /** Full snapshot (`--start-over`, first run) rather than an increment. */
  readonly snapshot: boolean;
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
  finish(): Promise<void>;
  abort(error: unknown): Promise<void>;
  /** Latest committed checkpoint of a data source, or null. */
  readCheckpoint(
    checkpointKey: string,
    project: string,
    dataSource: string,
  ): Promise<SourceCheckpoint | null>;
}

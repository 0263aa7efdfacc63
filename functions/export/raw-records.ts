/**
 * Raw mode: no query file, one data source, every HQ record written as one JSON line. This is what
 * `ccexport run --resource form` does, and what the client benchmark measures.
 */

import { once } from 'node:events';
import { createWriteStream, mkdirSync, renameSync, rmSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import type { ResourceName } from '../commcare/types';
import type { JsonObject } from '../common/json';
import type { Cell, SourcePlan, TableSpec } from '../query/types';
import type { ExportSink, SourceCheckpoint } from '../sinks/types';

/** A source plan whose single table holds each record whole. */
export function rawRecordsPlan(resource: ResourceName, params: Record<string, string[]> = {}): SourcePlan {
  return {
    resource,
    params,
    tables: [
      {
        name: resource,
        headings: ['record'],
        dataTypes: ['json'],
        rowsFor: (record: JsonObject): Cell[][] => [[record]],
      },
    ],
  };
}

/**
 * Writes `<folder>/<table>.jsonl`, one record per line. Files are written under a temporary name and
 * renamed on `finish`, so a failed run leaves no half file. Checkpoints are not kept (raw mode always
 * pulls everything, or the `--since`/`--until` window).
 */
export class JsonLinesSink implements ExportSink {
  private readonly streams = new Map<string, { stream: WriteStream; temp: string; final: string }>();
  readonly written: string[] = [];

  constructor(private readonly folder: string) {}

  async begin(tables: readonly TableSpec[]): Promise<void> {
    mkdirSync(this.folder, { recursive: true });
    for (const table of tables) {
      const final = join(this.folder, `${table.name}.jsonl`);
      const temp = `${final}.partial`;
      this.streams.set(table.name, { stream: createWriteStream(temp), temp, final });
    }
  }

  async writeRows(table: string, rows: readonly Cell[][]): Promise<void> {
    const target = this.streams.get(table);
    if (!target) throw new Error(`table "${table}" was not declared in begin()`);
    let chunk = '';
    for (const row of rows) chunk += `${JSON.stringify(row.length === 1 ? row[0] : row)}\n`;
    if (!target.stream.write(chunk)) await once(target.stream, 'drain');
  }

  async commit(_checkpoints: readonly SourceCheckpoint[]): Promise<void> {}

  async finish(): Promise<void> {
    for (const { stream, temp, final } of this.streams.values()) {
      await new Promise<void>((resolve, reject) =>
        stream.end((err?: Error | null) => (err ? reject(err) : resolve())),
      );
      renameSync(temp, final);
      this.written.push(final);
    }
    this.streams.clear();
  }

  async abort(): Promise<void> {
    for (const { stream, temp } of this.streams.values()) {
      stream.destroy();
      rmSync(temp, { force: true });
    }
    this.streams.clear();
  }

  async readCheckpoint(): Promise<SourceCheckpoint | null> {
    return null;
  }
}

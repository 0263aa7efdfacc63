import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import type { Cell, TableSpec } from '../query/types';
import { SinkConfigError, SinkStateError } from './errors';
import { BufferedText } from './formats/buffered';
import type { FileFormat, TableEncoder } from './formats/types';
import {
  columnLetters,
  EXCEL_MAX_ROWS,
  SHEET_END,
  SHEET_START,
  sheetName,
  sheetRowXml,
  workbookParts,
} from './formats/xlsx';
import { ZipWriter } from './formats/zip';
import { LocalObjectStore } from './store/local';
import type { ObjectStore, ObjectUpload } from './store/types';
import { writeWithBackpressure } from './store/upload';
import type { ExportSink, RunContext, SourceCheckpoint } from './types';

/**
 * Where a single-file output goes: one object of a folder or S3 prefix (written under a temporary
 * name and renamed, or a multipart upload completed at the end, so a failed run leaves the previous
 * file as it was), or a stream such as standard output.
 */
export type SingleFileTarget =
  | { readonly kind: 'object'; readonly store: ObjectStore; readonly key: string }
  | { readonly kind: 'stream'; readonly stream: Writable };

const EXCEL_MAX_SHEET_NAME = 31;

/**
 * `name`, or `name~2`, `name~3`, ... cut to `maxChars` characters, whichever is not yet taken
 * (compared case-insensitively, as Excel and the file systems of Windows and macOS compare names).
 */
export function uniqueName(name: string, taken: Set<string>, maxChars = Number.POSITIVE_INFINITY): string {
  const cut = (text: string, room: number) => Array.from(text).slice(0, room).join('');
  let candidate = cut(name, maxChars);
  for (let n = 2; taken.has(candidate.toLowerCase()); n++) {
    const suffix = `~${n}`;
    candidate = `${cut(name, maxChars - suffix.length)}${suffix}`;
  }
  taken.add(candidate.toLowerCase());
  return candidate;
}

/** A zip entry name for a table: path separators and control characters become `_`. */
function entryBaseName(table: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters do not belong in a file name
  return table.replace(/[/\\\u0000-\u001f]/g, '_') || '_';
}

/** One table's rows as they are gathered, in a temporary file per table (xlsx: per sheet). */
interface Spool {
  readonly table: TableSpec;
  writeRows(rows: readonly Cell[][]): Promise<void>;
  /** Completes the temporary files, returning them in order (xlsx: one per sheet). */
  end(): Promise<string[]>;
  abort(): Promise<void>;
}

function formatSpool(format: FileFormat, table: TableSpec, scratch: LocalObjectStore, index: number): Spool {
  const key = `${index}.${format.extension}`;
  const upload = scratch.openUpload(key, format.contentType);
  const encoder: TableEncoder = format.open(table, upload);
  return {
    table,
    writeRows: (rows) => encoder.writeRows(rows),
    async end() {
      await encoder.end();
      await upload.complete();
      return [scratch.uri(key)];
    },
    abort: () => upload.abort(),
  };
}

/** Sheet XML rows of one table, a new temporary file (a new sheet) every `maxRows` rows. */
function sheetSpool(table: TableSpec, scratch: LocalObjectStore, index: number, maxRows: number): Spool {
  const letters = table.headings.map((_, i) => columnLetters(i));
  const parts: { key: string; upload: ObjectUpload; text: BufferedText }[] = [];
  let rowsInSheet = maxRows;
  const nextSheet = async () => {
    const current = parts.at(-1);
    if (current) {
      await current.text.flush();
      await current.upload.complete();
    }
    const key = `${index}-${parts.length + 1}.xml`;
    const upload = scratch.openUpload(key, 'application/xml');
    const text = new BufferedText(upload);
    parts.push({ key, upload, text });
    rowsInSheet = 1;
    await text.add(sheetRowXml(table.headings, 1, letters));
  };
  return {
    table,
    async writeRows(rows) {
      for (const row of rows) {
        if (rowsInSheet >= maxRows) await nextSheet();
        rowsInSheet += 1;
        await parts.at(-1)!.text.add(sheetRowXml(row, rowsInSheet, letters));
      }
    },
    async end() {
      if (parts.length === 0) await nextSheet();
      const last = parts.at(-1)!;
      await last.text.flush();
      await last.upload.complete();
      return parts.map((p) => scratch.uri(p.key));
    },
    async abort() {
      await Promise.allSettled(parts.map((p) => p.upload.abort()));
    },
  };
}

async function copyFile(path: string, write: (chunk: Buffer) => Promise<void>): Promise<void> {
  for await (const chunk of createReadStream(path)) await write(chunk as Buffer);
}

export interface SingleFileSinkOptions {
  /** xlsx: rows per sheet including the heading row before a table continues on `name (2)`. @default 1048576 */
  readonly maxRowsPerSheet?: number;
}

/**
 * DET's single-file outputs: csv as one zip with a `<table>.csv` per table, xlsx as one workbook with a
 * sheet per table, json as one JSON list of `{name, headings, rows}` and markdown as the tables one
 * after the other. As in DET these are full exports every run: no checkpoint is read or written.
 *
 * Rows are gathered per table in temporary files (the export interleaves the rows of the tables that
 * share a data source, and a zip holds its entries one after another), and the file is assembled
 * and published at `finish`: nothing is visible before, and a failed run leaves the previous file.
 */
export class SingleFileSink implements ExportSink {
  private scratch: LocalObjectStore | undefined;
  private spools = new Map<string, Spool>();
  private state: 'new' | 'running' | 'closed' = 'new';

  constructor(
    private readonly format: FileFormat,
    private readonly target: SingleFileTarget,
    private readonly options: SingleFileSinkOptions = {},
  ) {
    if (target.kind === 'stream' && (format.name === 'csv' || format.name === 'xlsx')) {
      throw new SinkConfigError(`${format.name} output is a zip archive; give --output a file name`);
    }
  }

  async begin(tables: readonly TableSpec[], _run: RunContext): Promise<void> {
    if (this.state !== 'new') throw new SinkStateError('begin called twice');
    this.scratch = new LocalObjectStore(await mkdtemp(join(tmpdir(), 'ccexport-file-')));
    const maxRows = this.options.maxRowsPerSheet ?? EXCEL_MAX_ROWS;
    tables.forEach((table, i) => {
      this.spools.set(
        table.name,
        this.format.name === 'xlsx'
          ? sheetSpool(table, this.scratch!, i, maxRows)
          : formatSpool(this.format, table, this.scratch!, i),
      );
    });
    this.state = 'running';
  }

  async writeRows(table: string, rows: readonly Cell[][]): Promise<void> {
    if (this.state !== 'running')
      throw new SinkStateError(`writeRows called outside a run (state ${this.state})`);
    const spool = this.spools.get(table);
    if (!spool) throw new SinkConfigError(`writeRows for table "${table}", which begin did not declare`);
    await spool.writeRows(rows);
  }

  /** The file is written whole at the end; there is no checkpoint to keep (DET keeps none for files). */
  async commit(_checkpoints: readonly SourceCheckpoint[]): Promise<void> {}

  readCheckpoint(): Promise<SourceCheckpoint | null> {
    return Promise.resolve(null);
  }

  async finish(): Promise<void> {
    if (this.state !== 'running')
      throw new SinkStateError(`finish called outside a run (state ${this.state})`);
    const files: { table: TableSpec; paths: string[] }[] = [];
    for (const spool of this.spools.values()) files.push({ table: spool.table, paths: await spool.end() });
    if (this.target.kind === 'stream') {
      await this.writeText(files, this.target.stream);
    } else {
      const upload = this.target.store.openUpload(this.target.key, this.format.contentType);
      try {
        if (this.format.name === 'csv') await this.writeZip(files, upload.stream);
        else if (this.format.name === 'xlsx') await this.writeWorkbook(files, upload.stream);
        else await this.writeText(files, upload.stream);
        await upload.complete();
      } catch (error) {
        await upload.abort();
        throw error;
      }
    }
    this.state = 'closed';
    await this.removeScratch();
  }

  async abort(_error: unknown): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    await Promise.allSettled([...this.spools.values()].map((s) => s.abort()));
    await this.removeScratch();
  }

  /** Where the file went, for the summary line. */
  describe(): string {
    return this.target.kind === 'stream' ? 'standard output' : this.target.store.uri(this.target.key);
  }

  private async removeScratch(): Promise<void> {
    if (this.scratch) await rm(this.scratch.root, { recursive: true, force: true });
  }

  private async writeZip(files: { table: TableSpec; paths: string[] }[], out: Writable): Promise<void> {
    const zip = new ZipWriter(out);
    const taken = new Set<string>();
    for (const { table, paths } of files) {
      const entry = await zip.entry(
        `${uniqueName(entryBaseName(table.name), taken)}.${this.format.extension}`,
      );
      for (const path of paths) await copyFile(path, (chunk) => entry.write(chunk));
      await entry.end();
    }
    await zip.finish();
  }

  private async writeWorkbook(files: { table: TableSpec; paths: string[] }[], out: Writable): Promise<void> {
    const zip = new ZipWriter(out);
    const taken = new Set<string>();
    const names: string[] = [];
    for (const { table, paths } of files) {
      for (const [i, path] of paths.entries()) {
        names.push(uniqueName(sheetName(table.name, i + 1), taken, EXCEL_MAX_SHEET_NAME));
        const entry = await zip.entry(`xl/worksheets/sheet${names.length}.xml`);
        await entry.write(SHEET_START);
        await copyFile(path, (chunk) => entry.write(chunk));
        await entry.write(SHEET_END);
        await entry.end();
      }
    }
    for (const [name, text] of workbookParts(names)) {
      const entry = await zip.entry(name);
      await entry.write(text);
      await entry.end();
    }
    await zip.finish();
  }

  /** json: one JSON list of the tables (DET's shape); markdown: the tables one after the other. */
  private async writeText(files: { table: TableSpec; paths: string[] }[], out: Writable): Promise<void> {
    const json = this.format.name === 'json';
    const write = (chunk: string | Buffer) => writeWithBackpressure(out, chunk);
    if (json) await write('[\n');
    for (const [i, { paths }] of files.entries()) {
      if (i > 0) await write(json ? ',\n' : '\n');
      for (const path of paths) await copyFile(path, write);
    }
    if (json) await write(']\n');
  }
}

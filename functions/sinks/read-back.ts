/**
 * Reads the data objects a file output wrote back into rows: what `ccexport latest` (and the `latest/`
 * snapshot) consolidates. Each reader streams: csv, json and xlsx a chunk at a time, Parquet a row group
 * at a time, so a large object is never held whole.
 */
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Cell } from '../query/types';
import { SinkConfigError } from './errors';
import type { FileFormat } from './formats/types';
import type { ObjectStore } from './store/types';

/** The rows of one data object, headings first. */
export interface ObjectRows {
  readonly headings: readonly string[];
  readonly rows: AsyncIterable<Cell[]>;
}

/** Formats whose objects can be read back. Markdown is for reading by people and is not parsed. */
export const READABLE_FORMATS: readonly FileFormat['name'][] = ['csv', 'json', 'xlsx', 'parquet'];

export async function readObjectRows(
  store: ObjectStore,
  key: string,
  format: FileFormat['name'],
): Promise<ObjectRows> {
  switch (format) {
    case 'csv':
      return csvRows(await store.openRead(key));
    case 'json':
      return jsonRows(await store.openRead(key));
    case 'xlsx':
      return xlsxRows(await store.openRead(key));
    case 'parquet':
      return parquetRows(await store.openRead(key));
    default:
      throw new SinkConfigError(
        `Reading ${format} objects back is not supported (readable: ${READABLE_FORMATS.join(', ')})`,
      );
  }
}

/** RFC 4180 records from a stream of text chunks (quoted fields, doubled quotes, CRLF or LF). */
async function* csvRecords(input: Readable): AsyncGenerator<string[]> {
  let row: string[] = [];
  let field = '';
  let quoted = false;
  let afterQuote = false;
  let pendingCr = false;
  input.setEncoding('utf8');
  for await (const chunk of input as AsyncIterable<string>) {
    const out: string[][] = [];
    for (let i = 0; i < chunk.length; i++) {
      const ch = chunk[i] as string;
      if (quoted) {
        if (ch === '"') {
          quoted = false;
          afterQuote = true;
        } else field += ch;
        continue;
      }
      if (afterQuote && ch === '"') {
        // A doubled quote inside a quoted field.
        field += '"';
        quoted = true;
        afterQuote = false;
        continue;
      }
      afterQuote = false;
      if (pendingCr) {
        pendingCr = false;
        if (ch === '\n') continue;
      }
      if (ch === '"') quoted = true;
      else if (ch === ',') {
        row.push(field);
        field = '';
      } else if (ch === '\r' || ch === '\n') {
        row.push(field);
        out.push(row);
        row = [];
        field = '';
        pendingCr = ch === '\r';
      } else field += ch;
    }
    yield* out;
  }
  if (field !== '' || row.length > 0) {
    row.push(field);
    yield row;
  }
}

async function csvRows(input: Readable): Promise<ObjectRows> {
  const records = csvRecords(input);
  const first = await records.next();
  const headings = first.done ? [] : first.value;
  async function* rows(): AsyncGenerator<Cell[]> {
    // csv has no null: an empty cell reads as null, as the csv writer wrote null.
    for await (const record of records) yield record.map((v) => (v === '' ? null : v));
  }
  return { headings, rows: rows() };
}

/** Our json objects put the heading object on the first line and one row per line after it. */
async function jsonRows(input: Readable): Promise<ObjectRows> {
  const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })[Symbol.asyncIterator]();
  const first = await lines.next();
  const head = first.done ? '' : first.value;
  const parsed = JSON.parse(`${head.endsWith('[') ? head : head.replace(/,?\s*$/, '')}]}`) as {
    headings?: string[];
  };
  async function* rows(): AsyncGenerator<Cell[]> {
    for (let next = await lines.next(); !next.done; next = await lines.next()) {
      const line = next.value.trim();
      if (line === '' || line.startsWith(']')) continue;
      yield JSON.parse(line.endsWith(',') ? line.slice(0, -1) : line) as Cell[];
    }
  }
  return { headings: parsed.headings ?? [], rows: rows() };
}

/** Every sheet of the workbook in order (continuation sheets included); each sheet's first row is the heading. */
async function xlsxRows(input: Readable): Promise<ObjectRows> {
  const { default: ExcelJS } = await import('exceljs');
  const reader = new ExcelJS.stream.xlsx.WorkbookReader(input, {
    sharedStrings: 'cache',
    hyperlinks: 'ignore',
    styles: 'cache',
    worksheets: 'emit',
  });
  const sheets = reader[Symbol.asyncIterator]();
  let headings: string[] = [];
  const buffered: Cell[][] = [];
  let width = 0;
  const cells = (values: unknown): Cell[] => {
    const list = Array.isArray(values) ? values.slice(1) : [];
    const out: Cell[] = [];
    for (let i = 0; i < Math.max(width, list.length); i++) {
      const v = list[i];
      if (v === undefined || v === null) out.push(null);
      else if (typeof v === 'object' && !(v instanceof Date)) {
        const rich = v as { richText?: { text: string }[]; text?: string; result?: unknown };
        out.push(
          rich.richText ? rich.richText.map((r) => r.text).join('') : String(rich.text ?? rich.result ?? ''),
        );
      } else out.push(v as Cell);
    }
    return out;
  };
  // Read the first sheet's heading now; the rows stream after.
  const firstSheet = await sheets.next();
  let currentRows: AsyncIterator<{ values: unknown }> | undefined;
  if (!firstSheet.done) {
    currentRows = (firstSheet.value as unknown as AsyncIterable<{ values: unknown }>)[Symbol.asyncIterator]();
    const head = await currentRows.next();
    if (!head.done) {
      headings = cells(head.value.values).map((v) => String(v ?? ''));
      width = headings.length;
    }
  }
  async function* rows(): AsyncGenerator<Cell[]> {
    yield* buffered;
    if (!currentRows) return;
    for (let r = await currentRows.next(); !r.done; r = await currentRows.next()) yield cells(r.value.values);
    for (let s = await sheets.next(); !s.done; s = await sheets.next()) {
      let first = true;
      for await (const row of s.value as unknown as AsyncIterable<{ values: unknown }>) {
        if (first) {
          first = false;
          continue;
        }
        yield cells(row.values);
      }
    }
  }
  return { headings, rows: rows() };
}

/**
 * Parquet needs random access (the footer first), so the object is copied to a temporary file and
 * read a row group at a time. Only the query's columns are returned (not `_run_id`, `_exported_at`,
 * `_seq`); the headings come from the file's `ccexport.headings` metadata.
 */
async function parquetRows(input: Readable): Promise<ObjectRows> {
  const { asyncBufferFromFile, parquetMetadataAsync, parquetRead } = await import('hyparquet');
  const dir = await mkdtemp(join(tmpdir(), 'ccexport-read-'));
  const path = join(dir, 'object.parquet');
  await pipeline(input, createWriteStream(path));
  const file = await asyncBufferFromFile(path);
  const metadata = await parquetMetadataAsync(file);
  const stored = metadata.key_value_metadata?.find((kv) => kv.key === 'ccexport.headings')?.value;
  const headings = stored ? (JSON.parse(stored) as string[]) : [];
  const leafNames = metadata.schema.slice(1, 1 + headings.length).map((s) => s.name);
  async function* rows(): AsyncGenerator<Cell[]> {
    try {
      let start = 0;
      for (const group of metadata.row_groups) {
        const end = start + Number(group.num_rows);
        let chunk: unknown[][] = [];
        await parquetRead({
          file,
          metadata,
          columns: leafNames,
          rowStart: start,
          rowEnd: end,
          onComplete: (data: unknown[][]) => {
            chunk = data;
          },
        });
        for (const row of chunk) yield row.map(parquetCell);
        start = end;
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  return { headings, rows: rows() };
}

function parquetCell(value: unknown): Cell {
  if (value === undefined || value === null) return null;
  if (typeof value === 'bigint')
    return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  return value as Cell;
}

/**
 * The run's budget of records and bytes from HQ. Paging already stops when HQ repeats itself (a `next`
 * link back to a page read, `indexed_on` going backwards, a page that cannot advance), but a server can
 * also answer with new pages forever: fresh ids, later `indexed_on`, a `next` link on every page. Only a
 * budget stops that. It counts every record handed to the caller and every response body byte (after
 * decompression) of one run, across all of its data sources, and across the slices of a Lambda run
 * (carried in the continuation); past either limit the run stops with `CommCareBudgetError`.
 *
 * The defaults are meant never to stop a real export: 100 million records is above the whole history of
 * the largest project spaces on CommCare HQ (tens of millions of forms), and at HQ's pace (about a
 * thousand records a second at best) a run reaches it after more than a day; 1 TiB is 100 million records
 * at 10 KB each, several times the size of a typical form (~2 KB) or case. So an endless stream stops
 * within a day or two with the defaults; an operator who knows the export's size sets tighter ones
 * (`--max-records`, `--max-bytes`; `maxRecords`, `maxBytes` in the exports config).
 */
import { CommCareBudgetError } from './errors';

export const DEFAULT_MAX_RECORDS = 100_000_000;
export const DEFAULT_MAX_BYTES = 2 ** 40;

/** What a run has used of its budget (a Lambda continuation carries it to the next slice). */
export interface RunBudgetUsed {
  readonly records: number;
  readonly bytes: number;
}

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/** `1000000`, `500MB`, `2 GiB`, `1TB` (KB = 1000 bytes, KiB = 1024) as bytes; null when not a size. */
export function parseByteSize(text: string): number | null {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$/i.exec(text);
  if (!match) return null;
  const bytes = Math.floor(Number(match[1]) * UNITS[(match[2] ?? '').toLowerCase()]!);
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : null;
}

/** Bytes as a person reads them: `1 TiB`, `256 MiB`, `1500000 bytes`. */
export function formatByteSize(bytes: number): string {
  for (const [unit, size] of [
    ['TiB', 2 ** 40],
    ['GiB', 2 ** 30],
    ['MiB', 2 ** 20],
    ['KiB', 2 ** 10],
  ] as const)
    if (bytes >= size && bytes % size === 0) return `${bytes / size} ${unit}`;
  return `${bytes} bytes`;
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}

export class RunBudget {
  records: number;
  bytes: number;
  constructor(
    readonly maxRecords: number,
    readonly maxBytes: number,
    before: RunBudgetUsed = { records: 0, bytes: 0 },
  ) {
    this.records = before.records;
    this.bytes = before.bytes;
  }

  get used(): RunBudgetUsed {
    return { records: this.records, bytes: this.bytes };
  }

  /** Bytes one more response may have before the run is over its budget. */
  bytesLeft(): number {
    return Math.max(0, this.maxBytes - this.bytes);
  }

  addRecords(n: number, project: string, resource: string): void {
    this.records += n;
    if (this.records > this.maxRecords) throw this.overRecords(project, resource);
  }

  addBytes(n: number, project: string | null, path: string): void {
    this.bytes += n;
    if (this.bytes > this.maxBytes) throw this.overBytes(project, path);
  }

  overRecords(project: string, resource: string): CommCareBudgetError {
    return new CommCareBudgetError(
      `HQ has sent ${count(this.records)} records in this run (project "${project}", the last ones from ` +
        `${resource}), more than the run's record budget of ${count(this.maxRecords)}; the run stops here, ` +
        'as it would otherwise follow a server whose pages never end forever. Rows committed before this ' +
        'point are kept, with a checkpoint where they end. If the export really is this large, raise the ' +
        `budget: --max-records ${this.maxRecords * 2} on the command line, or maxRecords in the export's ` +
        'entry of the exports config.',
    );
  }

  overBytes(project: string | null, path: string): CommCareBudgetError {
    return new CommCareBudgetError(
      `HQ has sent more than ${formatByteSize(this.maxBytes)} (once decompressed) in this run ` +
        `(project "${project ?? '-'}", the last answer to ${path}), more than the run's byte budget; the run ` +
        'stops here, as it would otherwise follow a server whose pages or answers never end forever. Rows ' +
        'committed before this point are kept, with a checkpoint where they end. If the export really is ' +
        `this large, raise the budget: --max-bytes ${this.maxBytes * 2} on ` +
        "the command line, or maxBytes in the export's entry of the exports config.",
    );
  }
}

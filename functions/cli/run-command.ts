/** `ccexport run`: one export, DET's command line. */

import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import {
  CommCareClient,
  CommCareConfigError,
  type CommCareLogEvent,
  parseByteSize,
  RESOURCE_NAMES,
  resolveBaseUrl,
} from '../commcare';
import { checkTransport, LARGEST_PAGE } from '../commcare/resources';
import type { ResourceName } from '../commcare/types';
import type { QueryChanges } from '../export/config-changes';
import { CLI_HEAP_GROWING_PERCENT, keepYoungGenerationSmall, limitHeapGrowth } from '../export/heap';
import { limitInlining } from '../export/jit';
import { jsonLinesProgress, ttyProgress } from '../export/progress';
import { JsonLinesSink, rawRecordsPlan } from '../export/raw-records';
import { type ExportSummary, type ProgressListener, runExport } from '../export/run';
import type { SourcePlan } from '../query/types';
import { isSingleFileOutput } from '../sinks';
import { DELETION_MODES, type DeletionMode, type ExportSink, type OutputFormat } from '../sinks/types';
import {
  booleanFlag,
  formatHelp,
  integerFlag,
  type ParsedFlags,
  parseArgs,
  stringFlag,
  UsageError,
} from './args';
import { formatCount } from './count';
import { credentialsFromFlags, hqBaseUrl } from './credentials';
import type { CommandIO } from './io';
import { RUN_FLAGS } from './run-flags';

const FILE_FORMATS = ['json', 'csv', 'xlsx', 'xls', 'markdown', 'parquet', 'sql', 'jsonl'] as const;
export type OutputFormatFlag = (typeof FILE_FORMATS)[number];

/** Everything `ccexport run` decided from its flags, before touching the network. */
export interface RunSettings {
  readonly project: string;
  readonly baseUrl: string;
  readonly queryFile?: string;
  /** `--query hq:<name or id>`: an export defined in HQ, its DET config downloaded at the run's start. */
  readonly hqExport?: string;
  readonly resources: readonly ResourceName[];
  readonly format: OutputFormatFlag;
  readonly output: string;
  readonly since?: string;
  readonly until?: string;
  readonly startOver: boolean;
  /**
   * `--batch-size`. Without it, each resource's largest page (`LARGEST_PAGE`: 1000 forms, 5000 cases, as
   * HQ allows): fewer round trips, which is where a user waits on a real HQ, for the same rows. DET's
   * default is 200 whatever the resource; `--batch-size 200` sends DET's requests.
   */
  readonly batchSize: number;
  readonly checkpointKey?: string;
  readonly missingValue?: string;
  readonly strictTypes: boolean;
  readonly users: boolean;
  readonly locations: boolean;
  readonly withOrganization: boolean;
  readonly exportRootIfNoSubdocument: boolean;
  readonly concurrency: number;
  readonly maxConcurrency: number;
  readonly verbose: boolean;
  /** `legacy` with `--api-version 0.5`: DET's `/api/v0.5/<resource>/` URLs from the first request. */
  readonly urlStyle?: 'legacy';
  /** `--dump-query` (DET's MiniLinq), `--dump-tables` (the tables we compile the query to), or neither. */
  readonly dump?: 'query' | 'tables';
  readonly progress: 'tty' | 'json' | 'none';
  readonly allowInsecureHttp: boolean;
  /** What happens to rows of records HQ archived or deleted (`--deletions`). */
  readonly deletions: DeletionMode;
  /** `--keep-latest`: the file output also keeps `latest/<table>.<ext>` after each run. */
  readonly keepLatest: boolean;
  /** `--max-records`, `--max-bytes`: the run's budget from HQ (commcare/budget.ts); the client's defaults without them. */
  readonly maxRecords?: number;
  readonly maxBytes?: number;
}

/**
 * `--deletions`, default `remove`: the tables then hold what HQ holds (DET keeps archived and deleted
 * records forever). Two outputs cannot take deletions and default to `ignore`: raw JSON lines
 * (`--resource`), a copy of what HQ served, and DET's single files (`reports.zip`, a workbook, json
 * on standard output), written as rows come and never rewritten.
 */
export function deletionModeFromFlag(
  value: string | undefined,
  format: string,
  output: string,
): DeletionMode {
  const single =
    format !== 'sql' &&
    format !== 'jsonl' &&
    isSingleFileOutput(format === 'xls' ? 'xlsx' : (format as OutputFormat), output);
  const fixed = format === 'jsonl' || single;
  if (value === undefined) return fixed ? 'ignore' : 'remove';
  if (!(DELETION_MODES as readonly string[]).includes(value))
    throw new UsageError(`--deletions expects ${DELETION_MODES.join(', ')} (got "${value}")`);
  if (fixed && value !== 'ignore')
    throw new UsageError(
      format === 'jsonl'
        ? '--deletions: raw JSON lines (--output-format jsonl) keep what HQ served; use ignore'
        : `--deletions ${value} needs an output that can remove rows: a folder or s3:// prefix (one object per table and run, with deletions files) or sql; ${output} is a single file written once`,
    );
  return value as DeletionMode;
}

const DATE_PATTERN = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?)?$/;

/**
 * Epoch milliseconds of a `--since`/`--until` value, or null when it is not a date of the calendar
 * (`2024-13-45`, `2023-02-29`, `24:00`): the pattern alone let such a value through to HQ.
 */
export function calendarTime(value: string): number | null {
  const match = DATE_PATTERN.exec(value);
  if (!match) return null;
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map((v) => Number(v ?? 0)) as number[];
  const fraction = Number(match[7] ?? 0);
  const ms = Date.UTC(year!, month! - 1, day!, hour!, minute!, second!);
  const back = new Date(ms);
  const exact =
    back.getUTCFullYear() === year &&
    back.getUTCMonth() === month! - 1 &&
    back.getUTCDate() === day &&
    back.getUTCHours() === hour &&
    back.getUTCMinutes() === minute &&
    back.getUTCSeconds() === second;
  return exact ? ms + fraction * 1000 : null;
}

export function settingsFromFlags(flags: ParsedFlags, io: CommandIO): RunSettings {
  const project = stringFlag(flags, 'project');
  if (!project) throw new UsageError('--project is required (the project space, e.g. --project my-project)');
  const authMode = stringFlag(flags, 'auth-mode') ?? 'apikey';
  if (authMode !== 'apikey') {
    throw new UsageError(
      `--auth-mode ${authMode} is not supported: this tool uses HQ API keys only (header "Authorization: ApiKey"). ` +
        'Create a key at https://www.commcarehq.org/account/api_keys/ and pass --auth-mode apikey.',
    );
  }
  const format = (stringFlag(flags, 'output-format') ?? 'json') as OutputFormatFlag;
  if (!FILE_FORMATS.includes(format)) {
    throw new UsageError(`--output-format expects one of ${FILE_FORMATS.join(', ')} (got "${format}")`);
  }
  const queryFile = stringFlag(flags, 'query');
  const resourceList = (flags.resource as string[] | undefined) ?? [];
  for (const r of resourceList) {
    if (!(RESOURCE_NAMES as readonly string[]).includes(r)) {
      throw new UsageError(`--resource expects one of ${RESOURCE_NAMES.join(', ')} (got "${r}")`);
    }
  }
  const withOrganization = booleanFlag(flags, 'with-organization');
  const users = booleanFlag(flags, 'users') || withOrganization;
  const locations = booleanFlag(flags, 'locations') || withOrganization;
  if (!queryFile && resourceList.length === 0 && !users && !locations) {
    throw new UsageError(
      'nothing to export: give --query FILE (or --users, --locations, or --resource NAME)',
    );
  }
  if (queryFile && resourceList.length > 0) {
    throw new UsageError('--resource exports raw records without a query; give either --query or --resource');
  }
  if (resourceList.length > 0 && format !== 'jsonl') {
    throw new UsageError('--resource writes raw records: use --output-format jsonl');
  }
  const window: Partial<Record<'since' | 'until', number>> = {};
  for (const name of ['since', 'until'] as const) {
    const value = stringFlag(flags, name);
    if (value === undefined) continue;
    const at = calendarTime(value);
    if (at === null) {
      throw new UsageError(
        `--${name} expects a real date as YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, in UTC (got "${value}")`,
      );
    }
    window[name] = at;
  }
  if (window.since !== undefined && window.until !== undefined && window.since >= window.until) {
    throw new UsageError(
      `--since (${stringFlag(flags, 'since')}) is not before --until (${stringFlag(flags, 'until')}): ` +
        'the window holds no record; swap them or widen it',
    );
  }
  // The limit starts at its maximum: with a handful of requests HQ's per-minute throttle is far away,
  // and a 429 brings the limit down within one round, while ramping up from 1 costs a round trip per
  // step of every short export. `--concurrency` alone sets both; `--max-concurrency` alone, both too.
  const concurrencyFlag = integerFlag(flags, 'concurrency', 1, 32);
  const maxConcurrency = integerFlag(flags, 'max-concurrency', 1, 32) ?? Math.max(concurrencyFlag ?? 1, 4);
  const concurrency = concurrencyFlag ?? maxConcurrency;
  if (maxConcurrency < concurrency) {
    throw new UsageError(
      `--max-concurrency (${maxConcurrency}) must be at least --concurrency (${concurrency})`,
    );
  }
  const progressFlag = stringFlag(flags, 'progress');
  if (progressFlag !== undefined && !['tty', 'json', 'none'].includes(progressFlag)) {
    throw new UsageError(`--progress expects tty, json or none (got "${progressFlag}")`);
  }
  const output = databaseUrl(format, stringFlag(flags, 'output') ?? defaultOutput(format));
  checkOutputName(format, output);
  const apiVersion = stringFlag(flags, 'api-version');
  if (apiVersion !== undefined && !/^v?0\.5$/.test(apiVersion)) {
    throw new UsageError(
      `--api-version ${apiVersion} is not supported: HQ serves the export APIs at version 0.5 (DET's default), ` +
        'which --api-version 0.5 selects; without the flag the current URLs are used, with 0.5 as the fallback',
    );
  }
  const allowInsecureHttp = booleanFlag(flags, 'allow-insecure-http');
  const hq = stringFlag(flags, 'commcare-hq');
  if (hq !== undefined) {
    try {
      checkTransport(resolveBaseUrl(hq), allowInsecureHttp);
    } catch (error) {
      if (error instanceof CommCareConfigError) throw new UsageError(`--commcare-hq: ${error.message}`);
      throw error;
    }
  }
  const maxRecords = integerFlag(flags, 'max-records', 1, Number.MAX_SAFE_INTEGER);
  const maxBytesText = stringFlag(flags, 'max-bytes');
  const maxBytes = maxBytesText === undefined ? undefined : parseByteSize(maxBytesText);
  if (maxBytes === null)
    throw new UsageError(
      `--max-bytes expects a size such as 500MB, 20GiB or 1TB, or a number of bytes (got "${maxBytesText}")`,
    );
  const since = stringFlag(flags, 'since');
  const until = stringFlag(flags, 'until');
  const checkpointKey = stringFlag(flags, 'checkpoint-key');
  const missingValue = stringFlag(flags, 'missing-value');
  return {
    project,
    baseUrl: stringFlag(flags, 'commcare-hq') ?? 'prod',
    ...(queryFile?.startsWith('hq:')
      ? { hqExport: hqExportRef(queryFile) }
      : queryFile
        ? { queryFile: resolve(io.cwd, queryFile) }
        : {}),
    resources: resourceList as ResourceName[],
    format,
    output,
    ...(since !== undefined ? { since } : {}),
    ...(until !== undefined ? { until } : {}),
    startOver: booleanFlag(flags, 'start-over'),
    batchSize: integerFlag(flags, 'batch-size', 1, 10_000) ?? LARGEST_PAGE,
    ...(checkpointKey !== undefined ? { checkpointKey } : {}),
    ...(missingValue !== undefined ? { missingValue } : {}),
    strictTypes: booleanFlag(flags, 'strict-types'),
    users,
    locations,
    withOrganization,
    exportRootIfNoSubdocument: booleanFlag(flags, 'export-root-if-no-subdocument'),
    concurrency,
    maxConcurrency,
    verbose: booleanFlag(flags, 'verbose'),
    ...(apiVersion !== undefined ? { urlStyle: 'legacy' as const } : {}),
    ...dumpFlag(flags),
    progress: (progressFlag as RunSettings['progress'] | undefined) ?? (io.stderr.isTTY ? 'tty' : 'json'),
    allowInsecureHttp,
    deletions: deletionModeFromFlag(stringFlag(flags, 'deletions'), format, output),
    keepLatest: booleanFlag(flags, 'keep-latest'),
    ...(maxRecords !== undefined ? { maxRecords } : {}),
    ...(maxBytes !== undefined ? { maxBytes } : {}),
  };
}

/**
 * `--output` when none is given: DET's `reports.zip` for csv, a workbook for xlsx, standard output for
 * json and markdown (DET prints both there), and a folder for the embedded database and raw records.
 */
function defaultOutput(format: OutputFormatFlag): string {
  switch (format) {
    case 'csv':
      return 'reports.zip';
    case 'xlsx':
    case 'xls':
      return 'reports.xlsx';
    case 'json':
    case 'markdown':
      return '-';
    default:
      return 'ccexport-output';
  }
}

/**
 * DET's `--output` for sql is a SQLAlchemy URL. Its PostgreSQL spellings with a driver
 * (`postgresql+psycopg2://`, `postgres+psycopg://`, ...) are the same database here; the databases
 * SQLAlchemy reaches that we do not write are refused by name.
 */
export function databaseUrl(format: OutputFormatFlag, output: string): string {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(output)?.[1]?.toLowerCase();
  if (scheme === undefined) return output;
  const [dialect, driver] = scheme.split('+');
  if ((dialect === 'postgresql' || dialect === 'postgres') && driver !== undefined) {
    return `postgresql://${output.slice(scheme.length + 3)}`;
  }
  const others: Record<string, string> = {
    mysql: 'MySQL',
    mariadb: 'MariaDB',
    mssql: 'SQL Server',
    oracle: 'Oracle',
    sqlite: 'SQLite',
  };
  const name = others[dialect ?? ''];
  if (name !== undefined) {
    throw new UsageError(
      `--output ${scheme}://... is ${name}, which is not supported yet: ccexport writes PostgreSQL (postgresql://...) ` +
        'or files' +
        (format === 'sql' ? '' : ` (and --output-format ${format} writes files)`),
    );
  }
  return output;
}

/** File extensions of single-file outputs, and the format each belongs to. */
const FILE_EXTENSIONS: readonly [string, string][] = [
  ['.zip', 'csv'],
  ['.xlsx', 'xlsx'],
  ['.xls', 'xlsx'],
  ['.json', 'json'],
  ['.md', 'markdown'],
  ['.markdown', 'markdown'],
  ['.csv', 'a folder'],
];

/**
 * Refuses a file name whose extension belongs to another format (`--output-format csv --output
 * data.xlsx`), as DET does, instead of writing a folder of that name.
 */
function checkOutputName(format: OutputFormatFlag, output: string): void {
  // Raw JSON lines go to a folder or under s3://bucket/prefix; any other URL would become a local
  // folder named after it (`./https:/host/...`).
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(output)?.[1];
  if (format === 'jsonl' && scheme !== undefined && scheme.toLowerCase() !== 's3') {
    throw new UsageError(
      `--output-format jsonl writes to a folder or to s3://bucket/prefix, not to a ${scheme}:// URL`,
    );
  }
  if (format === 'sql' || format === 'jsonl' || /^postgres/i.test(output)) return;
  const lower = output.toLowerCase();
  const found = FILE_EXTENSIONS.find(([ext]) => lower.endsWith(ext));
  if (!found) return;
  const wanted = format === 'xls' ? 'xlsx' : format;
  if (found[1] === wanted) return;
  const names: Record<string, string> = {
    csv: 'a .zip file (one .csv per table)',
    xlsx: 'a .xlsx file',
    json: 'a .json file',
    markdown: 'a .md file',
  };
  throw new UsageError(
    `--output ${output} does not fit --output-format ${format}: give ${names[wanted]}, or a folder for one file per table and run`,
  );
}

/** `ccexport reconcile`: the flags of a run; removes or marks the rows of records HQ no longer lists. */
export function runReconcileCommand(argv: string[], io: CommandIO): Promise<number> {
  return runRunCommand(argv, io, 'reconcile');
}

export async function runRunCommand(
  argv: string[],
  io: CommandIO,
  action: 'run' | 'reconcile' = 'run',
): Promise<number> {
  limitHeapGrowth(CLI_HEAP_GROWING_PERCENT);
  keepYoungGenerationSmall();
  limitInlining();
  const { flags, positionals } = parseArgs(argv, RUN_FLAGS);
  if (booleanFlag(flags, 'help')) {
    io.stdout.write(
      formatHelp(
        action === 'run'
          ? 'ccexport run: export CommCare HQ data (DET command line)'
          : 'ccexport reconcile: compare the ids HQ lists with an output, remove (or mark) the rows of records HQ no longer has (PostgreSQL), or record them in <table>/deletions/<run-id>.csv (folder or s3:// prefix)',
        RUN_FLAGS,
      ),
    );
    return 0;
  }
  if (booleanFlag(flags, 'version')) {
    io.stdout.write('ccexport version 0.1.0\n');
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const settings = settingsFromFlags(flags, io);
  const logFile = logFileFor(flags, io);
  const warn = (message: string) => {
    io.stderr.write(`${message}\n`);
    logFile?.({ level: 'warn', message: message.replace(/^\s*(warning|note): /, '') });
  };

  if (settings.dump) return await dumpQuery(settings, settings.dump, io);
  const {
    sources: querySources,
    checkpointKey: queryCheckpointKey,
    warnings,
  } = await planQuerySources(settings);
  for (const warning of warnings) warn(`warning: ${warning}`);

  const credentials = await credentialsFromFlags(flags, io, warn);

  const logLine = (event: CommCareLogEvent) => {
    if (event.level === 'debug' && !settings.verbose) return;
    logFile?.(event);
    if (settings.progress === 'json' || settings.progress === 'none') {
      if (settings.progress === 'json')
        io.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), ...event })}\n`);
    } else {
      io.stderr.write(`\r\x1b[2K${event.level}: ${event.message}\n`);
    }
  };
  const client = new CommCareClient({
    baseUrl: hqBaseUrl(stringFlag(flags, 'commcare-hq'), credentials, settings.baseUrl),
    username: credentials.username,
    apiKey: credentials.apiKey,
    allowInsecureHttp: settings.allowInsecureHttp,
    pageSize: settings.batchSize,
    ...(settings.urlStyle !== undefined ? { urlStyle: settings.urlStyle } : {}),
    concurrency: settings.concurrency,
    maxConcurrency: settings.maxConcurrency,
    // Raw JSON lines write HQ's own bytes for each record; table outputs never need them.
    keepRawRecords: settings.resources.length > 0,
    ...(settings.maxRecords !== undefined ? { maxRecords: settings.maxRecords } : {}),
    ...(settings.maxBytes !== undefined ? { maxBytes: settings.maxBytes } : {}),
    logger: logLine,
  });

  const fromHq = settings.hqExport ? await hqExportSources(settings, client, warn) : null;
  const builtins = await planBuiltinSources(settings, client, warn);
  const sources = [...(fromHq?.sources ?? querySources), ...builtins];
  const checkpointKey = fromHq?.checkpointKey ?? queryCheckpointKey;
  if (action === 'reconcile') {
    const maxShare = shareFlag(stringFlag(flags, 'reconcile-max-share'));
    const pageSize = settings.batchSize;
    return await reconcileOutput(settings, { sources, checkpointKey, maxShare, pageSize }, client, io);
  }
  if (settings.format === 'xls') warn('note: --output-format xls writes xlsx (Excel 2007 and later)');
  const sink = await openSink(settings, io);
  const progress = progressListener(settings, io);

  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    warn('\ninterrupted: committing what is written so far (press Ctrl-C again to stop at once)');
  };
  process.on('SIGINT', onSignal);
  let summary: ExportSummary;
  try {
    summary = await runExport(
      {
        source: client,
        sink,
        runId: newRunId(),
        progress,
        shouldYield: () => interrupted,
        notice: (message) => warn(`note: ${message}`),
      },
      {
        project: settings.project,
        sources,
        checkpointKey,
        ...(settings.since !== undefined ? { since: settings.since } : {}),
        ...(settings.until !== undefined ? { until: settings.until } : {}),
        startOver: settings.startOver,
        pageSize: settings.batchSize,
        commitEveryPages: settings.format === 'sql' ? 5 : Number.POSITIVE_INFINITY,
        // --max-concurrency 1 is DET's sequence of requests: one source after another.
        parallelSources: settings.maxConcurrency > 1,
        deletions: settings.deletions,
        ...(fromHq ? { configFingerprint: fromHq.fingerprint } : {}),
      },
    );
  } finally {
    process.off('SIGINT', onSignal);
  }
  const stats = client.stats;
  // With the tables on standard output, the summary goes to stderr so stdout stays one document.
  const summaryOut = settings.output === '-' ? io.stderr : io.stdout;
  summaryOut.write(
    `${summary.done ? 'Export finished' : 'Export interrupted (run again to resume)'}: ${formatCount(summary.records)} records, ` +
      `${formatCount(summary.rows)} rows, ${summary.pages} pages, ${stats.retries} retries, ${stats.throttled} throttled` +
      `${summary.archived > 0 ? `, ${formatCount(summary.archived)} archived record${summary.archived === 1 ? '' : 's'} ${settings.deletions === 'mark' ? 'marked' : 'removed'}` : ''}\n`,
  );
  if (fromHq) summaryOut.write(`${configChangeLine(fromHq.fingerprint, summary.changes)}\n`);
  if (sink instanceof JsonLinesSink) for (const file of sink.written) io.stdout.write(`wrote ${file}\n`);
  return summary.done ? 0 : 130;
}

/**
 * The run's HQ config against the last committed run's: the change is visible in the run's own output,
 * and each checkpoint keeps the fingerprint for the next comparison (and for `ccexport history`).
 */
function configChangeLine(fingerprint: string, changes: QueryChanges): string {
  const previous = changes.previousFingerprint;
  const since =
    previous === null
      ? changes.compared
        ? 'the last run recorded no config fingerprint'
        : 'no earlier run to compare with'
      : previous === fingerprint
        ? 'unchanged since the last run'
        : `changed since the last run (was ${previous})`;
  const columns = changes.columnChanges.length;
  return `HQ export config ${fingerprint}: ${since}${columns > 0 ? `; columns changed in ${columns} table${columns === 1 ? '' : 's'} (notes above)` : ''}`;
}

function shareFlag(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const share = Number(value);
  if (!(share > 0 && share <= 1))
    throw new UsageError(`--reconcile-max-share expects a share between 0 and 1, e.g. 0.2 (got "${value}")`);
  return share;
}

/** `ccexport reconcile`: one pass over each source's ids, then every table settled in one transaction. */
async function reconcileOutput(
  settings: RunSettings,
  plan: { sources: SourcePlan[]; checkpointKey: string; maxShare: number | undefined; pageSize: number },
  client: CommCareClient,
  io: CommandIO,
): Promise<number> {
  if (settings.deletions === 'ignore')
    throw new UsageError('reconcile removes or marks rows: use --deletions remove (the default) or mark');
  const { openReconcileTarget } = await import('../sinks');
  const { runReconcile } = await import('../export/reconcile');
  if (settings.format === 'jsonl')
    throw new UsageError(
      'reconcile compares tables; raw JSON lines (--output-format jsonl) keep what HQ served',
    );
  const s3Client = settings.output.startsWith('s3://') ? await s3ClientFor(io.env) : undefined;
  const target = await openReconcileTarget({
    format: settings.format === 'xls' ? 'xlsx' : settings.format,
    output: settings.output,
    ...(s3Client ? { s3Client } : {}),
    ...(settings.keepLatest && settings.format !== 'sql' ? { keepLatest: true } : {}),
  });
  const summary = await runReconcile(
    { source: client, target, runId: newRunId(), progress: progressListener(settings, io) },
    {
      project: settings.project,
      sources: plan.sources,
      checkpointKey: plan.checkpointKey,
      pageSize: plan.pageSize,
      mode: settings.deletions,
      ...(plan.maxShare !== undefined ? { maxShare: plan.maxShare } : {}),
    },
  );
  // A file output keeps its history: what a reconcile finds is recorded as deletion records.
  const verb =
    settings.format !== 'sql' ? 'recorded as deleted' : settings.deletions === 'mark' ? 'marked' : 'removed';
  io.stdout.write(
    `Reconcile finished: ${formatCount(summary.ids)} ids listed in ${summary.pages} pages, ` +
      `${formatCount(summary.gone)} rows ${verb}` +
      `${summary.tables.map((t) => `\n  ${t.table}: ${formatCount(t.gone)} of ${formatCount(t.rows)} rows ${verb}`).join('')}\n`,
  );
  return 0;
}

/**
 * `--log-dir DIR`: log lines are also appended, as JSON lines, to `DIR/commcare_export.log` (DET's file
 * name; DET appends too, to keep the history of runs). Without `--log-dir` there is no log file, where
 * DET writes one in the working folder unless `--no-logfile`: stderr is the log, and a scheduler keeps it.
 */
function logFileFor(
  flags: ParsedFlags,
  io: CommandIO,
): ((event: { level: string; message: string }) => void) | undefined {
  const dir = stringFlag(flags, 'log-dir');
  if (dir === undefined || booleanFlag(flags, 'no-logfile')) return undefined;
  const path = join(resolve(io.cwd, dir), 'commcare_export.log');
  mkdirSync(dirname(path), { recursive: true });
  return (event) => appendFileSync(path, `${JSON.stringify({ time: new Date().toISOString(), ...event })}\n`);
}

function dumpFlag(flags: ParsedFlags): { dump?: 'query' | 'tables' } {
  const query = booleanFlag(flags, 'dump-query');
  const tables = booleanFlag(flags, 'dump-tables');
  if (query && tables) throw new UsageError('give --dump-query or --dump-tables, not both');
  return query ? { dump: 'query' } : tables ? { dump: 'tables' } : {};
}

/**
 * `--dump-query`: the query as DET 1.15 prints it (the MiniLinq it builds, as JSON; see
 * functions/query/det-dump.ts), then exit, without credentials or a request. `--dump-tables`: the tables
 * our engine compiles the query to (sheet, table, resource, filters, row path, columns). DET also prints
 * "Running export..." and "Export finished!" around its JSON on standard output; only the JSON is printed
 * here, so that it can be piped into another program.
 */
async function dumpQuery(settings: RunSettings, what: 'query' | 'tables', io: CommandIO): Promise<number> {
  const flag = what === 'query' ? '--dump-query' : '--dump-tables';
  if (settings.hqExport)
    throw new UsageError(`${flag} needs a query file; save an HQ export with "ccexport hq-exports download"`);
  if (!settings.queryFile) throw new UsageError(`${flag} needs --query FILE`);
  const { readFile } = await import('node:fs/promises');
  const isWorkbook = /\.xlsx?$/i.test(settings.queryFile);
  if (what === 'query') {
    const { detDumpOfJson, detDumpOfWorkbook, pyJsonDumps } = await import('../query/det-dump');
    const bytes = await readFile(settings.queryFile);
    const options = {
      outputFormat: settings.format,
      missingValue: settings.missingValue ?? null,
      exportRootIfNoSubdocument: settings.exportRootIfNoSubdocument,
      withOrganization: settings.withOrganization,
      users: settings.users,
      locations: settings.locations,
    };
    const dump = isWorkbook
      ? await detDumpOfWorkbook(bytes, options)
      : detDumpOfJson(JSON.parse(bytes.toString('utf8')), options);
    for (const warning of dump.warnings) io.stderr.write(`${warning}\n`);
    if (dump.error !== undefined || dump.jvalue === null) {
      io.stderr.write(`ccexport: ${dump.error ?? 'nothing to print'}\n`);
      return 1;
    }
    io.stdout.write(`${pyJsonDumps(dump.jvalue)}\n`);
    return 0;
  }
  const { validateQueryFile } = await import('../query');
  const result = await validateQueryFile(settings.queryFile, {
    baseUrl: resolveBaseUrl(settings.baseUrl),
    missingValue: settings.missingValue ?? null,
    exportRootIfNoSubdocument: settings.exportRootIfNoSubdocument,
    withOrganization: settings.withOrganization,
  });
  io.stdout.write(`${JSON.stringify(result.tables, null, 4)}\n`);
  return 0;
}

export function newRunId(now: Date = new Date()): string {
  // Sortable by time, unique across concurrent runs.
  return `${now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')}-${randomUUID().slice(0, 8)}`;
}

/**
 * The sources of the query file (or of the raw resources). Runs before credentials are asked for, so a
 * broken query file fails at once, without a prompt or a request.
 */
async function planQuerySources(
  settings: RunSettings,
): Promise<{ sources: SourcePlan[]; checkpointKey: string; warnings: readonly string[] }> {
  if (settings.resources.length > 0) {
    return {
      sources: settings.resources.map((r) => rawRecordsPlan(r)),
      checkpointKey: settings.checkpointKey ?? `raw:${settings.resources.join(',')}`,
      warnings: [],
    };
  }
  if (settings.hqExport) {
    // Compiled once the key is known (the config comes from HQ): see hqExportSources.
    return { sources: [], checkpointKey: settings.checkpointKey ?? `hq:${settings.hqExport}`, warnings: [] };
  }
  if (!settings.queryFile) {
    // --users/--locations alone (DET crashes here with SQL output; we export the tables).
    return { sources: [], checkpointKey: settings.checkpointKey ?? 'builtin-tables', warnings: [] };
  }
  // Loaded on demand: the query engine and the sinks pull in exceljs, PGlite and the AWS SDK, which a
  // raw export does not need (about 100 MB of resident memory).
  const { compileQueryFile } = await import('../query');
  const compiled = await compileQueryFile(settings.queryFile, {
    baseUrl: resolveBaseUrl(settings.baseUrl),
    missingValue: settings.missingValue ?? null,
    exportRootIfNoSubdocument: settings.exportRootIfNoSubdocument,
    withOrganization: settings.withOrganization,
    forSql: settings.format === 'sql',
    deletions: settings.deletions,
  });
  return {
    sources: [...compiled.sources],
    checkpointKey: settings.checkpointKey ?? compiled.queryFileMd5,
    warnings: compiled.warnings,
  };
}

/** The name or id after `hq:`; an empty one is a usage error. */
function hqExportRef(query: string): string {
  const ref = query.slice('hq:'.length).trim();
  if (!ref)
    throw new UsageError(
      '--query hq: needs the name or id of an HQ export, e.g. --query "hq:Household registrations"',
    );
  return ref;
}

/**
 * The sources of an export defined in HQ: its DET config is downloaded with the run's key, kept in
 * memory and compiled like a file. The checkpoint key is the export's id, not the config's checksum,
 * so an edit in HQ (a column added) continues from the checkpoint instead of exporting everything again;
 * the config's checksum is logged so a change is visible.
 */
async function hqExportSources(
  settings: RunSettings,
  client: CommCareClient,
  warn: (message: string) => void,
): Promise<{ sources: SourcePlan[]; checkpointKey: string; fingerprint: string }> {
  const { findHqExport } = await import('../commcare');
  const hqExport = findHqExport(
    await client.hqExports(settings.project),
    settings.project,
    settings.hqExport!,
  );
  const workbook = await client.hqExportConfig(settings.project, hqExport);
  const { compileWorkbook } = await import('../query');
  const compiled = await compileWorkbook(workbook, {
    baseUrl: resolveBaseUrl(settings.baseUrl),
    missingValue: settings.missingValue ?? null,
    exportRootIfNoSubdocument: settings.exportRootIfNoSubdocument,
    withOrganization: settings.withOrganization,
    forSql: settings.format === 'sql',
    deletions: settings.deletions,
  });
  for (const warning of compiled.warnings) warn(`warning: ${warning}`);
  // The content's fingerprint, not the bytes' MD5: HQ rebuilds the workbook (with a new timestamp) at every download.
  const { configFingerprint } = await import('../export/hq-config');
  const fingerprint = await configFingerprint(workbook);
  warn(`note: HQ export "${hqExport.name}" (${hqExport.id}), config ${fingerprint}`);
  return {
    sources: [...compiled.sources],
    checkpointKey: settings.checkpointKey ?? `hq:${hqExport.id}`,
    fingerprint,
  };
}

/**
 * DET's built-in `commcare_users` and `commcare_locations` tables (`--users`, `--locations`,
 * `--with-organization`). They are pulled in full on every run, as DET does; the locations table needs
 * every location and location type first to fill its ancestor columns.
 */
async function planBuiltinSources(
  settings: RunSettings,
  client: CommCareClient,
  warn: (message: string) => void,
): Promise<SourcePlan[]> {
  if (!settings.users && !settings.locations) return [];
  const { builtinSources } = await import('../query');
  return await builtinSources(client, settings.project, {
    users: settings.users,
    locations: settings.locations,
    onWarning: (message) => warn(`warning: ${message}`),
  });
}

async function openSink(settings: RunSettings, io: CommandIO): Promise<ExportSink> {
  const env = io.env;
  if (settings.format === 'jsonl') {
    if (!settings.output.startsWith('s3://')) return new JsonLinesSink(settings.output);
    const { objectStoreFor } = await import('../sinks');
    return new JsonLinesSink(await objectStoreFor(settings.output, { s3Client: await s3ClientFor(env) }));
  }
  // DET's xls is the Excel 2003 format; we write xlsx, which every Excel since 2007 opens.
  const format = settings.format === 'xls' ? 'xlsx' : settings.format;
  const { createSink } = await import('../sinks');
  const s3Client = settings.output.startsWith('s3://') ? await s3ClientFor(env) : undefined;
  return await createSink({
    format,
    output: settings.output,
    // process.stdout and every CommandIO's stdout are node Writables.
    stdout: io.stdout as Writable,
    strictTypes: settings.strictTypes,
    ...(s3Client ? { s3Client } : {}),
    ...(settings.keepLatest ? { keepLatest: true } : {}),
  });
}

/**
 * The S3 client for s3:// outputs: the SDK's default chain (credentials, region, and the endpoint from
 * AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL). A custom endpoint (an S3-compatible store, or moto in tests)
 * usually has no per-bucket host names, so it gets path-style addressing.
 */
export async function s3ClientFor(env: CommandIO['env']) {
  const { S3Client } = await import('@aws-sdk/client-s3');
  const customEndpoint = Boolean(env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL);
  return new S3Client({ forcePathStyle: customEndpoint || env.CCEXPORT_S3_PATH_STYLE === '1' });
}

function progressListener(settings: RunSettings, io: CommandIO): ProgressListener | undefined {
  if (settings.progress === 'tty') return ttyProgress(io.stderr);
  if (settings.progress === 'json') return jsonLinesProgress(io.stderr);
  return undefined;
}

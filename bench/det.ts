/**
 * Side by side with DET (issue 15): Dimagi's `commcare-export` 1.15 and `ccexport` run the same workbook
 * against the same sandbox project with the same page size, interleaved run by run, so that whatever else
 * the machine is doing lands on both. Runs only when `DET_HOME` names a DET source tree (see
 * bench/README.md); nothing of DET is part of this repository.
 *
 * Both tools are timed as a user runs them (a fresh process per run, start-up included) by GNU time:
 * wall seconds, CPU seconds (user + system) and peak RSS. The HQ stand-in is the sandbox behind a small
 * proxy in this process, which adds the per-page latency and counts the requests in flight per project:
 * that count, not the exporter's own word, is what "never more than 4 in flight" is judged on.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import ExcelJS from 'exceljs';
import { DEFAULT_API_KEY, DEFAULT_PROJECT, DEFAULT_USERNAME } from '../functions/sandbox';
import { type ProxiedRequest, startCountingProxy } from '../test/support/counting-proxy';
import { HQ_LAYOUT_HEADINGS } from '../test/support/query-workbook';
import { median, ROOT, round, startSandboxProcess } from './harness';
import { freshDatabase } from './scenarios';

export const DET_SCENARIOS = ['latency', 'cpu', 'sql', 'help', 'memory'] as const;
export type DetScenario = (typeof DET_SCENARIOS)[number];

const REGISTRATION = 'http://openrosa.org/formdesigner/5C1B5E2A-7F3D-4E11-9C2B-REGISTRATION';
const FOLLOWUP = 'http://openrosa.org/formdesigner/9A4E0B77-1D2C-4F5A-8B3E-FOLLOWUP';
type Column = [source: string, field: string, mapVia?: string];

/**
 * The workbook both tools run: three data sources, as in the issue. A form table with a filter (the
 * follow-up visits), a child table from a repeat group (household members of the registration forms),
 * and a case table (every case, no filter).
 */
export async function writeDetWorkbook(path: string): Promise<void> {
  const workbook = new ExcelJS.Workbook();
  const sheet = (
    title: string,
    source: string,
    filter: [string, string] | null,
    table: string,
    columns: Column[],
  ) => {
    const ws = workbook.addWorksheet(title);
    ws.addRow(HQ_LAYOUT_HEADINGS);
    columns.forEach(([sourceField, field, mapVia], index) => {
      const first = index === 0;
      ws.addRow([
        sourceField,
        field,
        mapVia ?? null,
        first ? source : null,
        first && filter ? filter[0] : null,
        first && filter ? filter[1] : null,
        first ? table : null,
      ]);
    });
  };
  sheet('Visits', 'form', ['xmlns.exact', FOLLOWUP], 'visits', [
    ['id', 'id'],
    ['form.visit_date', 'visit_date'],
    ['form.weight', 'weight', 'str2num'],
    ['form.symptoms', 'symptoms'],
    ['form.symptoms', 'has_fever', 'selected(fever)'],
    ['form.notes', 'notes'],
    ['form.vitals.temperature', 'temperature'],
    ['form.vitals.bp.systolic', 'systolic'],
    ['form.vitals.bp.diastolic', 'diastolic'],
    ['form.meta.username', 'username'],
    ['received_on', 'received_on', 'str2date'],
  ]);
  sheet('Members', 'form.form.members[*]', ['xmlns.exact', REGISTRATION], 'household_members', [
    ['id', 'id'],
    ['$.id', 'form_id'],
    ['member_name', 'member_name'],
    ['age', 'age', 'str2num'],
    ['sex', 'sex'],
  ]);
  sheet('Cases', 'case', null, 'cases', [
    ['id', 'id'],
    ['properties.case_type', 'case_type'],
    ['properties.case_name', 'case_name'],
    ['properties.owner_id', 'owner_id'],
    ['properties.visit_count', 'visit_count', 'str2num'],
    ['closed', 'closed'],
    ['server_date_modified', 'server_date_modified', 'str2date'],
  ]);
  await workbook.xlsx.writeFile(path);
}

/** What GNU time says about one process (and its children). */
export interface TimedRun {
  readonly seconds: number;
  readonly cpuSeconds: number;
  readonly peakRssMb: number;
  /** Requests the HQ stand-in served to this run, and the most of one project in flight at once. */
  readonly requests: number;
  readonly maxInFlight: number;
  /** Where the run's time went, read from the requests' times at the HQ stand-in (data requests only). */
  readonly path?: CriticalPath;
}

/**
 * One run's critical path as the HQ stand-in saw it. A request's time runs from its arrival at the
 * proxy to its answer's last byte: the latency (the stand-in's serving runs within it), the transfer.
 * *Round trips* is the span from the first arrival to the last answer divided by the mean request
 * time: with `n` requests kept in flight it would be requests ÷ n, and every wait between an answer
 * and the next request (parsing, writing, a busy thread) adds to it.
 */
export interface CriticalPath {
  /** From the process's start to the first data request's arrival. */
  readonly firstRequestSeconds: number;
  /** From the first arrival to the last answer. */
  readonly spanSeconds: number;
  readonly meanRequestSeconds: number;
  /**
   * The stand-in's serving: from a request's being passed on (on arrival) to its answer's head coming
   * back (the sandbox builds the whole body first). Within the latency unless it is longer.
   */
  readonly meanServingSeconds: number;
  readonly roundTrips: number;
  /** From the last answer to the process's exit (the last pages written, outputs closed). */
  readonly afterLastAnswerSeconds: number;
}

function criticalPath(
  requests: readonly ProxiedRequest[],
  startedAt: number,
  exitedAt: number,
): CriticalPath | undefined {
  const done = requests.filter((r) => r.endedAt !== null && r.forwardedAt !== null && r.servedAt !== null);
  if (done.length === 0) return undefined;
  const first = Math.min(...done.map((r) => r.arrivedAt));
  const last = Math.max(...done.map((r) => r.endedAt!));
  const mean = done.reduce((sum, r) => sum + (r.endedAt! - r.arrivedAt), 0) / done.length;
  const serving = done.reduce((sum, r) => sum + (r.servedAt! - r.forwardedAt!), 0) / done.length;
  return {
    firstRequestSeconds: round((first - startedAt) / 1000, 3),
    spanSeconds: round((last - first) / 1000, 3),
    meanRequestSeconds: round(mean / 1000, 3),
    meanServingSeconds: round(serving / 1000, 3),
    roundTrips: round((last - first) / mean, 2),
    afterLastAnswerSeconds: round((exitedAt - last) / 1000, 3),
  };
}

/** GNU time's figures of a `timed` run, without the clock readings. */
function untimed(run: { seconds: number; cpuSeconds: number; peakRssMb: number }) {
  return { seconds: run.seconds, cpuSeconds: run.cpuSeconds, peakRssMb: run.peakRssMb };
}

/** The median of each figure over the runs that have one. */
function medianPath(paths: readonly (CriticalPath | undefined)[]): CriticalPath | undefined {
  const known = paths.filter((p): p is CriticalPath => p !== undefined);
  if (known.length === 0) return undefined;
  const m = (pick: (p: CriticalPath) => number, digits: number) => round(median(known.map(pick)), digits);
  return {
    firstRequestSeconds: m((p) => p.firstRequestSeconds, 3),
    spanSeconds: m((p) => p.spanSeconds, 3),
    meanRequestSeconds: m((p) => p.meanRequestSeconds, 3),
    meanServingSeconds: m((p) => p.meanServingSeconds, 3),
    roundTrips: m((p) => p.roundTrips, 2),
    afterLastAnswerSeconds: m((p) => p.afterLastAnswerSeconds, 3),
  };
}

/**
 * The environment each tool runs with: a user's plain shell (PATH, HOME, the locale) and the tool's own
 * settings, nothing inherited from the shell that started the bench. Settings such as NODE_OPTIONS,
 * NODE_EXTRA_CA_CERTS (node reads and parses the file at every start, ~50 ms of CPU) or PYTHON* variables
 * change what one tool does at start-up and not the other's, and would be measured as the tool's cost.
 */
function toolEnv(own: Record<string, string>): NodeJS.ProcessEnv {
  const plain: Record<string, string> = { LANG: 'C.UTF-8' };
  for (const name of ['PATH', 'HOME', 'TMPDIR'] as const) {
    const value = process.env[name];
    if (value !== undefined) plain[name] = value;
  }
  return { ...plain, ...own };
}

async function timed(command: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv) {
  const report = join(cwd, `time-${process.hrtime.bigint()}.txt`);
  const startedAt = performance.now();
  const child = spawn('/usr/bin/time', ['-f', '%e %U %S %M', '-o', report, command, ...args], {
    cwd,
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  const exitedAt = performance.now();
  const text = existsSync(report) ? (readFileSync(report, 'utf8').trim().split('\n').pop() ?? '') : '';
  rmSync(report, { force: true });
  if (code !== 0)
    throw new Error(`${command} ${args.slice(0, 3).join(' ')} … exited with ${code}: ${stderr}`);
  const [wall, user, system, rssKb] = text.split(' ').map(Number);
  return { seconds: wall!, cpuSeconds: user! + system!, peakRssMb: rssKb! / 1024, startedAt, exitedAt };
}

export interface DetOptions {
  readonly detHome: string;
  readonly scenarios: readonly DetScenario[];
  readonly runs: number;
  /** Forms of the latency scenario (default 20,000) and its per-page latency (default 500 ms). */
  readonly latencyForms: number;
  readonly latencyMs: number;
  /** Forms of the no-latency scenario (default 50,000). */
  readonly cpuForms: number;
  /** Forms of the SQL scenario (default 5,000: DET takes ~2 s per 1,000 forms into PostgreSQL). */
  readonly sqlForms: number;
  /** Forms of the memory scenario (default 1,000,000; ccexport only: DET would take most of an hour). */
  readonly memoryForms: number;
  readonly batchSize: number;
  /** Superuser URL of a PostgreSQL server for the sql scenario. */
  readonly pgUrl?: string;
}

export interface DetComparison {
  readonly scenario: DetScenario;
  readonly label: string;
  readonly forms: number;
  readonly latencyMs: number;
  readonly runs: number;
  readonly det: TimedSummary;
  readonly ccexport: TimedSummary;
  /** DET's median wall ÷ ccexport's, and the same for CPU seconds and CPU per record. */
  readonly wallRatio: number;
  readonly cpuRatio: number;
  /**
   * The records each tool pulled from the stand-in (`recordsPulled`) and DET's CPU per record ÷
   * ccexport's: the CPU goal is per record. Absent for `--help`.
   */
  readonly detRecords?: number;
  readonly ccexportRecords?: number;
  readonly cpuPerRecordRatio?: number;
  /** Rows each tool wrote (the same work), where countable. */
  readonly detRows: number | null;
  readonly ccexportRows: number | null;
  /** uptime's 1-minute load average at the start and end of the scenario. */
  readonly load: readonly [number, number];
}

export interface TimedSummary {
  readonly seconds: number;
  readonly secondsRange: readonly [number, number];
  readonly cpuSeconds: number;
  readonly peakRssMb: number;
  readonly requests: number;
  readonly maxInFlight: number;
  /** Medians of the runs' critical paths (scenarios with requests). */
  readonly path?: CriticalPath;
  readonly samples: readonly TimedRun[];
}

function summarise(samples: readonly TimedRun[]): TimedSummary {
  const seconds = samples.map((s) => s.seconds);
  return {
    seconds: round(median(seconds), 2),
    secondsRange: [round(Math.min(...seconds), 2), round(Math.max(...seconds), 2)],
    cpuSeconds: round(median(samples.map((s) => s.cpuSeconds)), 2),
    peakRssMb: round(Math.max(...samples.map((s) => s.peakRssMb))),
    requests: Math.max(...samples.map((s) => s.requests)),
    maxInFlight: Math.max(...samples.map((s) => s.maxInFlight)),
    ...(samples.some((s) => s.path) ? { path: medianPath(samples.map((s) => s.path)) } : {}),
    samples,
  };
}

/** Data rows in DET's csv zip (one csv per table, a header line each). */
function detCsvRows(zip: string): number {
  const script =
    'import csv,io,sys,zipfile\nz=zipfile.ZipFile(sys.argv[1])\n' +
    'print(sum(max(0,len(list(csv.reader(io.TextIOWrapper(z.open(n),"utf-8"))))-1) for n in z.namelist()))';
  return Number(execFileSync('/usr/bin/python3', ['-c', script, zip]).toString().trim());
}

/** The `rows` figure of ccexport's summary line is not in a file; count the csv rows it wrote instead. */
function ccexportCsvRows(dir: string): number {
  const script =
    'import csv,os,sys\nn=0\nfor d,ds,fs in os.walk(sys.argv[1]):\n' +
    // A table's `deletions/` files list the ids removed from it (archived or deleted in HQ), not rows.
    " ds[:] = [x for x in ds if x != 'deletions']\n" +
    ' for f in fs:\n  if f.endswith(".csv"): n+=max(0,len(list(csv.reader(open(os.path.join(d,f),encoding="utf-8"))))-1)\nprint(n)';
  return Number(execFileSync('/usr/bin/python3', ['-c', script, dir]).toString().trim());
}

/** True when DET can write to PostgreSQL here (its SQL writer needs psycopg2). */
export function detHasPostgres(): boolean {
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import psycopg2, sqlalchemy'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function compare(options: DetOptions, scenario: Exclude<DetScenario, 'help'>): Promise<DetComparison> {
  const forms =
    scenario === 'latency' ? options.latencyForms : scenario === 'cpu' ? options.cpuForms : options.sqlForms;
  const latencyMs = scenario === 'latency' ? options.latencyMs : 0;
  const work = mkdtempSync(join(tmpdir(), 'ccexport-det-'));
  const workbook = join(work, 'workbook.xlsx');
  await writeDetWorkbook(workbook);
  // Two sandbox processes: HQ answers concurrent requests on many workers; one process would serialise them.
  const sandbox = await startSandboxProcess([
    '--seed',
    '1',
    '--forms',
    String(forms),
    '--cases',
    String(Math.round(forms / 4)),
    '--workers',
    '2',
  ]);
  const proxy = await startCountingProxy(sandbox.url, latencyMs);
  const load0 = loadavg()[0] ?? 0;
  const det: TimedRun[] = [];
  const ours: TimedRun[] = [];
  let detRows: number | null = null;
  let ccexportRows: number | null = null;
  // Whether a tool asked for archived forms, read from its requests at the stand-in.
  const archivedAsked = { det: false, ccexport: false };
  let records: { det: number; ccexport: number } | null = null;
  const common = (tool: 'det' | 'ccexport') => [
    '--commcare-hq',
    proxy.url,
    '--project',
    DEFAULT_PROJECT.name,
    '--username',
    DEFAULT_USERNAME,
    '--query',
    workbook,
    '--batch-size',
    String(options.batchSize),
    ...(tool === 'det' ? ['--auth-mode', 'apikey', '--password', DEFAULT_API_KEY, '--no-logfile'] : []),
  ];
  try {
    for (let run = 0; run < options.runs; run++) {
      // Alternate who goes first, so neither always meets the same neighbour on the machine.
      const order: ('det' | 'ccexport')[] = run % 2 === 0 ? ['det', 'ccexport'] : ['ccexport', 'det'];
      for (const tool of order) {
        const dir = mkdtempSync(join(work, `${tool}-`));
        const db = scenario === 'sql' ? await freshDatabase(requirePg(options.pgUrl)) : null;
        try {
          const output =
            scenario === 'sql'
              ? ['--output-format', 'sql', '--output', db!.url]
              : tool === 'det'
                ? ['--output-format', 'csv', '--output', join(dir, 'det.zip')]
                : ['--output-format', 'csv', '--output', join(dir, 'out')];
          proxy.reset();
          const result =
            tool === 'det'
              ? await timed(
                  '/usr/bin/python3',
                  ['-m', 'commcare_export.cli', ...common('det'), ...output],
                  dir,
                  toolEnv({ PYTHONPATH: `${options.detHome}/det:${options.detHome}/jsonpath-ng` }),
                )
              : await timed(
                  process.execPath,
                  [
                    join(ROOT, 'bin/ccexport.js'),
                    'run',
                    ...common('ccexport'),
                    ...output,
                    '--progress',
                    'none',
                  ],
                  dir,
                  toolEnv({ CCEXPORT_API_KEY: DEFAULT_API_KEY }),
                );
          const path = criticalPath(proxy.timeline(), result.startedAt, result.exitedAt);
          const sample: TimedRun = {
            ...untimed(result),
            requests: proxy.requests().length,
            maxInFlight: proxy.maxInFlight(),
            ...(path ? { path } : {}),
          };
          (tool === 'det' ? det : ours).push(sample);
          if (proxy.requests().some((path) => /[?&]include_archived=true(&|$)/.test(path)))
            archivedAsked[tool] = true;
          if (run === 0 && scenario !== 'sql') {
            if (tool === 'det') detRows = detCsvRows(join(dir, 'det.zip'));
            else ccexportRows = ccexportCsvRows(join(dir, 'out'));
          }
        } finally {
          await db?.drop();
          rmSync(dir, { recursive: true, force: true });
        }
      }
    }
    records = {
      det: await recordsPulled(sandbox.url, archivedAsked.det),
      ccexport: await recordsPulled(sandbox.url, archivedAsked.ccexport),
    };
  } finally {
    await proxy.close();
    await sandbox.stop();
    rmSync(work, { recursive: true, force: true });
  }
  const d = summarise(det);
  const c = summarise(ours);
  const label =
    scenario === 'latency'
      ? `${forms.toLocaleString('en-US')} forms, every page answered after ${latencyMs} ms, csv`
      : scenario === 'cpu'
        ? `${forms.toLocaleString('en-US')} forms, no latency, csv`
        : `sql, ${forms.toLocaleString('en-US')} forms, empty database`;
  return {
    scenario,
    label,
    forms,
    latencyMs,
    runs: options.runs,
    det: d,
    ccexport: c,
    wallRatio: round(d.seconds / c.seconds, 2),
    cpuRatio: round(d.cpuSeconds / c.cpuSeconds, 2),
    ...(records
      ? {
          detRecords: records.det,
          ccexportRecords: records.ccexport,
          cpuPerRecordRatio: round(d.cpuSeconds / records.det / (c.cpuSeconds / records.ccexport), 2),
        }
      : {}),
    detRows,
    ccexportRows,
    load: [round(load0, 2), round(loadavg()[0] ?? 0, 2)],
  };
}

/**
 * How many records a tool pulls for the workbook's three sources (`writeDetWorkbook`), as the stand-in
 * counts them (`total_count`): the follow-up and registration forms, with archived ones when the tool
 * asked for them, and every case. ccexport asks for archived forms when it tracks deletions (its default,
 * export/run.ts `pullParams`), to remove their rows; DET never does. Its CPU then covers more records than
 * DET's, so the CPU goal, per record, divides each tool's CPU by its own count.
 */
async function recordsPulled(hq: string, archived: boolean): Promise<number> {
  const count = async (resource: 'form' | 'case', params: Record<string, string>) => {
    const url = new URL(`/a/${DEFAULT_PROJECT.name}/api/v0.5/${resource}/`, hq);
    url.searchParams.set('limit', '1');
    for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
    const answer = await fetch(url, {
      headers: { Authorization: `ApiKey ${DEFAULT_USERNAME}:${DEFAULT_API_KEY}` },
    });
    if (!answer.ok) throw new Error(`the stand-in answered ${answer.status} to ${url.pathname}`);
    return ((await answer.json()) as { meta: { total_count: number } }).meta.total_count;
  };
  let total = await count('case', {});
  for (const xmlns of [FOLLOWUP, REGISTRATION])
    total += await count('form', { 'xmlns.exact': xmlns, ...(archived ? { include_archived: 'true' } : {}) });
  return total;
}

async function compareHelp(options: DetOptions): Promise<DetComparison> {
  const work = mkdtempSync(join(tmpdir(), 'ccexport-det-'));
  const load0 = loadavg()[0] ?? 0;
  const det: TimedRun[] = [];
  const ours: TimedRun[] = [];
  const runs = Math.max(5, options.runs);
  try {
    for (let run = 0; run < runs; run++) {
      const d = await timed(
        '/usr/bin/python3',
        ['-m', 'commcare_export.cli', '--help'],
        work,
        toolEnv({ PYTHONPATH: `${options.detHome}/det:${options.detHome}/jsonpath-ng` }),
      );
      det.push({ ...untimed(d), requests: 0, maxInFlight: 0 });
      const c = await timed(process.execPath, [join(ROOT, 'bin/ccexport.js'), '--help'], work, toolEnv({}));
      ours.push({ ...untimed(c), requests: 0, maxInFlight: 0 });
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const d = summarise(det);
  const c = summarise(ours);
  return {
    scenario: 'help',
    label: '`--help` start-up',
    forms: 0,
    latencyMs: 0,
    runs,
    det: d,
    ccexport: c,
    wallRatio: round(d.seconds / c.seconds, 2),
    cpuRatio: round(d.cpuSeconds / c.cpuSeconds, 2),
    detRows: null,
    ccexportRows: null,
    load: [round(load0, 2), round(loadavg()[0] ?? 0, 2)],
  };
}

function requirePg(url: string | undefined): string {
  if (!url) throw new Error('the sql scenario needs a PostgreSQL URL');
  return url;
}

/** Runs the chosen scenarios but `memory`, one after another, each interleaving DET and ccexport. */
export async function benchDet(options: DetOptions): Promise<DetComparison[]> {
  const out: DetComparison[] = [];
  for (const scenario of options.scenarios) {
    if (scenario === 'memory') continue;
    if (scenario === 'help') out.push(await compareHelp(options));
    else out.push(await compare(options, scenario));
  }
  return out;
}

/**
 * The `memory` scenario: ccexport runs of the same workbook to csv, at each resource's default page;
 * medians, with the range of the peaks (a peak moves by several MB from run to run with what else the
 * machine runs while the pages arrive).
 */
export interface MemoryRun {
  readonly forms: number;
  readonly runs: number;
  readonly seconds: number;
  readonly cpuSeconds: number;
  readonly peakRssMb: number;
  readonly peakRssMbRange: readonly [number, number];
  readonly load: readonly [number, number];
}

/**
 * Peak memory on a large project (issue 15: "flat in project size"): ccexport alone, `runs` times, as a
 * user runs it (no `--batch-size`), against a sandbox of `memoryForms` forms. DET is left out: at its
 * speed here a million forms would take most of an hour.
 */
export async function benchMemory(options: DetOptions): Promise<MemoryRun> {
  const forms = options.memoryForms;
  const work = mkdtempSync(join(tmpdir(), 'ccexport-det-'));
  const workbook = join(work, 'workbook.xlsx');
  await writeDetWorkbook(workbook);
  const sandbox = await startSandboxProcess([
    ...['--seed', '1', '--forms', String(forms), '--cases', String(Math.round(forms / 4)), '--workers', '2'],
  ]);
  const load0 = loadavg()[0] ?? 0;
  const runs: { seconds: number; cpuSeconds: number; peakRssMb: number }[] = [];
  try {
    for (let run = 0; run < options.runs; run++) {
      rmSync(join(work, 'out'), { recursive: true, force: true });
      runs.push(await memoryRun(work, workbook, sandbox.url));
    }
    const peaks = runs.map((r) => r.peakRssMb);
    return {
      forms,
      runs: runs.length,
      seconds: round(median(runs.map((r) => r.seconds)), 2),
      cpuSeconds: round(median(runs.map((r) => r.cpuSeconds)), 2),
      peakRssMb: round(median(peaks)),
      peakRssMbRange: [round(Math.min(...peaks)), round(Math.max(...peaks))],
      load: [round(load0, 2), round(loadavg()[0] ?? 0, 2)],
    };
  } finally {
    await sandbox.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

async function memoryRun(work: string, workbook: string, hq: string) {
  return await timed(
    process.execPath,
    [
      ...[join(ROOT, 'bin/ccexport.js'), 'run', '--commcare-hq', hq, '--project', DEFAULT_PROJECT.name],
      ...['--username', DEFAULT_USERNAME, '--query', workbook, '--output-format', 'csv'],
      ...['--output', join(work, 'out'), '--progress', 'none'],
    ],
    work,
    toolEnv({ CCEXPORT_API_KEY: DEFAULT_API_KEY }),
  );
}

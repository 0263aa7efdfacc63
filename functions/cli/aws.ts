/**
 * `ccexport trigger <export>` and `ccexport runs <export>`: start a deployed export now, and list its
 * recent runs, through the export's Step Functions state machine.
 *
 * The state machine ARN comes from `--state-machine-arn`, else from the outputs file `cdk deploy
 * --outputs-file cdk-outputs.json` writes, else from the state machine's fixed name
 * (`<stack>-<export>`) via ListStateMachines.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  DescribeExecutionCommand,
  type DescribeExecutionCommandOutput,
  ListExecutionsCommand,
  ListStateMachinesCommand,
  type SFNClient,
  StartExecutionCommand,
} from '@aws-sdk/client-sfn';
import type { ExportRunInput, HqConfigRecord } from '../config/job';
import { stateMachineName, stateMachineOutputKey } from '../config/naming';
import { describeColumnChange } from '../export/config-changes';
import { type FlagSpec, formatHelp, parseArgs, UsageError } from './args';

/** The part of the process the commands use. */
export interface AwsCommandIO {
  readonly stdout: { write(text: string): unknown };
  readonly stderr: { write(text: string): unknown };
  readonly cwd: string;
}

export interface AwsCommandDeps {
  /** The Step Functions client (injected; tests pass a mocked one). */
  readonly sfn: Pick<SFNClient, 'send'>;
  /** Reads a file, or returns undefined when it does not exist. */
  readonly readFile?: (path: string) => string | undefined;
  readonly now?: () => Date;
}

/** The state machine of an export could not be found. */
export class StateMachineNotFoundError extends Error {
  override readonly name = 'StateMachineNotFoundError';
}

const COMMON_FLAGS: readonly FlagSpec[] = [
  { name: 'state-machine-arn', kind: 'string', help: "The export's state machine ARN (skips the lookup)" },
  {
    name: 'stack',
    kind: 'string',
    help: "Stack name (the config's stackName)",
    defaultText: 'CommCareExports',
  },
  {
    name: 'outputs-file',
    kind: 'string',
    help: 'Outputs file written by `cdk deploy --outputs-file`',
    defaultText: 'cdk-outputs.json',
  },
  { name: 'help', kind: 'boolean', help: 'Show this help' },
];

const TRIGGER_FLAGS: readonly FlagSpec[] = [
  ...COMMON_FLAGS,
  {
    name: 'name',
    kind: 'string',
    help: 'Execution name (unique per state machine for 90 days)',
    defaultText: 'manual-<time>',
  },
];

const RUNS_FLAGS: readonly FlagSpec[] = [
  ...COMMON_FLAGS,
  { name: 'limit', kind: 'string', help: 'How many recent executions to show (1-100)', defaultText: '10' },
  { name: 'json', kind: 'boolean', help: 'Print JSON lines instead of a table' },
];

function defaultReadFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

function exportNameOf(positionals: readonly string[], command: string): string {
  const [exportName, ...extra] = positionals;
  if (!exportName)
    throw new UsageError(`${command}: expected an export name, e.g. "ccexport ${command} forms-daily"`);
  if (extra.length > 0)
    throw new UsageError(`${command}: unexpected arguments ${extra.join(' ')}; expected one export name`);
  return exportName;
}

/** Finds the ARN: the flag, the outputs file, then the fixed name among the account's state machines. */
export async function findStateMachineArn(
  exportName: string,
  flags: { arn?: string; stack: string; outputsFile: string },
  deps: AwsCommandDeps,
): Promise<string> {
  if (flags.arn) return flags.arn;

  const text = (deps.readFile ?? defaultReadFile)(flags.outputsFile);
  if (text !== undefined) {
    let outputs: Record<string, Record<string, string>>;
    try {
      outputs = JSON.parse(text) as Record<string, Record<string, string>>;
    } catch (error) {
      throw new UsageError(
        `${flags.outputsFile} is not JSON; expected the file \`cdk deploy --outputs-file\` writes`,
        {
          cause: error,
        },
      );
    }
    const key = stateMachineOutputKey(exportName);
    const arn = outputs[flags.stack]?.[key];
    if (arn) return arn;
  }

  const wanted = stateMachineName(flags.stack, exportName);
  let nextToken: string | undefined;
  do {
    const page = await deps.sfn.send(new ListStateMachinesCommand({ nextToken, maxResults: 1000 }));
    const match = page.stateMachines?.find((m) => m.name === wanted);
    if (match?.stateMachineArn) return match.stateMachineArn;
    nextToken = page.nextToken;
  } while (nextToken);
  throw new StateMachineNotFoundError(
    `No state machine named ${wanted} in this account and region (export ${JSON.stringify(exportName)}, stack ${flags.stack}); ` +
      'check the export name, --stack, AWS_REGION/AWS_PROFILE, or pass --state-machine-arn',
  );
}

function commonFlags(flags: Record<string, unknown>, cwd: string) {
  return {
    arn: flags['state-machine-arn'] as string | undefined,
    stack: (flags.stack as string | undefined) ?? 'CommCareExports',
    outputsFile: resolve(cwd, (flags['outputs-file'] as string | undefined) ?? 'cdk-outputs.json'),
  };
}

/** `ccexport trigger <export>`: starts a run now with the jobs the export was deployed with. */
export async function runTriggerCommand(
  argv: string[],
  io: AwsCommandIO,
  deps: AwsCommandDeps,
): Promise<number> {
  const { flags, positionals } = parseArgs(argv, TRIGGER_FLAGS);
  if (flags.help) {
    io.stdout.write(formatHelp('ccexport trigger EXPORT: start a deployed export now', TRIGGER_FLAGS));
    return 0;
  }
  const exportName = exportNameOf(positionals, 'trigger');
  const arn = await findStateMachineArn(exportName, commonFlags(flags, io.cwd), deps);
  const now = (deps.now ?? (() => new Date()))();
  const name = (flags.name as string | undefined) ?? `manual-${now.toISOString().replace(/[:.]/g, '-')}`;
  // `{}` makes the state machine use the jobs it was deployed with (all of the export's projects).
  const input: ExportRunInput = {};
  const started = await deps.sfn.send(
    new StartExecutionCommand({ stateMachineArn: arn, name, input: JSON.stringify(input) }),
  );
  io.stdout.write(`Started ${exportName}: ${started.executionArn}\n`);
  io.stdout.write(`Follow it with: ccexport runs ${exportName}\n`);
  return 0;
}

/** One execution as `ccexport runs` shows it. */
export interface RunSummary {
  readonly name: string;
  /** Step Functions status, or CONTINUED for an execution that handed over to a new one. */
  readonly status: string;
  readonly startedAt: string;
  readonly durationSeconds: number | null;
  /** Rows written by the run's projects (as far as this execution knows), or null when unknown. */
  readonly rows: number | null;
  readonly error?: string;
  /**
   * An HQ export's config per project, as the run pinned it: its fingerprint, the previous run's when
   * it differs, and the columns that appeared or disappeared. Empty for a query file, or when unknown
   * (a failed execution has no output).
   */
  readonly hqConfigs: readonly ({ readonly project: string } & HqConfigRecord)[];
}

interface ExecutionOutput {
  slices?: { rows?: unknown; job?: { project?: unknown }; hqConfig?: unknown }[];
  pending?: unknown[];
}

/** A project's config record from an execution's output, or null when it has none (a file, an older run). */
function configRecordOf(slice: NonNullable<ExecutionOutput['slices']>[number]): HqConfigRecord | null {
  const record = slice.hqConfig as Partial<HqConfigRecord> | null | undefined;
  if (!record || typeof record.id !== 'string' || typeof record.fingerprint !== 'string') return null;
  return {
    id: record.id,
    name: typeof record.name === 'string' ? record.name : record.id,
    fingerprint: record.fingerprint,
    previousFingerprint: typeof record.previousFingerprint === 'string' ? record.previousFingerprint : null,
    columnChanges: Array.isArray(record.columnChanges) ? record.columnChanges : [],
  };
}

export function summarizeExecution(d: DescribeExecutionCommandOutput, now: Date): RunSummary {
  let rows: number | null = null;
  let continued = false;
  const hqConfigs: ({ project: string } & HqConfigRecord)[] = [];
  if (d.output) {
    try {
      const out = JSON.parse(d.output) as ExecutionOutput;
      if (Array.isArray(out.slices)) {
        rows = out.slices.reduce((sum, s) => sum + (typeof s.rows === 'number' ? s.rows : 0), 0);
        for (const slice of out.slices) {
          const record = configRecordOf(slice);
          const project = typeof slice.job?.project === 'string' ? slice.job.project : '?';
          if (record) hqConfigs.push({ project, ...record });
        }
      }
      continued = Array.isArray(out.pending) && out.pending.length > 0;
    } catch {
      // An output that is not ours (or truncated): show the run without rows.
    }
  }
  const start = d.startDate ?? now;
  const stop = d.stopDate ?? (d.status === 'RUNNING' ? now : undefined);
  return {
    name: d.name ?? '?',
    status: d.status === 'SUCCEEDED' && continued ? 'CONTINUED' : (d.status ?? 'UNKNOWN'),
    startedAt: start.toISOString(),
    durationSeconds: stop ? Math.round((stop.getTime() - start.getTime()) / 1000) : null,
    rows,
    ...(d.error ? { error: d.cause ? `${d.error}: ${d.cause.slice(0, 200)}` : d.error } : {}),
    hqConfigs,
  };
}

/** Fingerprints are MD5s; their first 8 characters tell versions apart in a table. */
const shortFingerprint = (fingerprint: string) => fingerprint.slice(0, 8);

/**
 * The CONFIG cell: the fingerprint of the HQ export's config the run used, `<new> (was <old>)` when it
 * changed since the previous run; one per distinct config when projects differ; `-` for a query file.
 */
export function configCell(run: RunSummary): string {
  const cells = new Set(
    run.hqConfigs.map((c) =>
      c.previousFingerprint !== null && c.previousFingerprint !== c.fingerprint
        ? `${shortFingerprint(c.fingerprint)} (was ${shortFingerprint(c.previousFingerprint)})`
        : shortFingerprint(c.fingerprint),
    ),
  );
  return cells.size === 0 ? '-' : [...cells].join(', ');
}

function formatDuration(seconds: number | null): string {
  if (seconds === null) return '-';
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return h > 0
    ? `${h}h${String(m).padStart(2, '0')}m`
    : m > 0
      ? `${m}m${String(s).padStart(2, '0')}s`
      : `${s}s`;
}

/** `ccexport runs <export>`: recent executions with status, rows and duration. */
export async function runRunsCommand(
  argv: string[],
  io: AwsCommandIO,
  deps: AwsCommandDeps,
): Promise<number> {
  const { flags, positionals } = parseArgs(argv, RUNS_FLAGS);
  if (flags.help) {
    io.stdout.write(formatHelp('ccexport runs EXPORT: recent runs of a deployed export', RUNS_FLAGS));
    return 0;
  }
  const exportName = exportNameOf(positionals, 'runs');
  const limit = Number((flags.limit as string | undefined) ?? '10');
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
    throw new UsageError(`--limit ${String(flags.limit)}: expected a whole number from 1 to 100`);
  }
  const arn = await findStateMachineArn(exportName, commonFlags(flags, io.cwd), deps);
  const now = (deps.now ?? (() => new Date()))();

  const listed = await deps.sfn.send(new ListExecutionsCommand({ stateMachineArn: arn, maxResults: limit }));
  const executions = listed.executions ?? [];
  const runs = await Promise.all(
    executions.map(async (e) =>
      summarizeExecution(
        await deps.sfn.send(new DescribeExecutionCommand({ executionArn: e.executionArn })),
        now,
      ),
    ),
  );

  if (flags.json) {
    for (const run of runs) io.stdout.write(`${JSON.stringify(run)}\n`);
    return 0;
  }
  if (runs.length === 0) {
    io.stdout.write(`No runs of ${exportName} yet. Start one with: ccexport trigger ${exportName}\n`);
    return 0;
  }
  const rows = [
    ['STARTED (UTC)', 'STATUS', 'DURATION', 'ROWS', 'CONFIG', 'NAME'],
    ...runs.map((r) => [
      r.startedAt.replace('T', ' ').slice(0, 19),
      r.status,
      formatDuration(r.durationSeconds),
      r.rows === null ? '-' : String(r.rows),
      configCell(r),
      r.name,
    ]),
  ];
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((row) => (row[i] as string).length))) ?? [];
  for (const row of rows) {
    io.stdout.write(
      `${row.map((cell, i) => (i < row.length - 1 ? cell.padEnd(widths[i] as number) : cell)).join('  ')}\n`,
    );
  }
  for (const r of runs.filter((r) => r.error)) io.stdout.write(`${r.name}: ${r.error}\n`);
  for (const r of runs)
    for (const c of r.hqConfigs)
      for (const change of c.columnChanges)
        io.stdout.write(`${r.name}: ${c.project}: ${describeColumnChange(change)}\n`);
  return 0;
}

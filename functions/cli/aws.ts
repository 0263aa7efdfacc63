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
import type { ExportRunInput } from '../config/job';
import { stateMachineName, stateMachineOutputKey } from '../config/naming';
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
}

interface ExecutionOutput {
  slices?: { rows?: unknown }[];
  pending?: unknown[];
}

export function summarizeExecution(d: DescribeExecutionCommandOutput, now: Date): RunSummary {
  let rows: number | null = null;
  let continued = false;
  if (d.output) {
    try {
      const out = JSON.parse(d.output) as ExecutionOutput;
      if (Array.isArray(out.slices)) {
        rows = out.slices.reduce((sum, s) => sum + (typeof s.rows === 'number' ? s.rows : 0), 0);
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
  };
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
    ['STARTED (UTC)', 'STATUS', 'DURATION', 'ROWS', 'NAME'],
    ...runs.map((r) => [
      r.startedAt.replace('T', ' ').slice(0, 19),
      r.status,
      formatDuration(r.durationSeconds),
      r.rows === null ? '-' : String(r.rows),
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
  return 0;
}

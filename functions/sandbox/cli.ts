/**
 * `ccexport sandbox`: runs the sandbox until SIGINT/SIGTERM (or `io.signal` aborts, for tests).
 *
 * `--workers N` serves from N processes sharing one port (`node:cluster`), as HQ serves concurrent
 * requests on many web workers: one process generates one page at a time, so a parallel client would
 * otherwise measure the sandbox's single core instead of itself. Every worker holds the same
 * deterministic data. The fault counters ("every nth request") and the request log are per worker, so
 * with N workers each nth request *of a worker* is the faulty one; across the server the share is the same.
 */
import cluster from 'node:cluster';
import type { SandboxProject } from './records';
import {
  DEFAULT_PROJECT,
  DEFAULT_USERNAME,
  type SandboxFaults,
  type SandboxOptions,
  startSandbox,
} from './server';

export class SandboxUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SandboxUsageError';
  }
}

export interface SandboxCommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Stops the server when aborted (tests); SIGINT/SIGTERM always do. */
  signal?: AbortSignal;
}

export const SANDBOX_USAGE = `Usage: ccexport sandbox [options]
  --host <addr>                 listen address (default 127.0.0.1)
  --port <n>                    port (default 0: a free port)
  --seed <n>                    data seed (default 1)
  --project <name>              a project (repeatable; default: demo)
  --forms <n> --cases <n>       records per project (default 2500 forms, 600 cases)
  --users <n>                   mobile workers per project (default 25)
  --reindexed-share <0..0.5>    share of records re-indexed later (default 0.05)
  --tie-run <n>                 records sharing one indexed_on (default 3)
  --live-reindex-after <n>      hide some re-index events until n data requests were served
  --latency-ms <n>              delay every data request
  --throttle-every <n>          every nth data request answers 429
  --retry-after <s|none>        Retry-After on every 429 (default: only case v2 sends 1)
  --server-error-every <n>      every nth data request starts a burst of 5xx
  --server-error-burst <n>      consecutive 5xx per burst (default 1)
  --reset-every <n>             destroy the socket mid-body every nth data request
  --truncate-every <n>          send half the JSON every nth data request
  --broken-item-every <n>       every nth data request's last record is not JSON (a letter missing)
  --hang-every <n>              never answer every nth data request
  --workers <n>                 serve from n processes on one port (default 1; fault counters per worker)
The default user and its API key are documented in functions/sandbox/README.md.
`;

function intArg(flag: string, value: string | undefined, min = 0): number {
  if (value === undefined || !/^\d+$/.test(value) || Number(value) < min)
    throw new SandboxUsageError(`${flag} expects an integer >= ${min}; got '${value ?? ''}'`);
  return Number(value);
}

export interface SandboxCommandOptions extends SandboxOptions {
  /** Processes serving the port (see the file header). */
  workers?: number;
}

export function parseSandboxArgs(argv: readonly string[]): SandboxCommandOptions {
  const names: string[] = [];
  let forms = DEFAULT_PROJECT.forms;
  let cases = DEFAULT_PROJECT.cases;
  let users: number | undefined;
  let share: number | undefined;
  let tieRun: number | undefined;
  const faults: SandboxFaults = {};
  const options: SandboxCommandOptions = {};
  for (let k = 0; k < argv.length; k++) {
    const flag = argv[k]!;
    const value = argv[k + 1];
    k++;
    switch (flag) {
      case '--host':
        if (!value) throw new SandboxUsageError('--host expects an address');
        options.host = value;
        break;
      case '--port':
        options.port = intArg(flag, value);
        break;
      case '--seed':
        options.seed = intArg(flag, value);
        break;
      case '--project':
        if (!value || !/^[a-z0-9-]+$/.test(value))
          throw new SandboxUsageError(`--project expects a project name (a-z, 0-9, -); got '${value ?? ''}'`);
        names.push(value);
        break;
      case '--forms':
        forms = intArg(flag, value);
        break;
      case '--cases':
        cases = intArg(flag, value);
        break;
      case '--users':
        users = intArg(flag, value, 1);
        break;
      case '--reindexed-share':
        share = Number(value);
        if (value === undefined || Number.isNaN(share) || share < 0 || share > 0.5)
          throw new SandboxUsageError(
            `--reindexed-share expects a number from 0 to 0.5; got '${value ?? ''}'`,
          );
        break;
      case '--tie-run':
        tieRun = intArg(flag, value, 1);
        break;
      case '--live-reindex-after':
        options.liveReindexAfterRequests = intArg(flag, value);
        break;
      case '--latency-ms':
        faults.latencyMs = intArg(flag, value);
        break;
      case '--throttle-every':
        faults.throttleEvery = intArg(flag, value, 1);
        break;
      case '--retry-after':
        faults.retryAfterSeconds = value === 'none' ? null : intArg(flag, value);
        break;
      case '--server-error-every':
        faults.serverErrorEvery = intArg(flag, value, 1);
        break;
      case '--server-error-burst':
        faults.serverErrorBurst = intArg(flag, value, 1);
        break;
      case '--reset-every':
        faults.resetEvery = intArg(flag, value, 1);
        break;
      case '--truncate-every':
        faults.truncateEvery = intArg(flag, value, 1);
        break;
      case '--broken-item-every':
        faults.brokenItemEvery = intArg(flag, value, 1);
        break;
      case '--hang-every':
        faults.hangEvery = intArg(flag, value, 1);
        break;
      case '--workers':
        options.workers = intArg(flag, value, 1);
        break;
      default:
        throw new SandboxUsageError(`Unknown option '${flag}'`);
    }
  }
  const projects: SandboxProject[] = (names.length ? names : ['demo']).map((name) => ({
    ...DEFAULT_PROJECT,
    name,
    forms,
    cases,
    ...(users !== undefined ? { mobileUsers: users } : {}),
    ...(share !== undefined ? { reindexedShare: share } : {}),
    ...(tieRun !== undefined ? { tieRun } : {}),
  }));
  options.projects = projects;
  if (Object.keys(faults).length) options.faults = faults;
  return options;
}

export async function runSandboxCommand(argv: string[], io: SandboxCommandIo): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(SANDBOX_USAGE);
    return 0;
  }
  let options: SandboxCommandOptions;
  try {
    options = parseSandboxArgs(argv);
  } catch (error) {
    if (!(error instanceof SandboxUsageError)) throw error;
    io.stderr.write(`${error.message}\n${SANDBOX_USAGE}`);
    return 2;
  }
  const { workers = 1, ...sandboxOptions } = options;
  const names = (options.projects ?? []).map((p) => p.name).join(', ');
  const announce = (url: string) =>
    io.stdout.write(
      `CommCare sandbox listening on ${url} (projects: ${names}; user ${DEFAULT_USERNAME}; key: see functions/sandbox/README.md)` +
        `${workers > 1 ? ` with ${workers} worker processes` : ''}\n`,
    );
  if (workers > 1 && cluster.isPrimary) return await runPrimary(workers, announce, io.signal);
  const sandbox = await startSandbox(sandboxOptions);
  // A cluster worker tells the primary, which announces the server once every worker listens.
  if (cluster.isWorker) process.send?.({ sandboxListening: sandbox.url });
  else announce(sandbox.url);
  await stopped(io.signal);
  await sandbox.close();
  // The IPC channel to the primary would keep a worker alive after its server has closed.
  cluster.worker?.disconnect();
  return 0;
}

/** Resolves on SIGINT, SIGTERM or `signal` aborting. */
async function stopped(signal: AbortSignal | undefined): Promise<void> {
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      signal?.removeEventListener('abort', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    if (signal?.aborted) stop();
    else signal?.addEventListener('abort', stop);
  });
}

/** Forks `count` workers running this same command, announces the shared port, stops them on a signal. */
async function runPrimary(
  count: number,
  announce: (url: string) => void,
  signal: AbortSignal | undefined,
): Promise<number> {
  const workers = Array.from({ length: count }, () => cluster.fork());
  const exits = workers.map(
    (w) => new Promise<number | null>((resolve) => w.on('exit', (code) => resolve(code))),
  );
  const urls = await Promise.race([
    Promise.all(
      workers.map(
        (w) =>
          new Promise<string>((resolve) =>
            w.on('message', (m: { sandboxListening?: string }) => {
              if (typeof m?.sandboxListening === 'string') resolve(m.sandboxListening);
            }),
          ),
      ),
    ),
    Promise.race(exits).then((code) => {
      throw new Error(`a sandbox worker exited before listening (exit code ${code})`);
    }),
  ]);
  announce(urls[0]!);
  await Promise.race([stopped(signal), Promise.race(exits)]);
  // A signal, not `worker.kill()`: that disconnects first and waits for the server to drain.
  for (const w of workers) if (!w.isDead()) w.process.kill('SIGTERM');
  const codes = await Promise.all(exits);
  return codes.every((c) => c === 0 || c === null) ? 0 : 1;
}

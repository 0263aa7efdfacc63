/** Shared pieces of the benchmark scripts: child processes, free ports, a sandbox in its own process. */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface SandboxProcess {
  readonly url: string;
  /** CPU seconds (user + system) the sandbox process has used so far. */
  cpuSeconds(): number;
  stop(): Promise<void>;
}

/** User + system CPU seconds of a process, from /proc (Linux); 0 where /proc is missing. */
export function processCpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    // Fields after the ")" of the command name: utime and stime are the 12th and 13th, in clock ticks.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/**
 * Builds the `ccexport` bundle (scripts/build-cli.mjs, what `npm ci` runs as `prepare`). bin/ccexport.js
 * runs the bundle only while it is newer than every source; after a `git pull` or an edit it compiles
 * the sources with tsx at each start instead, and a benchmark would then time tsx's compiling (its CPU, and
 * 145 MB instead of 101 MB peak RSS in one 50k-form run) and a stand-in slowed the same way, not
 * what `npm ci` installs. So every bench run builds first.
 */
export function buildCommand(): void {
  execFileSync(process.execPath, ['scripts/build-cli.mjs'], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

/** Starts `ccexport sandbox` in its own process, so server and client each get a core. */
export async function startSandboxProcess(args: readonly string[]): Promise<SandboxProcess> {
  const port = await freePort();
  const child = spawn(process.execPath, ['bin/ccexport.js', 'sandbox', '--port', String(port), ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    let text = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes('listening')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`sandbox exited with ${code}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    cpuSeconds: () => processCpuSeconds(child.pid),
    stop: () => stopChild(child),
  };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

/** Runs a node script with tsx and returns its last stdout line parsed as JSON. */
export async function runNodeScript<T>(
  script: string,
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<T> {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let text = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  const last = text.trim().split('\n').pop() ?? '';
  if (code !== 0) throw new Error(`${script} exited with ${code}: ${text.slice(-2000)}`);
  return JSON.parse(last) as T;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** Median and spread of a set of samples (the spread shows how noisy the shared machine was). */
export function quantiles(values: readonly number[]): { median: number; min: number; max: number } {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

export function round(value: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** `ccexport` and other commands run as child processes, the way a user types them. */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The environment of a user's shell for a command started with no other settings: PATH, HOME and, when
 * set, TMPDIR (the test run's own temporary folder, see global-setup.ts), so what a killed command leaves
 * behind in its temporary folder goes with the run.
 */
export function shellEnv(): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '/tmp',
    ...(process.env.TMPDIR ? { TMPDIR: process.env.TMPDIR } : {}),
  };
}

export interface CliResult {
  readonly code: number | null;
  readonly out: string;
  readonly err: string;
}

/** Runs a command to its end, collecting its output. */
export function runCommand(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  cwd = REPO_ROOT,
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, [...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

/** `ccexport` as a user types it. */
export function ccexport(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
  return runCommand(process.execPath, [join(REPO_ROOT, 'bin', 'ccexport.js'), ...args], env);
}

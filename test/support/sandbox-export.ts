/**
 * Exports from the sandbox HQ the way the CLI tests run them: a sandbox and a scratch folder for a test
 * file, the arguments of one export of the demo query, and a `ccexport` run in this process (quicker
 * than a child process; `cli-process.ts` runs it as a user types it).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import { DEMO_QUERY } from '../../functions/cli/demo-command';
import { main } from '../../functions/cli/main';
import { type RunningSandbox, type SandboxOptions, startSandbox } from '../../functions/sandbox';
import { captureIO } from '../cli/capture';

export interface SandboxAndFolder {
  /** The running sandbox HQ (set once `beforeAll` has run). */
  readonly sandbox: RunningSandbox;
  /** A scratch folder of the test file's own. */
  readonly work: string;
}

/** Starts a sandbox HQ and makes a scratch folder before the file's tests; closes and removes them after. */
export function sandboxAndFolder(options: SandboxOptions, folderPrefix: string): SandboxAndFolder {
  const state: { sandbox?: RunningSandbox; work?: string } = {};
  beforeAll(async () => {
    state.sandbox = await startSandbox(options);
    state.work = mkdtempSync(join(tmpdir(), folderPrefix));
  });
  afterAll(async () => {
    await state.sandbox?.close();
    if (state.work) rmSync(state.work, { recursive: true, force: true });
  });
  return {
    get sandbox() {
      if (!state.sandbox) throw new Error('the sandbox starts in beforeAll');
      return state.sandbox;
    },
    get work() {
      if (!state.work) throw new Error('the scratch folder is made in beforeAll');
      return state.work;
    },
  };
}

/** What one export reads and how it reports. */
export interface SandboxExport {
  /** The HQ's address. */
  readonly url: string;
  readonly project: string;
  /** The web user whose API key the run is given. */
  readonly username: string;
  /** The query file. @default the demo query */
  readonly query?: string;
  /** `--progress`. @default 'none' */
  readonly progress?: string;
}

/** `ccexport`'s arguments for one export into `output`; `extra` last. */
export function sandboxExportArgs(
  source: SandboxExport,
  format: string,
  output: string,
  ...extra: string[]
): string[] {
  return [
    '--project',
    source.project,
    '--commcare-hq',
    source.url,
    '--username',
    source.username,
    '--query',
    source.query ?? DEMO_QUERY,
    '--output-format',
    format,
    '--output',
    output,
    '--progress',
    source.progress ?? 'none',
    ...extra,
  ];
}

/** What a `ccexport` run in this process ended with. */
export interface InProcessRun {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/**
 * Runs `ccexport` in this process with `env` (the API key, say). `env` is also set in `process.env` for
 * the run, where the AWS SDK reads its endpoint and credentials.
 */
export async function runInProcess(argv: string[], env: Record<string, string> = {}): Promise<InProcessRun> {
  const io = captureIO(env);
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    const code = await main(argv, io);
    return { code, out: io.out(), err: io.err() };
  } finally {
    process.env = saved;
  }
}

/** `runInProcess` that expects the run to succeed; its output. */
export async function ccexportInProcess(argv: string[], env: Record<string, string> = {}): Promise<string> {
  const run = await runInProcess(argv, env);
  expect(run.code, run.err).toBe(0);
  return run.out;
}

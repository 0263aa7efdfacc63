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
import { type CapturedIO, captureIO } from '../cli/capture';

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

/** Where an export reads from: the HQ's address, the project and the web user. */
export interface ExportSource {
  readonly url: string;
  readonly project: string;
  readonly username: string;
}

/** `ccexport`'s arguments for one export of the demo query into `output`, progress off; `extra` last. */
export function sandboxExportArgs(
  source: ExportSource,
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
    DEMO_QUERY,
    '--output-format',
    format,
    '--output',
    output,
    '--progress',
    'none',
    ...extra,
  ];
}

/**
 * Runs `ccexport` in this process with `env` (the API key, say) and expects it to succeed. `env` is also
 * set in `process.env` for the run, where the AWS SDK reads its endpoint and credentials.
 */
export async function ccexportInProcess(
  argv: string[],
  env: Record<string, string> = {},
): Promise<CapturedIO> {
  const io = captureIO(env);
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    const code = await main(argv, io);
    expect(code, io.err()).toBe(0);
  } finally {
    process.env = saved;
  }
  return io;
}

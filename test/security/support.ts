/**
 * Shared by the key-leak tests: a sandbox whose only key is a distinctive canary, an export with every
 * retryable HQ fault on, and everything an export wrote as searchable text.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ExcelJS from 'exceljs';
import { afterAll, beforeAll } from 'vitest';
import { main } from '../../functions/cli/main';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { CHAOS_USER, HOUSEHOLD_QUERY } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { filesUnder } from '../hostile/support';

/** A made-up sandbox key with a distinctive shape, so any copy of it is found. */
export const KEY = 'SECRETKEY-0b7e1d9c-4a2f-leak-canary';
const PROJECT = 'secure';

/** Every retryable fault at once; hangs are left out because the CLI's timeout is 60 s. */
const EVERY_FAULT = {
  throttleEvery: 2,
  retryAfterSeconds: 0,
  serverErrorEvery: 3,
  serverErrorBurst: 1,
  truncateEvery: 5,
  resetEvery: 7,
};

export interface LeakTestBed {
  readonly sandbox: () => RunningSandbox;
  /** A fresh folder under the test's work directory. */
  readonly folder: (name: string) => string;
  /** `ccexport run` of the household query with the key on the command line, --verbose, every fault on. */
  readonly exportWithFaults: (format: string, output: string) => Promise<{ code: number; text: string }>;
}

/** Registers the sandbox and work folder for the calling test file. */
export function useLeakTestBed(): LeakTestBed {
  let sandbox: RunningSandbox | undefined;
  let work = '';
  beforeAll(async () => {
    sandbox = await startSandbox({
      seed: 9,
      projects: [{ name: PROJECT, forms: 60, cases: 10 }],
      credentials: [{ username: CHAOS_USER, apiKey: KEY }],
    });
    work = mkdtempSync(join(tmpdir(), 'ccexport-security-'));
  });
  afterAll(async () => {
    await sandbox?.close();
    rmSync(work, { recursive: true, force: true });
  });
  const current = () => {
    if (!sandbox) throw new Error('the sandbox starts in beforeAll');
    return sandbox;
  };
  return {
    sandbox: current,
    folder: (name) => join(work, name),
    async exportWithFaults(format, output) {
      const io = captureIO();
      const s = current();
      s.setFaults(EVERY_FAULT);
      try {
        const args = ['--project', PROJECT, '--commcare-hq', s.url, '--username', CHAOS_USER];
        args.push('--password', KEY, '--verbose', '--query', HOUSEHOLD_QUERY, '--batch-size', '5');
        const code = await main([...args, '--output-format', format, '--output', output], io);
        return { code, text: io.out() + io.err() };
      } finally {
        s.setFaults({});
      }
    },
  };
}

/** Raw bytes of every file, plus the cell text of workbooks (their zip entries are compressed). */
export async function everythingWritten(folder: string): Promise<string> {
  let text = '';
  for (const file of filesUnder(folder)) {
    const bytes = readFileSync(file);
    text += bytes.toString('latin1');
    if (file.endsWith('.xlsx')) {
      const wb = new ExcelJS.Workbook();
      await wb.xlsx.load(bytes as unknown as ArrayBuffer);
      wb.eachSheet((ws) =>
        ws.eachRow((row) => {
          text += JSON.stringify(row.values);
        }),
      );
    }
  }
  return text;
}

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ExcelJS from 'exceljs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { CHAOS_USER, dropDatabase, HOUSEHOLD_QUERY } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { filesUnder } from '../hostile/support';

/** A made-up sandbox key with a distinctive shape, so any copy of it is found. */
const KEY = 'SECRETKEY-0b7e1d9c-4a2f-leak-canary';
const PROJECT = 'secure';
let sandbox: RunningSandbox;
let work: string;
const databases: string[] = [];

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 9,
    projects: [{ name: PROJECT, forms: 60, cases: 10 }],
    credentials: [{ username: CHAOS_USER, apiKey: KEY }],
  });
  work = mkdtempSync(join(tmpdir(), 'ccexport-security-'));
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
  for (const name of databases) await dropDatabase(inject('pgUrl'), name).catch(() => undefined);
});

/** Every retryable fault at once; hangs are left out because the CLI's timeout is 60 s. */
const EVERY_FAULT = {
  throttleEvery: 2,
  retryAfterSeconds: 0,
  serverErrorEvery: 3,
  serverErrorBurst: 1,
  truncateEvery: 5,
  resetEvery: 7,
};

async function exportWithFaults(format: string, output: string) {
  const io = captureIO();
  sandbox.setFaults(EVERY_FAULT);
  try {
    const code = await main(
      [
        '--project',
        PROJECT,
        '--commcare-hq',
        sandbox.url,
        '--username',
        CHAOS_USER,
        '--password',
        KEY,
        '--verbose',
        '--query',
        HOUSEHOLD_QUERY,
        '--output-format',
        format,
        '--output',
        output,
        '--batch-size',
        '5',
      ],
      io,
    );
    return { code, text: io.out() + io.err() };
  } finally {
    sandbox.setFaults({});
  }
}

/** Raw bytes of every file, plus the cell text of workbooks (their zip entries are compressed). */
async function everythingWritten(folder: string): Promise<string> {
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

describe('the API key never leaves the process, even with --verbose and every HQ fault on', () => {
  for (const format of ['csv', 'xlsx', 'json', 'markdown']) {
    it(`is in no output line and no ${format} file, manifest or checkpoint`, async () => {
      const output = join(work, format);
      const { code, text } = await exportWithFaults(format, output);
      expect(code).toBe(0);
      expect(text).toMatch(/retrying/);
      // Every run gives the key with --password: the warning about it must not echo it.
      expect(text).toMatch(/other users of this machine/);
      expect(text).not.toContain(KEY);
      const written = await everythingWritten(output);
      expect(written).toContain('household');
      expect(written).not.toContain(KEY);
    });
  }
});

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { CHAOS_KEY, CHAOS_USER, HOUSEHOLD_QUERY } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { formSheet, workbook } from '../support/query-workbook';
import { filesUnder } from './support';

let sandbox: RunningSandbox;
let work: string;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 2,
    projects: [{ name: 'hostile', forms: 60, cases: 10 }],
    credentials: [{ username: CHAOS_USER, apiKey: CHAOS_KEY }],
  });
  work = mkdtempSync(join(tmpdir(), 'ccexport-hostile-'));
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

/** Runs the export with a query file; the output folder must stay empty. */
async function runWith(name: string, bytes: Buffer | string) {
  const file = join(work, name);
  writeFileSync(file, bytes);
  const output = join(work, `${name}-out`);
  const io = captureIO({ CCEXPORT_API_KEY: CHAOS_KEY });
  const before = sandbox.requestLog.length;
  const code = await main(
    [
      '--project',
      'hostile',
      '--commcare-hq',
      sandbox.url,
      '--username',
      CHAOS_USER,
      '--query',
      file,
      '--output-format',
      'csv',
      '--output',
      output,
    ],
    io,
  );
  return {
    code,
    err: io.err(),
    out: io.out(),
    files: filesUnder(output),
    requests: sandbox.requestLog.length - before,
    file,
  };
}

describe('a broken query file', () => {
  it('that is random bytes named .xlsx fails before any request, naming the file and what was expected', async () => {
    const r = await runWith(
      'random.xlsx',
      Buffer.from(Array.from({ length: 2048 }, (_, i) => (i * 7919) % 256)),
    );
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/random\.xlsx/);
    expect(r.err).toMatch(/xlsx/i);
    expect(r.files).toEqual([]);
    expect(r.requests).toBe(0);
  });

  it('that is a truncated workbook fails the same way', async () => {
    const whole = await readFile(HOUSEHOLD_QUERY);
    const r = await runWith('truncated.xlsx', whole.subarray(0, Math.floor(whole.length / 2)));
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/truncated\.xlsx/);
    expect(r.err).toMatch(/not a readable \.xlsx|xlsx/);
    expect(r.files).toEqual([]);
    expect(r.requests).toBe(0);
  });

  it("with headings that are not DET's fails before any request and writes nothing", async () => {
    const r = await runWith(
      'headers.xlsx',
      await workbook([
        {
          name: 'Weird',
          rows: [
            ['Colour', 'Flavour'],
            ['form', 'id'],
          ],
        },
      ]),
    );
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/headers\.xlsx/);
    expect(r.err).toMatch(/no sheet describes a table/);
    expect(r.err).toContain('"Weird"');
    expect(r.err).toMatch(/"Data Source", "Field" and "Source Field"/);
    expect(r.files).toEqual([]);
    expect(r.requests).toBe(0);
  });

  it('with an unknown Map Via function names it, its sheet and its cell', async () => {
    const r = await runWith(
      'mapvia.xlsx',
      await workbook([
        {
          name: 'Forms',
          rows: formSheet([
            ['id', 'id'],
            ['x', 'form.x', 'frobnicate'],
          ]),
        },
      ]),
    );
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/frobnicate/);
    expect(r.err).toMatch(/Forms/);
    expect(r.err).toMatch(/[A-Z]+\d+|row \d+/);
    expect(r.files).toEqual([]);
    expect(r.requests).toBe(0);
  });

  it('with an invalid JSONPath names the path, its sheet and its cell', async () => {
    const r = await runWith(
      'path.xlsx',
      await workbook([
        {
          name: 'Forms',
          rows: formSheet([
            ['id', 'id'],
            ['x', 'form.x.'],
          ]),
        },
      ]),
    );
    expect(r.code).not.toBe(0);
    // The only sheet is skipped as DET skips it, and the run fails saying which sheet, cell and why.
    expect(r.err).toMatch(/"Forms"[^\n]*cell E3/);
    expect(r.err).toContain('"form.x."');
    expect(r.files).toEqual([]);
    expect(r.requests).toBe(0);
  });

  it('that is not a workbook at all (a directory) fails with a clear message', async () => {
    const io = captureIO({ CCEXPORT_API_KEY: CHAOS_KEY });
    const code = await main(
      [
        '--project',
        'hostile',
        '--commcare-hq',
        sandbox.url,
        '--username',
        CHAOS_USER,
        '--query',
        work,
        '--output-format',
        'csv',
        '--output',
        join(work, 'dir-out'),
      ],
      io,
    );
    expect(code).not.toBe(0);
    expect(io.err()).toContain(work);
    expect(io.err()).not.toMatch(/\n\s+at /);
  });
});

/**
 * Hostile HQ answers and an insecure HQ address: a gzip bomb, compressed answers, an error text echoing the key across the
 * excerpt's cut, a fatal error while another request hangs, a well-nested page with a record that is not
 * JSON, plain http to a host off this machine.
 * Each probe runs the CLI as a user types it against the sandbox with the matching fault flag.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { createCommCareClient } from '../../functions/commcare';
import { type RunningSandbox, type SandboxFaults, startSandbox } from '../../functions/sandbox/server';
import { captureIO } from '../cli/capture';
import { writeFormsQuery } from '../support/query-workbook';
import { filesUnder } from './support';

const USER = 'probe@example.org';
const KEY = 'k3y-9f2c71d0e5a84b6f';

let work: string;
let sandbox: RunningSandbox;
let query: string;
let runs = 0;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'ccexport-hostile-answers-'));
  sandbox = await startSandbox({
    projects: [{ name: 'demo', forms: 300, cases: 10 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  query = join(work, 'forms.xlsx');
  await writeFormsQuery(query, [['id', 'id']]);
});

afterAll(async () => {
  await sandbox.close();
  rmSync(work, { recursive: true, force: true });
});

function args(hq: string, output: string, extra: string[] = []): string[] {
  return [
    '--project',
    'demo',
    '--commcare-hq',
    hq,
    '--username',
    USER,
    '--query',
    query,
    '--output-format',
    'csv',
    '--output',
    output,
    '--progress',
    'none',
    ...extra,
  ];
}

async function ccexport(faults: SandboxFaults, extra: string[] = []) {
  sandbox.setFaults(faults);
  runs += 1;
  const output = join(work, `out-${runs}`);
  const io = captureIO({ CCEXPORT_API_KEY: KEY });
  const before = sandbox.requestLog.length;
  const code = await main(args(sandbox.url, output, extra), io);
  return { code, err: io.err(), output, requests: sandbox.requestLog.length - before };
}

describe('a gzip bomb', () => {
  it('fails at once, without retrying, naming the request and the limit, and writes no rows', async () => {
    // 1 GiB of spaces in about 1 MB of gzip; the limit is 256 MiB.
    const r = await ccexport({ gzipBombEvery: 1 }, ['--max-concurrency', '1']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/larger than 256 MiB once decompressed/);
    expect(r.err).toMatch(/\/a\/demo\/api\/form\/v1\//);
    expect(r.requests).toBe(1);
    expect(filesUnder(r.output).filter((f) => f.endsWith('.csv'))).toEqual([]);
  });

  it('is refused below a smaller limit set on the client, and a normal page under it is read', async () => {
    sandbox.setFaults({ gzipBombEvery: 2, gzipBombBytes: 8 * 2 ** 20 });
    const client = createCommCareClient({
      baseUrl: sandbox.url,
      username: USER,
      apiKey: KEY,
      maxResponseBytes: 2 ** 20,
    });
    const pages = client.pages({ project: 'demo', resource: 'form', pageSize: 100 });
    const first = await pages.next();
    expect(first.done).toBe(false);
    await expect(pages.next()).rejects.toThrow(/larger than 1 MiB once decompressed/);
  });
});

describe('a page whose last record is not JSON, though the page is well nested', () => {
  it('fails naming the answer, commits nothing, and the next run exports every form once', async () => {
    // Records are parsed only when their rows are made (functions/commcare/page-body.ts), so the
    // page's earlier records became rows before the broken one was reached: none may be committed.
    const broken = await ccexport({ brokenItemEvery: 2 }, ['--batch-size', '100', '--max-concurrency', '1']);
    expect(broken.code).toBe(1);
    expect(broken.err).toMatch(
      /item 99 of "objects" in the answer to \/a\/demo\/api\/[^ ]*form[^ ]* is not valid JSON/,
    );
    expect(filesUnder(broken.output).filter((f) => f.endsWith('.csv'))).toEqual([]);
    expect(broken.err).not.toContain(KEY);

    sandbox.setFaults({});
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    const sequential = ['--batch-size', '100', '--max-concurrency', '1'];
    const again = await main(args(sandbox.url, broken.output, sequential), io);
    expect(again, io.err()).toBe(0);
    const clean = await ccexport({}, sequential);
    expect(clean.code, clean.err).toBe(0);
    const ids = (output: string) =>
      filesUnder(output)
        .filter((f) => f.endsWith('.csv') && !f.includes('deletions'))
        .flatMap((f) => readFileSync(f, 'utf8').trim().split('\n').slice(1))
        .sort();
    const resumed = ids(broken.output);
    expect(new Set(resumed).size).toBe(resumed.length);
    expect(resumed.length).toBeGreaterThan(200);
    expect(resumed).toEqual(ids(clean.output));
  });
});

describe('answers compressed as HQ sends them', () => {
  it("give the same rows as plain answers (the compressed length is not the body's)", async () => {
    const options = ['--batch-size', '100', '--max-concurrency', '2'];
    const plain = await ccexport({}, options);
    expect(plain.code, plain.err).toBe(0);
    const before = sandbox.requestLog.length;
    const packed = await ccexport({ gzipEvery: 2 }, options);
    expect(packed.code, packed.err).toBe(0);
    const compressed = sandbox.requestLog.slice(before).filter((e) => e.contentEncoding === 'gzip');
    expect(compressed.length).toBeGreaterThan(0);
    const rows = (output: string) =>
      filesUnder(output)
        .filter((f) => f.endsWith('.csv') && !f.includes('deletions'))
        .flatMap((f) => readFileSync(f, 'utf8').trim().split('\n').slice(1))
        .sort();
    expect(rows(packed.output)).toEqual(rows(plain.output));
    expect(rows(plain.output).length).toBeGreaterThan(200);
  });
});

describe('an HQ error text that repeats the key', () => {
  it('never prints any part of the key, wherever the key sits against the excerpt cut', async () => {
    // The excerpt keeps 300 characters; the key starts at characters 280 to 300 of the text.
    const prefix = `ApiKey ${USER}:`.length;
    for (let keyAt = 280; keyAt <= 300; keyAt += 4) {
      const r = await ccexport({ echoAuthorizationAt: keyAt - prefix }, ['--max-concurrency', '1']);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/rejected .* with 400/);
      for (let k = 0; k + 6 <= KEY.length; k += 1) expect(r.err).not.toContain(KEY.slice(k, k + 6));
    }
  });
});

describe('a fatal error while another request of the pull is still going', () => {
  it('ends the process at once instead of waiting on the other request and its retries', async () => {
    // The parallel pull asks for its first page and probes the newest record at once: the first page
    // gets a 400, the probe is never answered (the client would wait 60 s for it, then retry).
    sandbox.setFaults({ rejectOrderBy: 'indexed_on', hangOrderBy: '-indexed_on' });
    const output = join(work, 'cancel-out');
    const before = sandbox.requestLog.length;
    const child = spawn(
      process.execPath,
      ['bin/ccexport.js', ...args(sandbox.url, output, ['--max-concurrency', '4'])],
      { env: { ...process.env, CCEXPORT_API_KEY: KEY }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let err = '';
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(err).toMatch(/order refused/);
    expect(code).toBe(1);
    const hung = sandbox.requestLog.slice(before).filter((e) => e.query.order_by?.[0] === '-indexed_on');
    expect(hung.length).toBe(1);
  }, 45_000);
});

describe('plain http to an HQ that is not on this machine', () => {
  it('is refused before any request (usage error) unless --allow-insecure-http is given', async () => {
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    const code = await main(args('http://hq.example.org', join(work, 'http-out')), io);
    expect(code).toBe(2);
    expect(io.err()).toMatch(/refusing plain http to hq\.example\.org/);
    expect(io.err()).toMatch(/--allow-insecure-http/);
    expect(io.err()).not.toContain(KEY);
  });

  it('is refused by the client too, whatever gave it the URL, and allowed when asked for', () => {
    const options = { baseUrl: 'http://10.0.0.5:8000', username: USER, apiKey: KEY };
    expect(() => createCommCareClient(options)).toThrow(/refusing plain http to 10\.0\.0\.5:8000/);
    expect(() => createCommCareClient({ ...options, allowInsecureHttp: true })).not.toThrow();
    for (const loopback of ['http://localhost:8000', 'http://127.0.0.1:9', 'http://[::1]:8000', 'local'])
      expect(() => createCommCareClient({ ...options, baseUrl: loopback })).not.toThrow();
  });
});

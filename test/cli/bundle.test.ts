import { execFile, execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { CreateBucketCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { main as mainFromSources } from '../../functions/cli/main';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { motoS3 } from '../support/aws';
import { startForwardProxy } from '../support/forward-proxy';
import { captureIO } from './capture';

const ROOT = join(import.meta.dirname, '..', '..');
const KEY = 'bundle-test-key-93c1d7';
const USER = 'analyst@example.org';

type Main = typeof mainFromSources;
let sandbox: RunningSandbox;
let out: string;
let bundled: Main;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 5,
    projects: [{ name: 'clinic', forms: 120, cases: 30 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  // Inside node_modules, so that the bundle's bare imports resolve as they do from dist/cli/.
  out = mkdtempSync(join(ROOT, 'node_modules', '.ccexport-bundle-test-'));
  execFileSync(process.execPath, ['scripts/build-cli.mjs', out], { cwd: ROOT });
  bundled = ((await import(pathToFileURL(join(out, 'main.js')).href)) as { main: Main }).main;
}, 120_000);

afterAll(async () => {
  await sandbox.close();
  rmSync(out, { recursive: true, force: true });
});

describe('the built command (what `npm ci` prepares for bin/ccexport.js)', () => {
  it('prints the same help as the sources', async () => {
    const [a, b] = [captureIO(), captureIO()];
    expect(await bundled(['--help'], a)).toBe(0);
    expect(await mainFromSources(['--help'], b)).toBe(0);
    expect(a.out()).toBe(b.out());
    expect(a.out()).toContain('Usage:');
  });

  it('lists every source file it was built from, so a later edit sends bin/ccexport.js back to the sources', () => {
    const inputs = JSON.parse(readFileSync(join(out, 'inputs.json'), 'utf8')) as string[];
    expect(inputs).toContain('functions/cli/main.ts');
    expect(inputs).toContain('functions/cli/run-command.ts');
    expect(inputs.every((path) => !path.startsWith('/') && !path.includes('node_modules'))).toBe(true);
  });

  it('runs an export from its lazily loaded chunks', async () => {
    const output = join(out, 'export');
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    const code = await bundled(
      [
        ...['run', '--project', 'clinic', '--commcare-hq', sandbox.url, '--username', USER],
        ...['--resource', 'form', '--output-format', 'jsonl', '--output', output, '--progress', 'none'],
      ],
      io,
    );
    expect(code).toBe(0);
    expect(io.out()).toContain('Export finished');
    expect(readFileSync(join(output, 'form.jsonl'), 'utf8').trim().split('\n').length).toBeGreaterThan(100);
  });

  /**
   * A csv export in a process of its own (the test runner has loaded much of Node already), with
   * `extraEnv` and no proxy variables of the runner's: Node's built-in modules it loaded, and the files
   * of the bundle (main.js and its chunks) it read.
   */
  async function exportInProcess(name: string, extraEnv: Record<string, string>) {
    const script = [
      `const { main } = await import(${JSON.stringify(pathToFileURL(join(out, 'main.js')).href)});`,
      'process.exitCode = await main(process.argv.slice(1));',
      "process.stderr.write('modules: ' + JSON.stringify(process.moduleLoadList) + '\\n');",
    ].join('\n');
    const register = `data:text/javascript,import{register}from'node:module';register(${JSON.stringify(
      pathToFileURL(join(ROOT, 'test', 'support', 'record-imports.mjs')).href,
    )})`;
    const imports = join(out, `${name}-imports.txt`);
    const env: NodeJS.ProcessEnv = { CCEXPORT_API_KEY: KEY, RECORD_IMPORTS: imports, ...extraEnv };
    for (const [variable, value] of Object.entries(process.env))
      if (!/proxy/i.test(variable) && !(variable in env)) env[variable] = value;
    const { stdout, stderr } = await promisify(execFile)(
      process.execPath,
      [
        ...['--import', register, '--input-type=module', '-e', script, '--'],
        ...['run', '--project', 'clinic', '--commcare-hq', sandbox.url, '--username', USER],
        ...['--query', join(ROOT, 'examples', 'household-registration.xlsx'), '--output-format', 'csv'],
        ...['--output', join(out, name), '--progress', 'none'],
      ],
      { env },
    );
    const builtins = JSON.parse(/^modules: (.*)$/m.exec(stderr)?.[1] ?? '[]') as string[];
    const files = readFileSync(imports, 'utf8')
      .split('\n')
      .filter((url) => url.startsWith(pathToFileURL(out).href))
      .map((url) => readFileSync(new URL(url), 'utf8'));
    return { stdout, builtins, files };
  }

  it("sends its requests with Node's client, never loading axios, when no proxy is named", async () => {
    const { stdout, builtins, files } = await exportInProcess('csv-direct', {});
    expect(stdout).toMatch(/Export finished: [1-9][\d,]* records, [1-9][\d,]* rows/);
    expect(builtins).toContain('NativeModule http');
    expect(files.length).toBeGreaterThan(5);
    expect(files.filter((text) => text.includes('node_modules/axios/'))).toEqual([]);
  });

  it('goes through the proxy HTTP_PROXY names with axios, without the parts of it never used (undici, http2, form-data)', async () => {
    const proxy = await startForwardProxy();
    try {
      const { stdout, builtins, files } = await exportInProcess('csv-proxied', { HTTP_PROXY: proxy.url });
      expect(stdout).toMatch(/Export finished: [1-9][\d,]* records, [1-9][\d,]* rows/);
      expect(proxy.seen.length).toBeGreaterThan(1);
      expect(proxy.seen.every((url) => url.startsWith(`${sandbox.url}/`))).toBe(true);
      expect(files.some((text) => text.includes('node_modules/axios/'))).toBe(true);
      expect(builtins.filter((name) => /undici|http2/.test(name))).toEqual([]);
    } finally {
      await proxy.close();
    }
    // form-data's stand-in keeps mime-types and its table out of the bundle.
    const chunks = readdirSync(out).filter((name) => name.endsWith('.js'));
    expect(
      chunks.filter((name) => readFileSync(join(out, name), 'utf8').includes('node_modules/mime-db/')),
    ).toEqual([]);
  });

  it('exports to PostgreSQL through COPY (a CommonJS package loaded on demand inside the bundle)', async () => {
    const admin = new pg.Client({ connectionString: inject('pgUrl') });
    await admin.connect();
    const name = `bundle_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
    await admin.query(`CREATE DATABASE ${name}`);
    try {
      const url = new URL(inject('pgUrl'));
      url.pathname = `/${name}`;
      const io = captureIO({ CCEXPORT_API_KEY: KEY });
      const sql = `${url.toString()}?sslmode=disable`;
      const query = join(ROOT, 'examples', 'household-registration.xlsx');
      const code = await bundled(
        [
          ...['run', '--project', 'clinic', '--commcare-hq', sandbox.url, '--username', USER],
          ...['--query', query, '--output-format', 'sql', '--output', sql, '--progress', 'none'],
        ],
        io,
      );
      expect(io.err()).toBe('');
      expect(code).toBe(0);
      const db = new pg.Client({ connectionString: url.toString() });
      await db.connect();
      try {
        const tables = await db.query<{ name: string }>(
          "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' AND table_name = 'households'",
        );
        expect(tables.rows).toHaveLength(1);
        const { rows } = await db.query<{ n: string }>(`SELECT count(*) AS n FROM "${tables.rows[0]!.name}"`);
        expect(Number(rows[0]!.n)).toBeGreaterThan(0);
      } finally {
        await db.end();
      }
    } finally {
      await admin.query(`DROP DATABASE ${name} WITH (FORCE)`);
      await admin.end();
    }
  });

  it('exports to S3 (the AWS SDK, loaded on demand, with its named exports)', async () => {
    const endpoint = inject('motoEndpoint');
    const s3 = motoS3(endpoint);
    const bucket = `bundle-${randomUUID().slice(0, 8)}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const env = {
      CCEXPORT_API_KEY: KEY,
      AWS_ENDPOINT_URL_S3: endpoint,
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_REGION: 'us-east-1',
    };
    const io = captureIO(env);
    // The SDK reads its endpoint and credentials from the process environment.
    const saved = { ...process.env };
    Object.assign(process.env, env);
    try {
      const code = await bundled(
        [
          ...['run', '--project', 'clinic', '--commcare-hq', sandbox.url, '--username', USER],
          ...['--query', join(ROOT, 'examples', 'household-registration.xlsx'), '--output-format', 'csv'],
          ...['--output', `s3://${bucket}/out`, '--progress', 'none'],
        ],
        io,
      );
      expect(io.err()).toBe('');
      expect(code).toBe(0);
    } finally {
      process.env = saved;
    }
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'out/' }));
    expect((listed.Contents ?? []).some((o) => /^out\/households\/.+\.csv$/.test(o.Key ?? ''))).toBe(true);
  });
});

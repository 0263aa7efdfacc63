import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main as mainFromSources } from '../../functions/cli/main';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
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
});

/**
 * `npm run demo`: a real export end to end on embedded defaults. Starts the sandbox HQ on a free loopback
 * port, exports the bundled sample query into ./demo-output, prints what it wrote, stops the sandbox.
 * The sandbox's key reaches the export through the environment, as a user's would, never through argv.
 */
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { startSandbox } from '../sandbox';
import { parseArgs, stringFlag } from './args';
import type { CommandIO } from './io';
import { runRunCommand } from './run-command';

export const DEMO_USERNAME = 'demo@example.org';
/** The sandbox's built-in demo key: public, fake, only valid against the local sandbox. */
export const DEMO_KEY = 'sandbox-demo-key';

export async function runDemoCommand(argv: string[], io: CommandIO): Promise<number> {
  const { flags } = parseArgs(argv, [{ name: 'output', kind: 'string', help: 'folder to write' }]);
  const output = resolve(io.cwd, stringFlag(flags, 'output') ?? 'demo-output');
  rmSync(output, { recursive: true, force: true });
  const sandbox = await startSandbox({
    seed: 1,
    projects: [{ name: 'demo', forms: 2500, cases: 600, mobileUsers: 25, groups: 4, locations: 12 }],
    credentials: [{ username: DEMO_USERNAME, apiKey: DEMO_KEY }],
  });
  io.stdout.write(
    `Started the CommCare sandbox at ${sandbox.url} (project "demo", 2,500 forms, 600 cases)\n`,
  );
  const env = { ...io.env, CCEXPORT_API_KEY: DEMO_KEY };
  const runIo: CommandIO = { ...io, env };
  try {
    const common = [
      '--project',
      'demo',
      '--commcare-hq',
      sandbox.url,
      '--username',
      DEMO_USERNAME,
      '--auth-mode',
      'apikey',
    ];
    const steps: Array<{ title: string; args: string[] }> = [
      {
        title: 'raw form and case records as JSON lines',
        args: [
          ...common,
          '--resource',
          'form',
          '--resource',
          'case',
          '--output-format',
          'jsonl',
          '--output',
          join(output, 'raw'),
          '--progress',
          'none',
        ],
      },
    ];
    for (const step of steps) {
      io.stdout.write(`\n$ ccexport ${step.args.map(quote).join(' ')}\n  (${step.title})\n`);
      const code = await runRunCommand(step.args, runIo);
      if (code !== 0) return code;
    }
    io.stdout.write(`\nWrote ${output}:\n`);
    for (const file of listFiles(output)) {
      io.stdout.write(
        `  ${relative(io.cwd, file)}  (${statSync(file).size.toLocaleString('en-US')} bytes)\n`,
      );
    }
    return 0;
  } finally {
    await sandbox.close();
    io.stdout.write('Stopped the sandbox.\n');
  }
}

function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

function listFiles(folder: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(folder, { withFileTypes: true })) {
    const path = join(folder, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(path));
    else out.push(path);
  }
  return out.sort();
}

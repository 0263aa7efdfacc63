/**
 * `npm run demo`: a real export end to end on embedded defaults. Starts the sandbox HQ on a free loopback
 * port, exports the bundled sample query into ./demo-output, prints what it wrote, stops the sandbox.
 * The sandbox's key reaches the export through the environment, as a user's would, never through argv.
 */
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startSandbox } from '../sandbox';
import { parseArgs, stringFlag } from './args';
import { formatCount } from './count';
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
    const query = ['--query', DEMO_QUERY];
    const steps: Array<{ title: string; args: string[] }> = [
      {
        title: 'the households and household_members tables as an Excel workbook',
        args: [
          ...common,
          ...query,
          '--output-format',
          'xlsx',
          '--output',
          join(output, 'xlsx'),
          '--progress',
          'none',
        ],
      },
      {
        title: 'the same tables into an embedded PostgreSQL database (no server needed)',
        args: [
          ...common,
          ...query,
          '--output-format',
          'sql',
          '--output',
          join(output, 'database'),
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
    io.stdout.write(`\nWrote ${relative(io.cwd, output) || output}:\n`);
    for (const file of listFiles(join(output, 'xlsx'))) {
      io.stdout.write(`  ${relative(io.cwd, file)}  (${formatCount(statSync(file).size)} bytes)\n`);
    }
    io.stdout.write(`  ${relative(io.cwd, join(output, 'database'))}/  (embedded PostgreSQL)\n`);
    await printDemoQuery(join(output, 'database'), io);
    return 0;
  } finally {
    await sandbox.close();
    io.stdout.write('Stopped the sandbox.\n');
  }
}

/** The bundled sample query: households and a child table of members (examples/build-demo-query.ts). */
export const DEMO_QUERY = fileURLToPath(
  new URL('../../examples/household-registration.xlsx', import.meta.url),
);

const DEMO_SQL = `select h.village, count(distinct h.id) as households, count(m.id) as members,
       round(avg(m.age)::numeric, 1) as mean_age
  from households h left join household_members m on m.form_id = h.id
 group by h.village order by households desc, h.village limit 5`;

async function printDemoQuery(folder: string, io: CommandIO): Promise<void> {
  const { openEmbeddedDatabase } = await import('../sinks');
  const db = await openEmbeddedDatabase(folder);
  try {
    const result = await db.query<Record<string, unknown>>(DEMO_SQL);
    io.stdout.write(`\nA query over the embedded database:\n\n${DEMO_SQL}\n\n`);
    io.stdout.write(formatTable(result.rows));
  } finally {
    await db.close();
  }
}

function formatTable(rows: readonly Record<string, unknown>[]): string {
  const first = rows[0];
  if (!first) return '(no rows)\n';
  const headings = Object.keys(first);
  const cells = rows.map((row) => headings.map((h) => String(row[h] ?? '')));
  const widths = headings.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)));
  const line = (values: readonly string[]) =>
    `  ${values.map((v, i) => v.padEnd(widths[i] as number)).join('  ')}\n`;
  return line(headings) + line(widths.map((w) => '-'.repeat(w))) + cells.map(line).join('');
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

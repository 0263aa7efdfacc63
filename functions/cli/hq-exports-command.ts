/**
 * `ccexport hq-exports`: the exports defined in CommCare HQ's Export Data screens that the Data Export
 * Tool can run (`/a/<project>/api/det_export_instance/v1/`, permission View Reports), and
 * `ccexport hq-exports download <name or id> --out FILE.xlsx` to save one's DET config for inspection.
 * Run one with `ccexport --query hq:<name or id> ...`.
 */
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { CommCareClient, findHqExport } from '../commcare';
import { checkTransport, resolveBaseUrl } from '../commcare/resources';
import { booleanFlag, type FlagSpec, formatHelp, parseArgs, stringFlag, UsageError } from './args';
import { credentialsFromFlags, hqBaseUrl } from './credentials';
import type { CommandIO } from './io';

const FLAGS: readonly FlagSpec[] = [
  { name: 'help', kind: 'boolean', help: 'print this help' },
  { name: 'project', kind: 'string', help: 'the CommCare project space (required)' },
  { name: 'commcare-hq', kind: 'string', help: 'HQ base URL or prod/india/eu', defaultText: 'prod' },
  { name: 'username', kind: 'string', help: 'HQ web user (or CCEXPORT_USERNAME)' },
  { name: 'secret-id', kind: 'string', help: 'Secrets Manager secret with username and key' },
  {
    name: 'api-key-env',
    kind: 'string',
    help: 'environment variable holding the key',
    defaultText: 'CCEXPORT_API_KEY',
  },
  { name: 'password', kind: 'string', help: "the API key (DET's flag; warns: visible to other users)" },
  { name: 'allow-insecure-http', kind: 'boolean', help: 'allow plain http to a host that is not loopback' },
  { name: 'out', kind: 'string', help: 'with download: the file to write (.xlsx)' },
  { name: 'json', kind: 'boolean', help: 'list as JSON lines instead of a table' },
];

const USAGE = `ccexport hq-exports --project P [--commcare-hq URL] [--username U]
  list the exports defined in HQ that the Data Export Tool can run
ccexport hq-exports download <name or id> --project P --out FILE.xlsx
  save one export's DET config workbook

Run one with: ccexport --query "hq:<name or id>" --project P --output-format ... --output ...`;

export async function runHqExportsCommand(argv: string[], io: CommandIO): Promise<number> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (booleanFlag(flags, 'help')) {
    io.stdout.write(`${USAGE}\n\n${formatHelp('Flags:', FLAGS)}`);
    return 0;
  }
  const [action, ref, extra] = positionals;
  if (action !== undefined && action !== 'download' && action !== 'list')
    throw new UsageError(`unknown hq-exports action "${action}"; expected "list" or "download"\n\n${USAGE}`);
  if (extra !== undefined) throw new UsageError(`unexpected argument "${extra}"`);
  if (action === 'download' && !ref)
    throw new UsageError('hq-exports download needs the name or id of an export');
  const out = stringFlag(flags, 'out');
  if (action === 'download' && !out) throw new UsageError('hq-exports download needs --out FILE.xlsx');
  const project = stringFlag(flags, 'project');
  if (!project) throw new UsageError('hq-exports needs --project');
  const hq = stringFlag(flags, 'commcare-hq');
  const allowInsecureHttp = booleanFlag(flags, 'allow-insecure-http');
  if (hq !== undefined) checkTransport(resolveBaseUrl(hq), allowInsecureHttp);

  const credentials = await credentialsFromFlags(flags, io, (message) => io.stderr.write(`${message}\n`));
  const client = new CommCareClient({
    baseUrl: hqBaseUrl(hq, credentials, 'prod'),
    username: credentials.username,
    apiKey: credentials.apiKey,
    allowInsecureHttp,
  });
  const exports = await client.hqExports(project);

  if (action === 'download') {
    const chosen = findHqExport(exports, project, ref!);
    const workbook = await client.hqExportConfig(project, chosen);
    const path = resolve(io.cwd, out!);
    await writeFile(path, workbook);
    io.stdout.write(`wrote the DET config of "${chosen.name}" (${chosen.id}) to ${path}\n`);
    return 0;
  }

  if (booleanFlag(flags, 'json')) {
    for (const e of exports) io.stdout.write(`${JSON.stringify(e)}\n`);
    return 0;
  }
  if (exports.length === 0) {
    io.stdout.write(
      `project "${project}" has no export the Data Export Tool can run (in HQ: Data > Export Data, then "Download DET config" on an export)\n`,
    );
    return 0;
  }
  // HQ gives no last-change date for an export, so none is shown.
  const rows = exports.map((e) => [
    e.name,
    e.id,
    e.type,
    e.type === 'case' ? (e.caseType ?? '') : (e.xmlns ?? ''),
    e.isDeidentified ? 'yes' : 'no',
  ]);
  const headings = ['name', 'id', 'type', 'case type / form', 'de-identified'];
  const widths = headings.map((h, k) => Math.max(h.length, ...rows.map((r) => r[k]!.length)));
  const line = (cells: string[]) =>
    `${cells
      .map((c, k) => c.padEnd(widths[k]!))
      .join('  ')
      .trimEnd()}\n`;
  io.stdout.write(line(headings));
  for (const r of rows) io.stdout.write(line(r));
  return 0;
}

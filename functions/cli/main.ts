/**
 * `ccexport`: the command-line entry point. Subcommands dispatch here; given DET's flags and no
 * subcommand it behaves as `ccexport run`, so an existing `commcare-export ...` command line works by
 * changing only the program's name.
 */
import { UsageError } from './args';
import { CredentialError } from './credentials';
import { type CommandIO, processIO } from './io';

export const VERSION = '0.1.0';

const HELP = `ccexport ${VERSION}: scheduled, incremental exports of CommCare HQ data

Usage:
  ccexport [run] --project P --query FILE --output-format F --output OUT [DET flags...]
  ccexport reconcile [run flags]        remove (or mark) rows of records HQ no longer lists
  ccexport validate-query FILE          check a DET query file and print its tables
  ccexport latest --output OUT          one consolidated file per table: the newest row per id
  ccexport history --output DB          checkpoints of a PostgreSQL output, ours and DET's
  ccexport checkpoint --output DB ...   move checkpoints to a new key (--to-key) or reset them (--reset)
  ccexport hq-exports --project P       exports defined in HQ that DET can run (--query hq:<name> runs one)
  ccexport sandbox [--port N]           run the local CommCare HQ sandbox server
  ccexport demo                         export the bundled sample from the sandbox into ./demo-output
  ccexport keys status|submit|rotate|generate ...   monthly API-key rotation
  ccexport trigger EXPORT | runs EXPORT            deployed exports (AWS Step Functions)

Run "ccexport run --help" for the export flags (DET's, plus ours).
`;

type Command = (argv: string[], io: CommandIO) => Promise<number>;

/** Each command is loaded when it runs: `--help` and a quick subcommand never load the HTTP client and the export engine. */
const loadRun = async (): Promise<Command> => (await import('./run-command')).runRunCommand;

const COMMANDS: Record<string, () => Promise<Command>> = {
  run: loadRun,
  reconcile: async () => (await import('./run-command')).runReconcileCommand,
  'validate-query': async () => (await import('./validate-command')).runValidateCommand,
  latest: async () => (await import('./latest-command')).runLatestCommand,
  history: async () => (await import('./checkpoint-command')).runHistoryCommand,
  checkpoint: async () => (await import('./checkpoint-command')).runCheckpointCommand,
  'hq-exports': async () => (await import('./hq-exports-command')).runHqExportsCommand,
  sandbox: async () => (await import('./sandbox-command')).runSandboxCliCommand,
  demo: async () => (await import('./demo-command')).runDemoCommand,
  keys: async () => (await import('./keys-entry')).runKeysEntry,
  trigger: async () => (await import('./aws-entry')).runTriggerEntry,
  runs: async () => (await import('./aws-entry')).runRunsEntry,
};

export async function main(argv: string[], io: CommandIO = processIO()): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
    io.stdout.write(HELP);
    return first === undefined ? 2 : 0;
  }
  if (first === '--version') {
    io.stdout.write(`ccexport version ${VERSION}\n`);
    return 0;
  }
  const load = COMMANDS[first];
  const [command, args] = load
    ? [await load(), rest]
    : first.startsWith('-')
      ? [await loadRun(), argv]
      : [null, rest];
  if (!command) {
    io.stderr.write(`ccexport: unknown command "${first}"\n\n${HELP}`);
    return 2;
  }
  try {
    return await command(args, io);
  } catch (error) {
    return reportError(error, io);
  }
}

/** Last line of defence: a clear message and exit code, never a stack trace (unless --verbose asked). */
export function reportError(error: unknown, io: CommandIO): number {
  if (error instanceof UsageError) {
    io.stderr.write(`ccexport: ${error.message}\n`);
    return 2;
  }
  if (error instanceof CredentialError) {
    io.stderr.write(`ccexport: ${error.message}\n`);
    return 1;
  }
  if (error instanceof Error && error.message === 'Region is missing') {
    // The AWS SDK's own words, for any command that reaches AWS (trigger, runs, --secret-id, s3://).
    io.stderr.write(
      'ccexport: no AWS region is set (the AWS SDK says "Region is missing"). Set AWS_REGION to the region ' +
        'of your stack, bucket or secret (e.g. AWS_REGION=eu-west-1), or give the AWS profile you use a ' +
        'region (`aws configure set region eu-west-1`, with AWS_PROFILE naming the profile).\n',
    );
    return 1;
  }
  const message =
    error instanceof Error
      ? `${error.name === 'Error' ? '' : `${error.name}: `}${error.message}`
      : String(error);
  io.stderr.write(`ccexport: ${message}\n`);
  if (io.env.CCEXPORT_DEBUG === '1' && error instanceof Error && error.stack)
    io.stderr.write(`${error.stack}\n`);
  return 1;
}

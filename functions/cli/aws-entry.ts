/** `ccexport trigger` and `ccexport runs`: see functions/cli/aws.ts. */
import { existsSync, readFileSync } from 'node:fs';
import { SFNClient } from '@aws-sdk/client-sfn';
import { runRunsCommand, runTriggerCommand } from './aws';
import type { CommandIO } from './io';

function deps() {
  return {
    sfn: new SFNClient({}),
    readFile: (path: string) => (existsSync(path) ? readFileSync(path, 'utf8') : undefined),
  };
}

export async function runTriggerEntry(argv: string[], io: CommandIO): Promise<number> {
  return await runTriggerCommand(argv, io, deps());
}

export async function runRunsEntry(argv: string[], io: CommandIO): Promise<number> {
  return await runRunsCommand(argv, io, deps());
}

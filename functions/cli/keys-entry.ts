/** `ccexport keys ...`: see functions/cli/keys.ts. */
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { CommandIO } from './io';
import { runKeysCommand } from './keys';

export async function runKeysEntry(argv: string[], io: CommandIO): Promise<number> {
  return await runKeysCommand(
    argv,
    { stdin: io.stdin, stdout: io.stdout, stderr: io.stderr, isTTY: Boolean(io.stdin.isTTY) },
    { secretsManager: new SecretsManagerClient({}) },
  );
}

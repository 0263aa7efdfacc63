/** `ccexport sandbox`: runs the local CommCare-compatible server until interrupted. */
import { runSandboxCommand } from '../sandbox';
import type { CommandIO } from './io';

export async function runSandboxCliCommand(argv: string[], io: CommandIO): Promise<number> {
  return await runSandboxCommand(argv, { stdout: io.stdout, stderr: io.stderr });
}

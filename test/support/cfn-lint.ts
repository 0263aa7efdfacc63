/**
 * cfn-lint (AWS's CloudFormation linter, a Python tool) on a synthesized template: the resource
 * specifications and rules CloudFormation applies at deploy time, which `cdk synth` does not check.
 * .ci/run installs it; set CFN_LINT to use another executable.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Template } from 'aws-cdk-lib/assertions';

interface CfnLintMatch {
  readonly Level: 'Error' | 'Warning' | 'Informational';
  readonly Message: string;
  readonly Rule: { readonly Id: string };
  readonly Location: { readonly Path: readonly (string | number)[] };
}

/** cfn-lint's errors on `template`, each "E1234 Resources/X/Properties/Y: message"; warnings are left out. */
export async function cfnLintErrors(template: Template): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'cfn-lint-'));
  try {
    const file = join(dir, 'template.json');
    writeFileSync(file, JSON.stringify(template.toJSON()));
    // Asynchronous: linting takes many seconds on a busy machine, and the test worker must keep answering.
    const run = await new Promise<{ status: number; stdout: string; stderr: string }>((resolve, reject) => {
      execFile(
        process.env.CFN_LINT ?? 'cfn-lint',
        ['--format', 'json', file],
        { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
        (error, stdout, stderr) => {
          if (error && typeof error.code !== 'number') {
            reject(
              new Error(`cfn-lint could not run (${error.message}); install it with: pip install cfn-lint`),
            );
          } else resolve({ status: typeof error?.code === 'number' ? error.code : 0, stdout, stderr });
        },
      );
    });
    // Exit status is a bit mask: 2 errors, 4 warnings, 8 informational; 1 means cfn-lint itself failed.
    if (run.status & 1) throw new Error(`cfn-lint failed: ${run.stderr}`);
    const matches = JSON.parse(run.stdout || '[]') as CfnLintMatch[];
    return matches
      .filter((m) => m.Level === 'Error')
      .map((m) => `${m.Rule.Id} ${m.Location.Path.join('/')}: ${m.Message}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * bin/app.ts as the CDK CLI runs it (context and output folder through the environment): a deploy
 * needs a config named explicitly; without one the example is synthesized as a stack CloudFormation
 * refuses to create, under a name no real deployment has.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from './app';

const outdirs: string[] = [];
const cdkJsonContext = (JSON.parse(readFileSync(join(repoRoot, 'cdk.json'), 'utf8')) as { context: object })
  .context;

/** Runs the app; returns the synthesized templates by stack name. */
async function synthApp(context: Record<string, unknown>, env: Record<string, string> = {}) {
  const outdir = mkdtempSync(join(tmpdir(), 'app-config-'));
  outdirs.push(outdir);
  const { EXPORTS_CONFIG: _ignored, ...inherited } = process.env;
  // Asynchronous: a synth takes a minute on a busy machine, and the test worker must keep answering.
  const run = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'bin/app.ts'],
      {
        cwd: repoRoot,
        encoding: 'utf8',
        maxBuffer: 64 * 1024 * 1024,
        env: {
          ...inherited,
          ...env,
          CDK_OUTDIR: outdir,
          // The CLI passes cdk.json's context with the command line's; templates only, no esbuild bundling.
          CDK_CONTEXT_JSON: JSON.stringify({ ...cdkJsonContext, ...context, 'aws:cdk:bundling-stacks': [] }),
        },
      },
      (error, _stdout, stderr) =>
        resolve({ status: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stderr }),
    );
  });
  expect(run.status, run.stderr).toBe(0);
  const template = (stack: string) => {
    const file = join(outdir, `${stack}.template.json`);
    return existsSync(file)
      ? (JSON.parse(readFileSync(file, 'utf8')) as { Rules?: Record<string, unknown> })
      : null;
  };
  return { template };
}

afterAll(() => {
  for (const dir of outdirs) rmSync(dir, { recursive: true, force: true });
});

describe('the CDK app', () => {
  it('synthesizes the example without a config, as a stack that cannot be deployed under the real name', async () => {
    const { template } = await synthApp({});

    expect(template('CommCareExports')).toBeNull();
    const example = template('CommCareExports-example');
    expect(example?.Rules?.DeployableConfig).toMatchObject({
      Assertions: [{ AssertDescription: expect.stringContaining('EXPORTS_CONFIG') }],
    });
  });

  it('deploys the config named with --context config=<file>', async () => {
    const { template } = await synthApp({ config: 'exports.config.example.yaml' });

    const stack = template('CommCareExports');
    expect(stack).not.toBeNull();
    expect(stack?.Rules?.DeployableConfig).toBeUndefined();
  });
});

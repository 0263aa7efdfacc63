/** Builds the stack the way bin/app.ts does (cdk-nag included) for tests, from a config text. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { parseExportsConfig } from '../../functions/config/parse';
import { CommCareExportStack } from '../../lib/stack';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const fixtureHandler = fileURLToPath(new URL('./fixtures/handler.ts', import.meta.url));

export function buildStack(configText: string): { app: App; stack: CommCareExportStack } {
  // The config file name places query files relative to the repository root, like the example.
  const config = parseExportsConfig(configText, `${repoRoot}/exports.config.test.yaml`);
  // Same feature flags as `cdk synth` (cdk.json's context).
  const { context } = JSON.parse(readFileSync(`${repoRoot}/cdk.json`, 'utf8')) as {
    context: Record<string, unknown>;
  };
  // Tests assert the template, not the bundles: skip esbuild bundling (it made one synth take a
  // minute on a busy 2-core machine). `cdk synth` in CI still bundles every function.
  const app = new App({ context: { ...context, 'aws:cdk:bundling-stacks': [] } });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  const stack = new CommCareExportStack(app, config.stackName, { config, handlerEntry: fixtureHandler });
  return { app, stack };
}

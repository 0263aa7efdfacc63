/**
 * The CDK app: one stack built from the exports config named by `--context config=<file>` or
 * `EXPORTS_CONFIG=<file>`, checked by cdk-nag's AwsSolutions pack at synth.
 *
 * Without either, the app synthesizes the example config (so `cdk synth` shows what a deployment
 * holds) as a stack that cannot be deployed: CloudFormation refuses it before creating anything, and
 * its name (`<stackName>-example`) never matches a real deployment, so a `cdk destroy` without a
 * config cannot delete one either.
 */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { loadExportsConfig } from '../functions/config/load';
import { ConfigError } from '../functions/config/parse';
import { loadQueryFileTables } from '../lib/analytics';
import { CommCareExportStack } from '../lib/stack';

const EXAMPLE_CONFIG = 'exports.config.example.yaml';

const app = new App();
const chosen = (app.node.tryGetContext('config') as string | undefined) ?? process.env.EXPORTS_CONFIG;
const configFile = chosen ?? EXAMPLE_CONFIG;

let config: ReturnType<typeof loadExportsConfig>;
try {
  config = loadExportsConfig(configFile);
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(error.message);
    process.exit(1);
  }
  throw error;
}

// Parquet exports get a Glue table per query table: compile their query files before the (synchronous) synth.
await loadQueryFileTables(
  config.exports
    .filter((e) => e.output.type === 's3' && e.output.format === 'parquet')
    .flatMap((e) => (e.queryFilePath === null ? [] : [e.queryFilePath])),
);

Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
// Environment-agnostic on purpose: `cdk synth` runs offline (no account or AZ lookups); the account
// and region come from the AWS profile at deploy time.
new CommCareExportStack(app, chosen ? config.stackName : `${config.stackName}-example`, {
  config,
  description: 'CommCare HQ scheduled exports (commcare-export-service)',
  ...(chosen
    ? {}
    : {
        notDeployable: `no exports config given: deploy with EXPORTS_CONFIG=<file> or --context config=<file> (this stack is ${EXAMPLE_CONFIG}, for reading only)`,
      }),
});
app.synth();

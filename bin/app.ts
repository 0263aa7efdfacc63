/**
 * The CDK app: one stack built from the exports config named by `EXPORTS_CONFIG`
 * (default: exports.config.example.yaml), checked by cdk-nag's AwsSolutions pack at synth.
 */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { loadExportsConfig } from '../functions/config/load';
import { ConfigError } from '../functions/config/parse';
import { loadQueryFileTables } from '../lib/analytics';
import { CommCareExportStack } from '../lib/stack';

const configFile = process.env.EXPORTS_CONFIG ?? 'exports.config.example.yaml';

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
    .map((e) => e.queryFilePath),
);

const app = new App();
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
// Environment-agnostic on purpose: `cdk synth` runs offline (no account or AZ lookups); the account
// and region come from the AWS profile at deploy time.
new CommCareExportStack(app, config.stackName, {
  config,
  description: 'CommCare HQ scheduled exports (commcare-export-service)',
});
app.synth();

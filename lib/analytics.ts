/**
 * Makes a Parquet S3 export queryable the minute its first run finishes: a Glue database, one Glue
 * table per query table (columns and types from the query file, read at synth; partition projection
 * on `run_date`, so no crawler and no `MSCK REPAIR`), a `<table>_latest` view and named query per
 * table with an `id`, an Athena workgroup whose results are encrypted, and an analyst role that can
 * query them and read the export's prefix, nothing else.
 */
import { execFileSync } from 'node:child_process';
import { Aws, CfnOutput, type CfnResource, Stack, Validations } from 'aws-cdk-lib';
import * as athena from 'aws-cdk-lib/aws-athena';
import * as glue from 'aws-cdk-lib/aws-glue';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import type { TableSpec } from '../functions/query/types';
import { athenaName } from '../functions/sinks/formats/parquet/columns';
import {
  type GlueTableInput,
  glueLogicalName,
  glueManifestsTable,
  glueTableSets,
} from '../functions/sinks/formats/parquet/glue-tables';

export { prestoView } from '../functions/sinks/formats/parquet/glue-tables';

/** Where Athena writes query results, under the exports bucket (outside every export's prefix). */
export const ATHENA_RESULTS_PREFIX = 'athena-results/';

export interface ExportAnalyticsProps {
  /** The export's name; names the database (`<stack>_<export>`, Athena spelling) and the workgroup. */
  readonly exportName: string;
  /** Prefix of resource names (the stack name). */
  readonly namePrefix: string;
  /** The exports bucket. */
  readonly bucket: s3.IBucket;
  /**
   * The KMS key the bucket is encrypted with (SSE-KMS): Athena reads the files and writes query results
   * with the caller's permissions, so the analyst role may decrypt and encrypt with it (through S3
   * only), and the workgroup encrypts its results with it too.
   * @default - the bucket uses SSE-S3; results are SSE-S3
   */
  readonly bucketKey?: kms.IKey;
  /** The export's key prefix in the bucket, ending with "/" (e.g. `forms/`). */
  readonly prefix: string;
  /** The query file's tables (`queryFileTables`), in the order the query file has them. */
  readonly tables: readonly TableSpec[];
  /**
   * The export marks deletions (`deletions: mark`): every table has `_deleted` (boolean) and
   * `_deleted_at` (timestamp) after the query's columns, and the latest views leave marked rows out.
   * @default false - deletions are removed or ignored; deletion records still apply to the views
   */
  readonly deletionColumns?: boolean;
}

const TABLES_OF_QUERY_FILE = [
  'const [queryModule, file] = process.argv.slice(1);',
  'const { compileQueryFile } = await import(queryModule);',
  "const compiled = await compileQueryFile(file, { baseUrl: 'https://www.commcarehq.org' });",
  'const tables = compiled.sources.flatMap((s) => s.tables.map((t) => ({ name: t.name, headings: t.headings, dataTypes: t.dataTypes, valueKinds: t.valueKinds })));',
  'process.stdout.write(JSON.stringify(tables));',
].join('\n');

/**
 * The command that prints a query file's tables as JSON: a child Node process (through tsx, which
 * loads the TypeScript sources) that compiles the file as the export function compiles it.
 */
export function queryFileTablesCommand(queryFilePath: string): { command: string; args: string[] } {
  const queryModule = new URL('../functions/query/index.ts', import.meta.url).href;
  return {
    command: process.execPath,
    args: ['--import', 'tsx', '--input-type=module', '-e', TABLES_OF_QUERY_FILE, queryModule, queryFilePath],
  };
}

const tablesByFile = new Map<string, TableSpec[]>();

function distinctTables(tables: readonly TableSpec[]): TableSpec[] {
  const seen = new Set<string>();
  return tables
    .filter((t) => !seen.has(t.name) && seen.add(t.name))
    .map((t) => ({
      name: t.name,
      headings: [...t.headings],
      dataTypes: [...t.dataTypes],
      ...(t.valueKinds ? { valueKinds: [...t.valueKinds] } : {}),
    }));
}

/**
 * Compiles the query files in this process and keeps their tables for `queryFileTables`. The CDK app
 * calls it before building the stack; synth itself is synchronous, and reading a workbook is not.
 */
export async function loadQueryFileTables(queryFilePaths: readonly string[]): Promise<void> {
  const { compileQueryFile } = await import('../functions/query');
  for (const path of queryFilePaths) {
    const compiled = await compileQueryFile(path, { baseUrl: 'https://www.commcarehq.org' });
    tablesByFile.set(path, distinctTables(compiled.sources.flatMap((s) => s.tables)));
  }
}

/**
 * The tables of a DET query file, compiled as the export function compiles it: those loaded by
 * `loadQueryFileTables`, else compiled now in a child process (synth is synchronous).
 */
export function queryFileTables(queryFilePath: string): TableSpec[] {
  const loaded = tablesByFile.get(queryFilePath);
  if (loaded) return loaded;
  const { command, args } = queryFileTablesCommand(queryFilePath);
  const out = execFileSync(command, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const tables = distinctTables(JSON.parse(out) as TableSpec[]);
  tablesByFile.set(queryFilePath, tables);
  return tables;
}

/** Glue database names: lower case, letters, digits and `_`, at most 255 characters. */
export function analyticsDatabaseName(namePrefix: string, exportName: string): string {
  return athenaName(`${namePrefix}_${exportName}`).slice(0, 255);
}

export class ExportAnalytics extends Construct {
  /** Name of the Glue database (the Athena schema). */
  public readonly databaseName: string;
  /** Name of the Athena workgroup analysts query in. */
  public readonly workGroupName: string;
  public readonly database: glue.CfnDatabase;
  public readonly workGroup: athena.CfnWorkGroup;
  /** Glue table per query table, by the query's table name. */
  public readonly tables: ReadonlyMap<string, glue.CfnTable>;
  /** Role an analyst (any principal of this account allowed to assume it) uses to query this export. */
  public readonly analystRole: iam.Role;

  constructor(scope: Construct, id: string, props: ExportAnalyticsProps) {
    super(scope, id);
    if (!/^[^*?]+\/$/.test(props.prefix) || props.prefix.startsWith(ATHENA_RESULTS_PREFIX)) {
      throw new Error(
        `ExportAnalytics ${props.exportName}: prefix ${JSON.stringify(props.prefix)} must end with "/" and not be under ${ATHENA_RESULTS_PREFIX}`,
      );
    }
    const { bucket, prefix } = props;
    const db = analyticsDatabaseName(props.namePrefix, props.exportName);
    this.databaseName = db;
    this.workGroupName = `${props.namePrefix}-${props.exportName}`;
    const resultsPrefix = `${ATHENA_RESULTS_PREFIX}${props.exportName}/`;

    this.database = new glue.CfnDatabase(this, 'Database', {
      catalogId: Aws.ACCOUNT_ID,
      databaseInput: {
        name: db,
        description: `CommCare export ${props.exportName}: Parquet under s3://<exports bucket>/${prefix}`,
      },
    });

    this.workGroup = new athena.CfnWorkGroup(this, 'WorkGroup', {
      name: this.workGroupName,
      description: `Queries over the CommCare export ${props.exportName}`,
      recursiveDeleteOption: true,
      state: 'ENABLED',
      workGroupConfiguration: {
        enforceWorkGroupConfiguration: true,
        publishCloudWatchMetricsEnabled: true,
        resultConfiguration: {
          outputLocation: `s3://${bucket.bucketName}/${resultsPrefix}`,
          encryptionConfiguration: props.bucketKey
            ? { encryptionOption: 'SSE_KMS', kmsKey: props.bucketKey.keyArn }
            : { encryptionOption: 'SSE_S3' },
        },
      },
    });

    const tables = new Map<string, glue.CfnTable>();
    let manifests: glue.CfnTable | undefined;
    const sets = glueTableSets(props.tables, {
      database: db,
      bucketName: bucket.bucketName,
      prefix,
      exportName: props.exportName,
      ...(props.deletionColumns ? { deletionColumns: true } : {}),
    });
    for (const set of sets) {
      const logical = glueLogicalName(set.table);
      const data = new glue.CfnTable(this, `Table-${logical}`, {
        catalogId: Aws.ACCOUNT_ID,
        databaseName: db,
        tableInput: cfnTableInput(set.data),
      });
      data.addResourceDependency(this.database);
      tables.set(set.table, data);
      if (set.deletions === null || set.latest === null || set.latestSql === null) continue;

      const deletions = new glue.CfnTable(this, `Deletions-${logical}`, {
        catalogId: Aws.ACCOUNT_ID,
        databaseName: db,
        tableInput: cfnTableInput(set.deletions),
      });
      deletions.addResourceDependency(this.database);

      // The views apply only the deletions objects a manifest lists: one table over manifests/.
      if (!manifests) {
        manifests = new glue.CfnTable(this, 'Manifests', {
          catalogId: Aws.ACCOUNT_ID,
          databaseName: db,
          tableInput: cfnTableInput(glueManifestsTable({ bucketName: bucket.bucketName, prefix })),
        });
        manifests.addResourceDependency(this.database);
      }

      const view = new glue.CfnTable(this, `Latest-${logical}`, {
        catalogId: Aws.ACCOUNT_ID,
        databaseName: db,
        tableInput: cfnTableInput(set.latest),
      });
      view.addResourceDependency(data);
      view.addResourceDependency(deletions);
      view.addResourceDependency(manifests);

      const name = set.data.name;
      const named = new athena.CfnNamedQuery(this, `LatestQuery-${logical}`, {
        name: `${name}_latest`,
        description: `Current state of "${set.table}" (the same SQL as the view ${name}_latest)`,
        database: db,
        workGroup: this.workGroupName,
        queryString: set.latestSql,
      });
      named.addResourceDependency(this.workGroup);
      named.addResourceDependency(this.database);
    }
    this.tables = tables;

    new CfnOutput(this, 'WorkGroupName', {
      description: `Athena workgroup of export ${props.exportName}`,
      value: this.workGroupName,
    });
    new CfnOutput(this, 'DatabaseName', {
      description: `Glue database (Athena schema) of export ${props.exportName}`,
      value: db,
    });

    this.analystRole = new iam.Role(this, 'AnalystRole', {
      assumedBy: new iam.AccountRootPrincipal(),
      description: `Query the CommCare export ${props.exportName} in Athena (workgroup ${this.workGroupName})`,
    });
    this.grantQuery(this.analystRole, bucket, prefix, resultsPrefix);
    if (props.bucketKey) {
      iam.Grant.addToPrincipal({
        grantee: this.analystRole,
        actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
        resourceArns: [props.bucketKey.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `s3.${Stack.of(this).region}.amazonaws.com` } },
      });
    }
    new CfnOutput(this, 'AnalystRoleArn', {
      description: `Role to assume for querying export ${props.exportName} in Athena`,
      value: this.analystRole.roleArn,
    });
  }

  /**
   * Lets `grantee` run queries in this export's workgroup: read the catalog of its database, read
   * the export's prefix, and write and read query results under its own results prefix.
   */
  private grantQuery(
    grantee: iam.IGrantable,
    bucket: s3.IBucket,
    prefix: string,
    resultsPrefix: string,
  ): void {
    const stack = Stack.of(this);
    const workGroupArn = stack.formatArn({
      service: 'athena',
      resource: 'workgroup',
      resourceName: this.workGroupName,
    });
    iam.Grant.addToPrincipal({
      grantee,
      actions: [
        'athena:StartQueryExecution',
        'athena:StopQueryExecution',
        'athena:GetQueryExecution',
        'athena:GetQueryResults',
        'athena:GetQueryResultsStream',
        'athena:ListQueryExecutions',
        'athena:GetWorkGroup',
        'athena:ListNamedQueries',
        'athena:GetNamedQuery',
        'athena:BatchGetNamedQuery',
        'athena:BatchGetQueryExecution',
      ],
      resourceArns: [workGroupArn],
    });
    iam.Grant.addToPrincipal({
      grantee,
      actions: [
        'glue:GetDatabase',
        'glue:GetTable',
        'glue:GetTables',
        'glue:GetPartition',
        'glue:GetPartitions',
      ],
      resourceArns: [
        stack.formatArn({ service: 'glue', resource: 'catalog' }),
        stack.formatArn({ service: 'glue', resource: 'database', resourceName: this.databaseName }),
        stack.formatArn({ service: 'glue', resource: 'table', resourceName: `${this.databaseName}/*` }),
      ],
    });
    iam.Grant.addToPrincipal({
      grantee,
      actions: ['s3:GetObject'],
      resourceArns: [bucket.arnForObjects(`${prefix}*`)],
    });
    iam.Grant.addToPrincipal({
      grantee,
      actions: ['s3:GetObject', 's3:PutObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'],
      resourceArns: [bucket.arnForObjects(`${resultsPrefix}*`)],
    });
    iam.Grant.addToPrincipal({
      grantee,
      actions: ['s3:ListBucket'],
      resourceArns: [bucket.bucketArn],
      conditions: { StringLike: { 's3:prefix': [`${prefix}*`, `${resultsPrefix}*`] } },
    });
    iam.Grant.addToPrincipal({
      grantee,
      actions: ['s3:GetBucketLocation', 's3:ListBucketMultipartUploads'],
      resourceArns: [bucket.bucketArn],
    });
    const principal = grantee.grantPrincipal;
    const bucketResource = bucket.node.defaultChild as CfnResource | undefined;
    if (principal instanceof Construct && bucketResource) {
      const bucketArn = `<${stack.getLogicalId(bucketResource)}.Arn>`;
      Validations.of(principal).acknowledge(
        {
          id: `AwsSolutions-IAM5[Resource::${bucketArn}/${prefix}*]`,
          reason: `Analysts read the files of every run of this export, under its own prefix ${prefix} only.`,
        },
        {
          id: `AwsSolutions-IAM5[Resource::${bucketArn}/${resultsPrefix}*]`,
          reason: `Athena writes this workgroup's query results under its own prefix ${resultsPrefix}.`,
        },
        {
          id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:glue:<AWS::Region>:<AWS::AccountId>:table/${this.databaseName}/*]`,
          reason: `Read-only catalog access to the tables of this export's own Glue database ${this.databaseName}, including tables a later deploy adds.`,
        },
      );
    }
  }
}

/** A table input as `glue.CfnTable` takes it (mutable arrays). */
function cfnTableInput(input: GlueTableInput): glue.CfnTable.TableInputProperty {
  const { partitionKeys, storageDescriptor: sd, ...rest } = input;
  return {
    ...rest,
    ...(partitionKeys ? { partitionKeys: [...partitionKeys] } : {}),
    storageDescriptor: { ...sd, columns: [...sd.columns] },
  };
}

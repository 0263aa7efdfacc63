/**
 * The schema of `exports.config.yaml`: the one file a user edits to say which exports run, when, with
 * which key, and where the rows go. Parsed once (by the CDK app at synth, and by the CLI), validated
 * loudly; see `parse.ts` for the entry point and the cross-field checks.
 */
import { z } from 'zod';
import { parseByteSize } from '../commcare/budget';
import { cronProblem } from './schedule';

/** Lower-case kebab names: they become parts of AWS resource names, S3 prefixes and metric dimensions. */
const NAME = /^[a-z][a-z0-9-]{0,38}[a-z0-9]$/;
const name = (what: string) =>
  z.string().refine((v) => NAME.test(v), {
    error: (iss) =>
      `${JSON.stringify(iss.input)} is not a valid ${what} name; expected 2-40 characters of a-z, 0-9 and "-", starting with a letter`,
  });

/** A CommCare project space (domain) name as HQ allows it in URLs. */
const PROJECT = /^[a-z0-9][a-z0-9-]*$/;
export const projectSchema = z.string().refine((v) => PROJECT.test(v), {
  error: (iss) =>
    `${JSON.stringify(iss.input)} is not a CommCare project space name; expected lower-case letters, digits and "-"`,
});

const httpsUrl = z.string().refine(
  (v) => {
    try {
      const u = new URL(v);
      // A key travels in the Authorization header; plain http would expose it. Loopback is allowed for
      // the local sandbox server.
      return (
        u.protocol === 'https:' || (u.protocol === 'http:' && ['127.0.0.1', 'localhost'].includes(u.hostname))
      );
    } catch {
      return false;
    }
  },
  { error: (iss) => `${JSON.stringify(iss.input)} is not an https URL` },
);

/** True for names EventBridge Scheduler accepts as `ScheduleExpressionTimezone` (IANA zone names). */
export function isIanaTimeZone(value: string): boolean {
  // Intl also accepts offsets such as "+05:30", which Scheduler does not.
  if (!/^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+)*$/.test(value)) return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: value });
    return true;
  } catch {
    return false;
  }
}

const timeZone = z.string().refine(isIanaTimeZone, {
  error: (iss) => `${JSON.stringify(iss.input)} is not an IANA time zone (e.g. "Africa/Nairobi", "UTC")`,
});

const cron = z.string().superRefine((v, ctx) => {
  const problem = cronProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem, input: v });
});

/**
 * Rotation policy of one key. Field names and defaults follow the key secret's `policy`
 * (`functions/keys/secret.ts`), which the rotation function reads.
 */
const rotation = z.strictObject({
  /**
   * Key names are `<namePrefix>-YYYY-MM` (Dimagi's advice: name a key after its month). Defaults to the
   * credential's name, so two deployments (or two credentials) never share key names.
   */
  namePrefix: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$/, {
      error: 'expected 1-41 characters of A-Z, a-z, 0-9, "_", "." and "-"',
    })
    .optional(),
  /** IANA zone in which months start. */
  timeZone: timeZone.default('UTC'),
  /** Rotate this many days before the month the key serves. */
  leadDays: z.number().int().min(1).max(28).default(7),
  /** Days the previous key stays valid after the switch. */
  graceDays: z.number().int().min(0).max(60).default(7),
  /** CommCare (no key API): first reminder to the key owner this many days before the month starts. */
  reminderDays: z.number().int().min(1).max(28).default(14),
  /**
   * CommCare only: the key is restricted to the deployment's egress addresses (HQ's "IP allow-list"),
   * which the reminders name. Default: true for CommCare. Set false for a key without an allow-list
   * (the reminders then say to leave it empty); required to run a CommCare key with `network.mode: none`
   * without a synth warning, since that mode has no fixed address.
   */
  ipAllowList: z.boolean().optional(),
  /** Who is reminded to create the new key where the provider has no key API (CommCare). */
  reminderEmail: z
    .email({ error: (iss) => `${JSON.stringify(iss.input)} is not an e-mail address` })
    .optional(),
});

export const credentialSchema = z.strictObject({
  name: name('credential'),
  provider: z.enum(['commcare', 'conduce', 'civicrm'], {
    error: (iss) =>
      `${JSON.stringify(iss.input)} is not a key provider; expected "commcare", "conduce" or "civicrm"`,
  }),
  baseUrl: httpsUrl,
  /** The HQ web user that owns the key (an e-mail address on HQ). */
  username: z.string().min(1, { error: 'expected a non-empty username' }),
  /** Project spaces the key may read; exports using this credential must stay within them. */
  projects: z.array(projectSchema).min(1, { error: 'expected at least one project' }),
  rotation: rotation.prefault({}),
  /**
   * Take over the key secret a torn-down stack left behind (secrets are retained), instead of creating
   * one: its complete ARN (the old stack's `CredentialSecret<Name>` output) and the KMS key that
   * encrypts it (`aws secretsmanager describe-secret ... --query KmsKeyId`). docs/deploy.md,
   * "Deploying again after a tear-down".
   */
  adoptSecret: z
    .strictObject({
      secretArn: z
        .string()
        .refine((v) => /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+-[A-Za-z0-9]{6}$/.test(v), {
          error: (iss) =>
            `${JSON.stringify(iss.input)} is not a complete secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 characters>)`,
        }),
      kmsKeyArn: z.string().refine((v) => /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[0-9a-f-]+$/.test(v), {
        error: (iss) =>
          `${JSON.stringify(iss.input)} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)`,
      }),
    })
    .optional(),
  /** CiviCRM holds one key per contact, so rotation alternates between two service contacts. */
  civicrm: z
    .strictObject({
      contactIds: z.strictObject({ a: z.number().int().positive(), b: z.number().int().positive() }),
    })
    .optional(),
});

const s3Output = z.strictObject({
  type: z.literal('s3'),
  format: z.enum(['csv', 'xlsx', 'json', 'markdown', 'parquet'], {
    error: (iss) =>
      `${JSON.stringify(iss.input)} is not an output format; expected csv, xlsx, json, markdown or parquet`,
  }),
  /** Also keep `latest/<table>.<ext>` (the current table, replaced after each run). */
  keepLatest: z.boolean().optional(),
  /** Key prefix in the exports bucket; the export's role may write under it only. */
  prefix: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9!_.*'()/-]*\/$/, {
    error: 'expected a key prefix such as "forms/" (safe S3 key characters, ending with "/")',
  }),
});

const postgresOutput = z.strictObject({
  type: z.literal('postgres'),
  /** Schema the tables are created in (created if missing). */
  schema: z
    .string()
    .regex(/^[a-z_][a-z0-9_]{0,62}$/, { error: 'expected a PostgreSQL schema name (a-z, 0-9, "_")' }),
});

/** Where an export's rows go; also checks the output of every job the export function receives. */
export const exportOutputSchema = z.discriminatedUnion('type', [s3Output, postgresOutput], {
  error: (iss) =>
    `${JSON.stringify((iss.input as { type?: unknown } | undefined)?.type)} is not an output type; expected "s3" or "postgres"`,
});

/** Weekly, Sunday 03:00 (EventBridge Scheduler cron). */
export const DEFAULT_RECONCILE_CRON = '0 3 ? * SUN *';

export const exportSchema = z.strictObject({
  name: name('export'),
  /** One project, or several run in parallel by the state machine's Map state. */
  projects: z.array(projectSchema).min(1, { error: 'expected at least one project' }),
  credential: z.string().min(1),
  /**
   * DET query file (.xlsx or JSON), relative to the config file; bundled with the export's function.
   * Either this or `query.hqExport`.
   */
  queryFile: z.string().min(1).optional(),
  /**
   * An export defined in CommCare HQ's Export Data screens, by name or id: each run downloads its
   * current DET config at its start (README, "Exports defined in HQ"). Either this or `queryFile`.
   */
  query: z.strictObject({ hqExport: z.string().min(1) }).optional(),
  output: exportOutputSchema,
  schedule: z.strictObject({ cron, timezone: timeZone.default('UTC') }),
  mode: z
    .enum(['incremental', 'snapshot'], {
      error: (iss) => `${JSON.stringify(iss.input)} is not a mode; expected "incremental" or "snapshot"`,
    })
    .default('incremental'),
  /**
   * Projects exported at the same time. HQ rate-limits per project space (and pools enterprise
   * accounts), so parallel projects rarely throttle each other; keep it low for enterprise accounts.
   */
  concurrency: z.number().int().min(1).max(10).default(2),
  /**
   * Lambda memory for this export. 512 MB from measurement (docs/deploy.md, "Export function: memory
   * and cost per record"): the engine peaks at ~140–180 MB for csv, and against HQ's page latency a
   * bigger function only waits faster. Raise it for xlsx output of very wide forms.
   */
  memoryMb: z.number().int().min(256).max(10240).default(512),
  /**
   * Records HQ archived or deleted: `remove` their rows (default), `mark` them (`_deleted`,
   * `_deleted_at`), or `ignore` them (DET). See the README's "Deletions and archives".
   */
  deletions: z
    .enum(['remove', 'mark', 'ignore'], {
      error: (iss) =>
        `${JSON.stringify(iss.input)} is not a deletions mode; expected "remove", "mark" or "ignore"`,
    })
    .default('remove'),
  /**
   * The run's budget from HQ (functions/commcare/budget.ts): a run stops with an error once HQ has sent
   * more than `maxRecords` records or `maxBytes` bytes (after decompression; a number, or a size such as
   * "50GB" or "1TiB"), all projects' slices of one run counted per project. Guards against an HQ whose
   * pages never end; the defaults (100,000,000 records, 1 TiB) never stop a real export.
   */
  maxRecords: z.number().int().positive().optional(),
  maxBytes: z
    .union([
      z.number().int().positive(),
      z.string().refine((v) => parseByteSize(v) !== null, {
        error: (iss) =>
          `${JSON.stringify(iss.input)} is not a size; expected e.g. 500MB, 20GiB, 1TB or a number of bytes`,
      }),
    ])
    .transform((v) => (typeof v === 'number' ? v : (parseByteSize(v) as number)))
    .optional(),
  /**
   * When `ccexport reconcile` runs for the export (rows of ids HQ no longer lists are removed or marked
   * in PostgreSQL, recorded as deletions in S3 csv, json, xlsx and parquet outputs): weekly by default
   * (Sunday 03:00 UTC), or `off`. `maxShare`: the reconcile fails, changing nothing, when a table would
   * lose more than this share of its rows. Ignored for markdown outputs and `deletions: ignore`.
   */
  reconcile: z
    .union([
      z.literal('off'),
      z.strictObject({
        cron,
        timezone: timeZone.default('UTC'),
        maxShare: z.number().gt(0).max(1).default(0.2),
      }),
    ])
    .default({ cron: DEFAULT_RECONCILE_CRON, timezone: 'UTC', maxShare: 0.2 }),
});

const elasticIps = z.union(
  [
    z.strictObject({ create: z.number().int().min(1).max(2) }),
    z.strictObject({
      allocationIds: z
        .array(
          z.string().refine((v) => /^eipalloc-[0-9a-f]{8,17}$/.test(v), {
            error: (iss) => `${JSON.stringify(iss.input)} is not an Elastic IP allocation id (eipalloc-...)`,
          }),
        )
        .min(1)
        .max(2),
    }),
  ],
  {
    error:
      'expected { create: 1 | 2 } or { allocationIds: [eipalloc-...] } (one NAT gateway per address, at most 2)',
  },
);

/**
 * How the functions reach CommCare HQ (docs/deploy.md compares cost):
 * - `nat`: a new VPC whose private subnets leave through NAT gateways on fixed Elastic IPs (HQ key
 *   allow-lists accept single IPv4 addresses);
 * - `nat-instance`: the same VPC with one small EC2 NAT instance on one Elastic IP instead of NAT
 *   gateways (a few dollars a month; the instance is the operator's to patch);
 * - `existing`: the functions run in the private subnets of a VPC the operator already has (e.g. the
 *   one an existing database lives in); its own NAT decides the egress addresses;
 * - `none`: no VPC at all; the functions run outside any VPC, from addresses Lambda shares and changes
 *   (no allow-list can name them), with no database of our own (the cheapest mode).
 */
const network = z
  .strictObject({
    mode: z
      .enum(['nat', 'nat-instance', 'existing', 'none'], {
        error: (iss) =>
          `${JSON.stringify(iss.input)} is not a network mode; expected "nat", "nat-instance", "existing" or "none"`,
      })
      .default('nat'),
    elasticIps: elasticIps.optional(),
    /** nat-instance: EC2 instance type of the NAT instance (Graviton: arm64 Amazon Linux 2023). */
    natInstanceType: z
      .string()
      .regex(/^[a-z][a-z0-9]*g[a-z0-9]*\.[a-z0-9]+$/, {
        error: 'expected a Graviton instance type such as "t4g.nano"',
      })
      .default('t4g.nano'),
    /** existing: the VPC id. */
    vpcId: z
      .string()
      .regex(/^vpc-[0-9a-f]{8,17}$/, { error: 'expected a VPC id (vpc-...)' })
      .optional(),
    /** existing: private subnets with a route to the internet (through the VPC's NAT). */
    subnetIds: z
      .array(z.string().regex(/^subnet-[0-9a-f]{8,17}$/, { error: 'expected a subnet id (subnet-...)' }))
      .min(1)
      .optional(),
    /** existing: the public addresses the VPC's NAT uses (shown as the EgressIps output). */
    egressIps: z
      .array(
        z
          .string()
          .regex(/^(\d{1,3}\.){3}\d{1,3}$/, { error: 'expected an IPv4 address such as 203.0.113.10' }),
      )
      .optional(),
  })
  .superRefine((n, ctx) => {
    const problem = (path: string, message: string) =>
      ctx.addIssue({ code: 'custom', path: [path], message });
    if (n.mode === 'existing') {
      if (!n.vpcId) problem('vpcId', 'is missing; mode "existing" needs the VPC id');
      if (!n.subnetIds)
        problem('subnetIds', 'is missing; mode "existing" needs private subnets with internet egress');
      if (n.elasticIps)
        problem('elasticIps', 'mode "existing" uses the VPC\'s own NAT; list its addresses in egressIps');
    } else {
      for (const field of ['vpcId', 'subnetIds', 'egressIps'] as const) {
        if (n[field]) problem(field, `only for mode "existing" (this is mode "${n.mode}")`);
      }
    }
    if (n.mode === 'none' && n.elasticIps) {
      problem(
        'elasticIps',
        'mode "none" has no NAT and no fixed address; remove elasticIps or choose mode "nat"',
      );
    }
    if (n.mode === 'nat-instance' && n.elasticIps) {
      const count = 'create' in n.elasticIps ? n.elasticIps.create : n.elasticIps.allocationIds.length;
      if (count !== 1) problem('elasticIps', 'mode "nat-instance" has one NAT instance: one Elastic IP');
    }
  })
  .transform((n) => ({
    ...n,
    elasticIps:
      n.elasticIps ?? (n.mode === 'existing' || n.mode === 'none' ? undefined : { create: 1 as const }),
  }));

const database = z.discriminatedUnion(
  'type',
  [
    z.strictObject({ type: z.literal('none') }),
    z.strictObject({
      type: z.literal('create'),
      /** RDS instance class without the "db." prefix. */
      instanceType: z
        .string()
        .regex(/^[a-z0-9]+\.[a-z0-9]+$/, { error: 'expected an instance type such as "t4g.micro"' })
        .default('t4g.micro'),
      allocatedStorageGb: z.number().int().min(20).max(65536).default(20),
      databaseName: z
        .string()
        .regex(/^[a-z_][a-z0-9_]{0,62}$/)
        .default('exports'),
      backupRetentionDays: z.number().int().min(1).max(35).default(7),
      deletionProtection: z.boolean().default(true),
      multiAz: z.boolean().default(false),
      /** Days between automatic rotations of the generated master password. */
      rotationDays: z.number().int().min(1).max(365).default(30),
      /**
       * Keep the instance identifier CloudFormation generated (a stack whose database was created
       * before the identifier became `<stack name>-exports`). Giving such an instance the fixed
       * identifier would make CloudFormation replace it with a new, empty database; with this set, it
       * keeps its name and the stack does not manage its PostgreSQL log group (RDS's own, kept
       * forever unless you set a retention on it).
       */
      generatedIdentifier: z.boolean().default(false),
    }),
    z.strictObject({
      type: z.literal('existing'),
      /** Secret holding `{ host, port, username, password, dbname }` (the RDS secret shape). */
      secretArn: z
        .string()
        .refine((v) => /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$/.test(v), {
          error: (iss) => `${JSON.stringify(iss.input)} is not a Secrets Manager secret ARN`,
        }),
      /** Security group of the database, to open its port to the export functions. */
      securityGroupId: z
        .string()
        .regex(/^sg-[0-9a-f]{8,17}$/, { error: 'expected a security group id (sg-...)' })
        .optional(),
      port: z.number().int().min(1).max(65535).default(5432),
      /** The customer-managed KMS key the secret is encrypted with (the functions get kms:Decrypt on it). */
      kmsKeyArn: z
        .string()
        .refine((v) => /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[0-9a-f-]+$/.test(v), {
          error: (iss) =>
            `${JSON.stringify(iss.input)} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)`,
        })
        .optional(),
    }),
  ],
  {
    error: (iss) =>
      `${JSON.stringify((iss.input as { type?: unknown } | undefined)?.type)} is not a database type; expected "none", "create" or "existing"`,
  },
);

/**
 * The exports bucket (created when an export writes to S3). `encryption`: `kms` (default) encrypts
 * with a customer-managed KMS key of the stack (SSE-KMS: reading a file also needs kms:Decrypt on the
 * key, so access to health data is controlled twice); `s3-managed` uses SSE-S3 (S3's own keys; no key
 * to pay for or grant, anyone with s3:GetObject reads).
 */
const bucket = z.strictObject({
  encryption: z
    .enum(['kms', 's3-managed'], {
      error: (iss) =>
        `${JSON.stringify(iss.input)} is not a bucket encryption; expected "kms" or "s3-managed"`,
    })
    .default('kms'),
});

export const exportsConfigSchema = z.strictObject({
  /** CloudFormation stack name; also the prefix of named resources. */
  stackName: z
    .string()
    .regex(/^[A-Za-z][A-Za-z0-9-]{0,39}$/)
    .default('CommCareExports'),
  /** Where alarms are sent (an SNS e-mail subscription; confirm the e-mail AWS sends). */
  alarmEmail: z.email({ error: (iss) => `${JSON.stringify(iss.input)} is not an e-mail address` }),
  /** A run is stale when no run has succeeded within this many schedule periods. */
  staleRunMultiple: z.number().min(1).max(30).default(2),
  network: network.prefault({}),
  bucket: bucket.prefault({}),
  database: database.prefault({ type: 'none' }),
  credentials: z.array(credentialSchema).min(1, { error: 'expected at least one credential' }),
  exports: z.array(exportSchema).min(1, { error: 'expected at least one export' }),
});

export type ExportsConfigInput = z.input<typeof exportsConfigSchema>;
export type CredentialConfig = z.output<typeof credentialSchema>;
export type ExportConfig = z.output<typeof exportSchema>;
export type ExportOutputConfig = ExportConfig['output'];
export type DatabaseConfig = z.output<typeof exportsConfigSchema>['database'];
export type ElasticIpsConfig = NonNullable<z.output<typeof exportsConfigSchema>['network']['elasticIps']>;
export type NetworkConfig = z.output<typeof exportsConfigSchema>['network'];

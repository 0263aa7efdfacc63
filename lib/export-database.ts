/**
 * The PostgreSQL database exports may write to: a new private RDS instance, or an existing database
 * given by the ARN of its credentials secret.
 */
import { Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';

export interface NewDatabaseOptions {
  /**
   * The DB instance identifier (1-63 lower-case letters, digits and single hyphens, starting with a
   * letter). Fixed so that the instance's log group name is known at synth. Changing it replaces the
   * instance.
   * @default - `<stack name>-exports`, in RDS spelling
   */
  readonly instanceIdentifier?: string;
  /**
   * Leave the identifier to CloudFormation, as stacks created before the fixed identifier did:
   * adding an identifier to such an instance replaces it (a new, empty database). The PostgreSQL log
   * group is then RDS's own (its name is not known at synth), without a retention set by the stack.
   * Ignored when `instanceIdentifier` is given.
   * @default false
   */
  readonly generatedIdentifier?: boolean;
  /**
   * How long the PostgreSQL log (exported to CloudWatch Logs) is kept.
   * @default logs.RetentionDays.THREE_MONTHS
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * Instance type.
   * @default t4g.micro
   */
  readonly instanceType?: ec2.InstanceType;
  /**
   * Storage in GiB (20 to 65,536); grows automatically up to four times this.
   * @default 20
   */
  readonly allocatedStorageGb?: number;
  /**
   * Name of the database created on the instance.
   * @default "exports"
   */
  readonly databaseName?: string;
  /**
   * Days automated backups are kept (1 to 35).
   * @default 7
   */
  readonly backupRetentionDays?: number;
  /**
   * Whether the instance refuses deletion (CloudFormation cannot delete it until this is turned off).
   * @default true
   */
  readonly deletionProtection?: boolean;
  /**
   * A standby in a second zone.
   * @default false - one instance; exports can be re-run from HQ, backups restore the rest
   */
  readonly multiAz?: boolean;
  /**
   * Interval of the generated password's automatic rotation.
   * @default Duration.days(30)
   */
  readonly rotationInterval?: Duration;
}

export interface ExistingDatabaseOptions {
  /** ARN of a secret with `{ host, port, username, password, dbname }` (the RDS secret shape). */
  readonly secretArn: string;
  /**
   * Security group of the database; when given, its port is opened to the export functions.
   * @default - no ingress rule is added; open the database to the functions' security group yourself
   */
  readonly securityGroupId?: string;
  /**
   * Port the database listens on.
   * @default 5432
   */
  readonly port?: number;
  /**
   * ARN of the customer-managed KMS key that encrypts the secret; readers of the secret get
   * kms:Decrypt on it (through Secrets Manager only).
   * @default - the secret uses the AWS managed key aws/secretsmanager, which needs no grant
   */
  readonly kmsKeyArn?: string;
}

export interface ExportDatabaseProps {
  /**
   * VPC of the export functions and of a new instance. Required with `create`.
   * @default - no VPC (an existing database reached over the internet)
   */
  readonly vpc?: ec2.IVpc;
  /**
   * Subnets for a new instance; should have no internet route. Required with `create`.
   * @default - none
   */
  readonly vpcSubnets?: ec2.SubnetSelection;
  /**
   * Subnets with egress for the rotation function (it calls the Secrets Manager API). Required with `create`.
   * @default - none
   */
  readonly rotationSubnets?: ec2.SubnetSelection;
  /**
   * Create a new instance with these options. Exactly one of `create` and `existing` must be set.
   * @default - no new instance
   */
  readonly create?: NewDatabaseOptions;
  /**
   * Use an existing database.
   * @default - no existing database
   */
  readonly existing?: ExistingDatabaseOptions;
}

/** A database endpoint that export functions may connect to, and the secret they connect with. */
export class ExportDatabase extends Construct {
  /** Secret with the connection details (`host`, `port`, `username`, `password`, `dbname`). */
  public readonly secret: secretsmanager.ISecret;
  /** The new instance, when one was created. */
  public readonly instance?: rds.DatabaseInstance;
  private readonly port: number;
  private readonly secretKeyArn?: string;
  private readonly securityGroup?: ec2.ISecurityGroup;

  constructor(scope: Construct, id: string, props: ExportDatabaseProps) {
    super(scope, id);
    if (!!props.create === !!props.existing) {
      throw new Error('ExportDatabase: set exactly one of `create` and `existing`');
    }
    if (props.existing) {
      this.secret = secretsmanager.Secret.fromSecretCompleteArn(this, 'Secret', props.existing.secretArn);
      this.secretKeyArn = props.existing.kmsKeyArn;
      this.port = props.existing.port ?? 5432;
      if (props.existing.securityGroupId) {
        this.securityGroup = ec2.SecurityGroup.fromSecurityGroupId(
          this,
          'SecurityGroup',
          props.existing.securityGroupId,
          {
            mutable: true,
          },
        );
      }
      return;
    }

    const opts = props.create as NewDatabaseOptions;
    if (!props.vpc || !props.vpcSubnets || !props.rotationSubnets) {
      throw new Error(
        'ExportDatabase: a new instance needs a VPC (vpc, vpcSubnets, rotationSubnets); network.mode "none" has none',
      );
    }
    const storage = opts.allocatedStorageGb ?? 20;
    const identifier =
      opts.instanceIdentifier ??
      (opts.generatedIdentifier ? undefined : rdsIdentifier(`${Stack.of(this).stackName}-exports`));
    if (
      identifier !== undefined &&
      (!/^[a-z](?!.*--)[a-z0-9-]{0,62}$/.test(identifier) || identifier.endsWith('-'))
    ) {
      throw new Error(
        `ExportDatabase: instanceIdentifier ${JSON.stringify(identifier)} is not an RDS identifier (1-63 lower-case letters, digits and single hyphens, starting with a letter)`,
      );
    }
    // RDS exports the PostgreSQL log to this group, creating it without a retention (kept forever) if
    // it does not exist. Created here first, with a retention, RDS writes into it instead. No custom
    // resource is needed (cloudwatchLogsRetention would add a Lambda-backed one).
    const logGroup =
      identifier === undefined
        ? undefined
        : new logs.LogGroup(this, 'PostgresLog', {
            logGroupName: `/aws/rds/instance/${identifier}/postgresql`,
            retention: opts.logRetention ?? logs.RetentionDays.THREE_MONTHS,
            removalPolicy: RemovalPolicy.DESTROY,
          });
    const instance = new rds.DatabaseInstance(this, 'Instance', {
      ...(identifier === undefined ? {} : { instanceIdentifier: identifier }),
      engine: rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.VER_17 }),
      instanceType: opts.instanceType ?? ec2.InstanceType.of(ec2.InstanceClass.T4G, ec2.InstanceSize.MICRO),
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets,
      credentials: rds.Credentials.fromGeneratedSecret('exporter'),
      databaseName: opts.databaseName ?? 'exports',
      allocatedStorage: storage,
      maxAllocatedStorage: storage * 4,
      storageEncrypted: true,
      multiAz: opts.multiAz ?? false,
      backupRetention: Duration.days(opts.backupRetentionDays ?? 7),
      deletionProtection: opts.deletionProtection ?? true,
      removalPolicy: RemovalPolicy.SNAPSHOT,
      publiclyAccessible: false,
      autoMinorVersionUpgrade: true,
      // Export tables are read by BI tools over TLS; refuse plain connections.
      parameters: { 'rds.force_ssl': '1' },
      cloudwatchLogsExports: ['postgresql'],
      // gp3: the same baseline as gp2 (3,000 IOPS) for less, and not tied to the volume size.
      storageType: rds.StorageType.GP3,
    });
    if (logGroup) instance.node.addDependency(logGroup);
    // The hosted rotation function calls the Secrets Manager API, so it needs subnets with egress
    // (from isolated subnets it times out; aws-rds README).
    instance.addRotationSingleUser({
      automaticallyAfter: opts.rotationInterval ?? Duration.days(30),
      vpcSubnets: props.rotationSubnets,
    });
    this.instance = instance;
    this.secret = instance.secret as secretsmanager.ISecret;
    this.port = 5432;

    Validations.of(instance).acknowledge(
      {
        id: 'AwsSolutions-RDS11',
        reason:
          'Default port 5432: only the export functions security group may reach it; a different port adds no protection.',
      },
      {
        id: 'AwsSolutions-IAM4',
        reason: 'The hosted rotation application from AWS uses the AWS managed Lambda execution policies.',
      },
    );
    if (!(opts.multiAz ?? false)) {
      Validations.of(instance).acknowledge({
        id: 'AwsSolutions-RDS3',
        reason:
          'Single-AZ by configuration (database.multiAz: false): exports can be re-run from HQ and backups are kept.',
      });
    }
    if (opts.deletionProtection === false) {
      Validations.of(instance).acknowledge({
        id: 'AwsSolutions-RDS10',
        reason:
          'Deletion protection turned off explicitly in the config (database.deletionProtection: false).',
      });
    }
  }

  /** Lets `grantee` read the secret, and decrypt it when a customer-managed key encrypts it. */
  public grantRead(grantee: iam.IGrantable): void {
    this.secret.grantRead(grantee);
    if (this.secretKeyArn) {
      grantee.grantPrincipal.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: ['kms:Decrypt'],
          resources: [this.secretKeyArn],
          // Only for Secrets Manager reading the secret on the function's behalf.
          conditions: {
            StringEquals: { 'kms:ViaService': `secretsmanager.${Stack.of(this).region}.amazonaws.com` },
          },
        }),
      );
    }
  }

  /** Opens the database port to `other` (both security group sides when the group is known). */
  public allowFrom(other: ec2.IConnectable, description: string): void {
    if (this.instance) {
      this.instance.connections.allowDefaultPortFrom(other, description);
      return;
    }
    const port = ec2.Port.tcp(this.port);
    if (this.securityGroup) {
      this.securityGroup.connections.allowFrom(other, port, description);
    } else {
      // Unknown database security group: let the functions out to the port; the owner opens the inbound side.
      other.connections.allowToAnyIpv4(port, description);
    }
  }
}

/**
 * `name` as an RDS instance identifier: RDS keeps identifiers in lower case, allows letters, digits and
 * single hyphens, 63 characters at most, starting with a letter and not ending with a hyphen.
 */
export function rdsIdentifier(name: string): string {
  const cleaned = name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/-+/g, '-')
    .replace(/^[^a-z]+/, '')
    .slice(0, 63)
    .replace(/-+$/, '');
  return cleaned === '' ? 'exports' : cleaned;
}

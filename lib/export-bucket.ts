/**
 * The bucket exports write to, and the narrow grant that lets one export write under its own prefix
 * only.
 */
import { Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

export interface ExportBucketProps {
  /**
   * Days a replaced or deleted object version is kept (versioning protects against a bad run
   * overwriting good files).
   * @default 90
   */
  readonly noncurrentVersionDays?: number;

  /**
   * Days server access logs are kept.
   * @default 365
   */
  readonly accessLogDays?: number;

  /**
   * What happens to the buckets when the stack is deleted.
   * @default RemovalPolicy.RETAIN - exported data outlives the stack
   */
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * A private, encrypted, versioned bucket that accepts TLS only, with server access logs in a second
 * bucket and a lifecycle that aborts abandoned multipart uploads and expires old versions.
 */
export class ExportBucket extends Construct {
  /** The exports bucket. */
  public readonly bucket: s3.Bucket;
  /** The server access log bucket of `bucket`. */
  public readonly accessLogs: s3.Bucket;

  constructor(scope: Construct, id: string, props: ExportBucketProps = {}) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;

    this.accessLogs = new s3.Bucket(this, 'AccessLogs', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      lifecycleRules: [{ expiration: Duration.days(props.accessLogDays ?? 365) }],
      removalPolicy,
    });
    Validations.of(this.accessLogs).acknowledge({
      id: 'AwsSolutions-S1',
      reason: 'This is the access-log bucket of the exports bucket; logging it into itself would loop.',
    });

    this.bucket = new s3.Bucket(this, 'Bucket', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      versioned: true,
      serverAccessLogsBucket: this.accessLogs,
      serverAccessLogsPrefix: 'exports/',
      lifecycleRules: [
        {
          id: 'tidy',
          abortIncompleteMultipartUploadAfter: Duration.days(7),
          noncurrentVersionExpiration: Duration.days(props.noncurrentVersionDays ?? 90),
        },
      ],
      removalPolicy,
    });
  }

  /**
   * Lets `grantee` read, write and list objects under `prefix` only (data files and the export's
   * checkpoint objects, which live next to the data), and abort its own multipart uploads.
   *
   * @param prefix a key prefix ending in "/", e.g. "forms/"
   */
  public grantExportAccess(grantee: iam.IGrantable, prefix: string): void {
    if (!/^[^*?]+\/$/.test(prefix)) {
      throw new Error(
        `ExportBucket: prefix ${JSON.stringify(prefix)} must end with "/" and contain no wildcards`,
      );
    }
    const objects = this.bucket.arnForObjects(`${prefix}*`);
    iam.Grant.addToPrincipal({
      grantee,
      actions: [
        's3:GetObject',
        's3:PutObject',
        's3:DeleteObject',
        's3:AbortMultipartUpload',
        's3:ListMultipartUploadParts',
      ],
      resourceArns: [objects],
    });
    iam.Grant.addToPrincipal({
      grantee,
      actions: ['s3:ListBucket'],
      resourceArns: [this.bucket.bucketArn],
      conditions: { StringLike: { 's3:prefix': [`${prefix}*`] } },
    });
    const principal = grantee.grantPrincipal;
    if (principal instanceof Construct) {
      Validations.of(principal).acknowledge({
        id: `AwsSolutions-IAM5[Resource::<${Stack.of(this).getLogicalId(this.bucket.node.defaultChild as s3.CfnBucket)}.Arn>/${prefix}*]`,
        reason: `Object actions are limited to this export's own prefix ${prefix}; the wildcard covers the files of each run.`,
      });
    }
  }
}

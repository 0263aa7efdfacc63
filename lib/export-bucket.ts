/**
 * The bucket exports write to, and the narrow grant that lets one export write under its own prefix
 * only.
 */
import { Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

/** How the exports bucket encrypts objects at rest. */
export type ExportBucketEncryption = 'kms' | 's3-managed';

export interface ExportBucketProps {
  /**
   * - `kms`: SSE-KMS with a customer-managed key of this stack (yearly key rotation, S3 Bucket Keys so
   *   KMS is called about once per object batch, not per request). Every reader needs kms:Decrypt on
   *   the key, which the key policy and IAM control: health data is readable only by whom you grant.
   * - `s3-managed`: SSE-S3 (keys S3 owns): anyone with s3:GetObject can read.
   * @default 'kms'
   */
  readonly encryption?: ExportBucketEncryption;

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
  /** The key that encrypts `bucket` (encryption `kms`); undefined with SSE-S3. */
  public readonly encryptionKey: kms.Key | undefined;
  private readonly stagingPrefixes = new Set<string>();

  constructor(scope: Construct, id: string, props: ExportBucketProps = {}) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;

    this.accessLogs = new s3.Bucket(this, 'AccessLogs', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      // Server access logs can be delivered only to a bucket encrypted with SSE-S3.
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

    this.encryptionKey =
      (props.encryption ?? 'kms') === 'kms'
        ? new kms.Key(this, 'Key', {
            description: 'Encrypts the CommCare exports bucket',
            enableKeyRotation: true,
            // The data outlives the stack (the bucket is retained), and it cannot be read without its key.
            removalPolicy:
              removalPolicy === RemovalPolicy.DESTROY ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
          })
        : undefined;
    this.bucket = new s3.Bucket(this, 'Bucket', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      ...(this.encryptionKey
        ? {
            encryption: s3.BucketEncryption.KMS,
            encryptionKey: this.encryptionKey,
            bucketKeyEnabled: true,
          }
        : { encryption: s3.BucketEncryption.S3_MANAGED }),
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
   * checkpoint objects, which live next to the data), and find and abort multipart uploads a killed
   * run left there. These are exactly the actions behind the S3 calls the export function makes
   * (functions/sinks/store/s3.ts and @aws-sdk/lib-storage); test/cdk/s3-grants.test.ts compares them
   * with its bundle.
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
      // PutObject also covers CreateMultipartUpload, UploadPart and CompleteMultipartUpload.
      actions: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload'],
      resourceArns: [objects],
    });
    iam.Grant.addToPrincipal({
      grantee,
      actions: ['s3:ListBucket'],
      resourceArns: [this.bucket.bucketArn],
      conditions: { StringLike: { 's3:prefix': [`${prefix}*`] } },
    });
    // ListMultipartUploads (clearing abandoned uploads under the export's folders) takes no s3:prefix
    // condition (IAM evaluates that key for ListBucket and ListBucketVersions only): it is granted on
    // the bucket, and shows the keys of uploads in progress, never their data.
    iam.Grant.addToPrincipal({
      grantee,
      actions: ['s3:ListBucketMultipartUploads'],
      resourceArns: [this.bucket.bucketArn],
    });
    this.grantKeyUse(grantee);
    const principal = grantee.grantPrincipal;
    if (principal instanceof Construct) {
      Validations.of(principal).acknowledge({
        id: `AwsSolutions-IAM5[Resource::<${Stack.of(this).getLogicalId(this.bucket.node.defaultChild as s3.CfnBucket)}.Arn>/${prefix}*]`,
        reason: `Object actions are limited to this export's own prefix ${prefix}; the wildcard covers the files of each run.`,
      });
    }
  }

  /**
   * Expires what the sliced reconciles of the export under `prefix` stage in `<prefix>_reconcile/`
   * (functions/sinks/file-reconcile-staging.ts): a reconcile deletes its own staging once it has
   * committed; one that failed (a tripped guard, an HQ outage) leaves it, and this rule removes it after
   * `days`, with the versions the bucket's versioning keeps a day later. A reconcile lists for hours,
   * not days, so its own staging never expires under it.
   *
   * @param prefix the export's key prefix, ending in "/"
   * @param days @default 7
   */
  public expireReconcileStaging(prefix: string, days = 7): void {
    const stagingPrefix = `${prefix}_reconcile/`;
    if (this.stagingPrefixes.has(stagingPrefix)) return;
    this.stagingPrefixes.add(stagingPrefix);
    this.bucket.addLifecycleRule({
      id: `reconcile-staging-${this.stagingPrefixes.size}`,
      prefix: stagingPrefix,
      expiration: Duration.days(days),
      noncurrentVersionExpiration: Duration.days(1),
    });
  }

  /**
   * Lets `grantee` encrypt and decrypt objects of the bucket through S3 (nothing else), when the bucket
   * is encrypted with its KMS key: SSE-KMS reads need kms:Decrypt, writes kms:GenerateDataKey, and a
   * multipart upload both (S3 decrypts the data key to assemble the parts).
   */
  public grantKeyUse(grantee: iam.IGrantable): void {
    if (!this.encryptionKey) return;
    iam.Grant.addToPrincipal({
      grantee,
      actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
      resourceArns: [this.encryptionKey.keyArn],
      conditions: { StringEquals: { 'kms:ViaService': `s3.${Stack.of(this).region}.amazonaws.com` } },
    });
  }
}

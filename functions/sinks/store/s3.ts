import { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { ObjectStoreError, PreconditionFailedError, SinkConfigError, SinkError } from '../errors';
import {
  ABANDONED_AFTER_MS,
  type ObjectStore,
  type ObjectUpload,
  type PutCondition,
  type StoredObject,
} from './types';
import { CountingStream, writeWithBackpressure } from './upload';

/** S3's multipart minimum; every part but the last must be at least this big. */
export const S3_MIN_PART_SIZE = 5 * 1024 * 1024;

export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
  if (!match?.[1]) {
    throw new SinkConfigError(`Expected an S3 URL like s3://bucket/prefix, received "${url}"`);
  }
  return { bucket: match[1], prefix: (match[2] ?? '').replace(/\/+$/, '') };
}

function errorName(error: unknown): string {
  return (error as { name?: string })?.name ?? '';
}

/** `InternalError (HTTP 500): We encountered an internal error.`: S3's error code, status and message. */
export function describeS3Error(error: unknown): string {
  const name = errorName(error);
  const status = httpStatus(error);
  const message = (error as { message?: string })?.message ?? String(error);
  const label = [name && name !== 'Error' ? name : '', status ? `(HTTP ${status})` : '']
    .filter(Boolean)
    .join(' ');
  return label ? `${label}: ${message}` : message;
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

/** What an S3 error most likely means for an export, when it is one of the usual two. */
function s3Hint(error: unknown, bucket: string): string {
  const name = errorName(error);
  const status = httpStatus(error);
  if (name === 'NoSuchBucket') return ` (the bucket "${bucket}" does not exist, or not in this region)`;
  if (status === 403 || name === 'AccessDenied' || name === 'Forbidden')
    return ` (the AWS credentials in use are not allowed this on bucket "${bucket}": check the identity (aws sts get-caller-identity) and its S3 permissions)`;
  return '';
}

export interface S3StoreOptions {
  /** @default 8 MiB */
  readonly partSizeBytes?: number;
}

/** An `s3://bucket/prefix`. Large objects go up as streamed multipart uploads (no temp file). */
export class S3ObjectStore implements ObjectStore {
  readonly bucket: string;
  readonly prefix: string;
  private readonly partSize: number;

  constructor(
    private readonly client: S3Client,
    url: string,
    options: S3StoreOptions = {},
  ) {
    ({ bucket: this.bucket, prefix: this.prefix } = parseS3Url(url));
    this.partSize = options.partSizeBytes ?? 8 * 1024 * 1024;
    if (this.partSize < S3_MIN_PART_SIZE) {
      throw new SinkConfigError(
        `partSizeBytes must be at least ${S3_MIN_PART_SIZE} (S3's multipart minimum), received ${this.partSize}`,
      );
    }
  }

  private key(key: string): string {
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  uri(key: string): string {
    return `s3://${this.bucket}/${this.key(key)}`;
  }

  private failed(operation: string, target: string, error: unknown): ObjectStoreError {
    return new ObjectStoreError(
      `S3 ${operation} of ${target} failed: ${describeS3Error(error)}${s3Hint(error, this.bucket)}`,
      { cause: error },
    );
  }

  openUpload(key: string, contentType: string): ObjectUpload {
    const body = new CountingStream();
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: this.key(key), Body: body, ContentType: contentType },
      partSize: this.partSize,
      queueSize: 2,
      // A failed upload must leave nothing behind: lib-storage then aborts the multipart upload.
      leavePartsOnError: false,
    });
    const uri = this.uri(key);
    const failed = (error: unknown) =>
      new SinkError(`Upload of ${uri} failed: ${describeS3Error(error)}`, { cause: error });
    // Start consuming BEFORE anything is written: lib-storage reads the body only once done() runs,
    // and writing first deadlocks on backpressure (aws.md 8.3).
    const done = upload.done();
    let failure: SinkError | undefined;
    done.catch((error: unknown) => {
      failure ??= failed(error);
      // Destroyed with the failure, so a writer waiting on backpressure (ours, or the xlsx zip writing
      // into `stream`) gets it rather than a bare "stream closed".
      body.destroy(failure);
    });
    // The failure reaches callers through write/complete; without a listener it would crash the process.
    body.on('error', () => undefined);
    return {
      stream: body,
      write: async (chunk) => {
        if (failure) throw failure;
        try {
          await writeWithBackpressure(body, chunk);
        } catch (error) {
          // The body can close before done() has rejected (lib-storage stops reading it first): wait
          // briefly for S3's error, so the message names the object and what S3 said.
          if (!failure)
            await Promise.race([done.catch(() => undefined), delay(2000, undefined, { ref: false })]);
          throw failure ?? failed(error);
        }
      },
      complete: async () => {
        if (failure) throw failure;
        if (!body.writableEnded) body.end();
        try {
          await done;
        } catch (error) {
          throw failure ?? failed(error);
        }
        return { bytes: body.bytes };
      },
      abort: async () => {
        try {
          await upload.abort();
        } finally {
          body.destroy();
          await done.catch(() => undefined);
        }
        // done() rejects as soon as the upload is aborted while lib-storage's own clean-up (aborting
        // the multipart upload) goes on in the background, or never runs when the upload was being
        // created at that moment: abort it here so that nothing is left once abort() returns.
        const created = await (
          upload as unknown as { createMultiPartPromise?: Promise<{ UploadId?: string }> }
        ).createMultiPartPromise?.catch(() => undefined);
        if (created?.UploadId) {
          await this.client
            .send(
              new AbortMultipartUploadCommand({
                Bucket: this.bucket,
                Key: this.key(key),
                UploadId: created.UploadId,
              }),
            )
            .catch(() => undefined);
        }
      },
    };
  }

  async put(key: string, body: string, contentType: string, condition: PutCondition = {}) {
    try {
      const out = await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.key(key),
          Body: body,
          ContentType: contentType,
          ...(condition.ifNoneMatch ? { IfNoneMatch: condition.ifNoneMatch } : {}),
          ...(condition.ifMatch ? { IfMatch: condition.ifMatch } : {}),
        }),
      );
      return { etag: out.ETag ?? '' };
    } catch (error) {
      const status = httpStatus(error);
      // If-Match on a key that no longer exists answers 404: the version we read is gone all the same.
      const missing = condition.ifMatch !== undefined && (status === 404 || errorName(error) === 'NoSuchKey');
      if (status === 412 || status === 409 || errorName(error) === 'PreconditionFailed' || missing) {
        throw new PreconditionFailedError(
          `${this.uri(key)} changed since it was read (conditional write refused)`,
          {
            cause: error,
          },
        );
      }
      throw this.failed('PutObject', this.uri(key), error);
    }
  }

  async get(key: string): Promise<StoredObject | null> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
      return { body: (await out.Body?.transformToString('utf8')) ?? '', etag: out.ETag ?? '' };
    } catch (error) {
      if (
        errorName(error) === 'NoSuchKey' ||
        (httpStatus(error) === 404 && errorName(error) !== 'NoSuchBucket')
      )
        return null;
      throw this.failed('GetObject', this.uri(key), error);
    }
  }

  async openRead(key: string): Promise<Readable> {
    const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
    const body = out.Body;
    if (body instanceof Readable) return body;
    return Readable.from(body ? [await body.transformToByteArray()] : []);
  }

  async delete(key: string, ifMatch?: string): Promise<void> {
    try {
      await this.client.send(
        new DeleteObjectCommand({
          Bucket: this.bucket,
          Key: this.key(key),
          ...(ifMatch ? { IfMatch: ifMatch } : {}),
        }),
      );
    } catch (error) {
      if (httpStatus(error) === 412) {
        throw new PreconditionFailedError(`${this.uri(key)} changed; not deleted`, { cause: error });
      }
      if (
        errorName(error) === 'NoSuchKey' ||
        (httpStatus(error) === 404 && errorName(error) !== 'NoSuchBucket')
      )
        return;
      throw this.failed('DeleteObject', this.uri(key), error);
    }
  }

  /**
   * Aborts multipart uploads under `folders` started more than `olderThanMs` (a day) ago: a run killed mid-upload
   * (SIGKILL, a Lambda timeout) leaves its upload, and S3 keeps billing its parts until the bucket's
   * lifecycle rule or somebody aborts it. Needs s3:ListBucketMultipartUploads and
   * s3:AbortMultipartUpload; without them nothing is aborted and the run goes on.
   */
  async removeAbandoned(folders: readonly string[], olderThanMs = ABANDONED_AFTER_MS): Promise<string[]> {
    const removed: string[] = [];
    const before = Date.now() - olderThanMs;
    for (const folder of folders) {
      let keyMarker: string | undefined;
      let uploadIdMarker: string | undefined;
      do {
        const out = await this.client.send(
          new ListMultipartUploadsCommand({
            Bucket: this.bucket,
            Prefix: this.key(`${folder}/`),
            KeyMarker: keyMarker,
            UploadIdMarker: uploadIdMarker,
          }),
        );
        for (const upload of out.Uploads ?? []) {
          if (!upload.Key || !upload.UploadId || !upload.Initiated) continue;
          if (upload.Initiated.getTime() > before) continue;
          await this.client.send(
            new AbortMultipartUploadCommand({
              Bucket: this.bucket,
              Key: upload.Key,
              UploadId: upload.UploadId,
            }),
          );
          removed.push(`s3://${this.bucket}/${upload.Key}`);
        }
        keyMarker = out.IsTruncated ? out.NextKeyMarker : undefined;
        uploadIdMarker = out.IsTruncated ? out.NextUploadIdMarker : undefined;
      } while (keyMarker);
    }
    return removed;
  }

  async list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    const base = this.key('');
    let token: string | undefined;
    do {
      const out = await this.client
        .send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.key(prefix),
            ContinuationToken: token,
          }),
        )
        .catch((error: unknown) => {
          throw this.failed('ListObjectsV2', `${this.uri(prefix)}*`, error);
        });
      for (const item of out.Contents ?? []) if (item.Key) keys.push(item.Key.slice(base.length));
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
    return keys.sort();
  }
}

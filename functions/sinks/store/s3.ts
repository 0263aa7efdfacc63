import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { PreconditionFailedError, SinkConfigError, SinkError } from '../errors';
import type { ObjectStore, ObjectUpload, PutCondition, StoredObject } from './types';
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

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
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
    // Start consuming BEFORE anything is written: lib-storage reads the body only once done() runs,
    // and writing first deadlocks on backpressure (aws.md 8.3).
    const done = upload.done();
    let failure: unknown;
    done.catch((error: unknown) => {
      failure = error;
      body.destroy();
    });
    const uri = this.uri(key);
    return {
      stream: body,
      write: async (chunk) => {
        if (failure) throw new SinkError(`Upload of ${uri} failed`, { cause: failure });
        await writeWithBackpressure(body, chunk);
      },
      complete: async () => {
        if (!body.writableEnded) body.end();
        try {
          await done;
        } catch (error) {
          throw new SinkError(`Upload of ${uri} failed`, { cause: error });
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
      throw error;
    }
  }

  async get(key: string): Promise<StoredObject | null> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
      return { body: (await out.Body?.transformToString('utf8')) ?? '', etag: out.ETag ?? '' };
    } catch (error) {
      if (errorName(error) === 'NoSuchKey' || httpStatus(error) === 404) return null;
      throw error;
    }
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
      if (errorName(error) === 'NoSuchKey' || httpStatus(error) === 404) return;
      throw error;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    const base = this.key('');
    let token: string | undefined;
    do {
      const out = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.key(prefix), ContinuationToken: token }),
      );
      for (const item of out.Contents ?? []) if (item.Key) keys.push(item.Key.slice(base.length));
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
    return keys.sort();
  }
}

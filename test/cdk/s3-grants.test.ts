/**
 * The export function's S3 permissions are exactly the S3 calls it makes as it ships: the export
 * handler bundled with the esbuild options every deployment uses, plus what @aws-sdk/lib-storage (left
 * to the Lambda runtime, like the rest of the SDK) sends for it. A call without its permission fails
 * only in a real account (AccessDenied on a run's clean-up or upload); a permission without a call
 * is more than the function needs.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import * as s3 from '@aws-sdk/client-s3';
import { Template } from 'aws-cdk-lib/assertions';
import { build } from 'esbuild';
import { beforeAll, describe, expect, it } from 'vitest';
import { SERVICE_BUNDLING } from '../../lib/function-defaults';
import { buildStack, repoRoot } from './app';
import { actionsOf, roleStatements } from './template';

/**
 * The IAM actions each S3 API call needs (Service Authorization Reference, Amazon S3: the multipart
 * steps are authorized as s3:PutObject, HeadObject as s3:GetObject, ListObjectsV2 as s3:ListBucket).
 */
const ACTIONS_OF_CALL: Record<string, readonly string[]> = {
  AbortMultipartUpload: ['s3:AbortMultipartUpload'],
  CompleteMultipartUpload: ['s3:PutObject'],
  CopyObject: ['s3:GetObject', 's3:PutObject'],
  CreateMultipartUpload: ['s3:PutObject'],
  DeleteObject: ['s3:DeleteObject'],
  DeleteObjects: ['s3:DeleteObject'],
  GetObject: ['s3:GetObject'],
  HeadObject: ['s3:GetObject'],
  ListMultipartUploads: ['s3:ListBucketMultipartUploads'],
  ListObjectsV2: ['s3:ListBucket'],
  ListParts: ['s3:ListMultipartUploadParts'],
  PutObject: ['s3:PutObject'],
  PutObjectTagging: ['s3:PutObjectTagging'],
  UploadPart: ['s3:PutObject'],
};

const S3_COMMANDS = Object.keys(s3).filter((name) => /^[A-Z]\w*Command$/.test(name));

/** The S3 API calls (`PutObject`, ...) whose command class `code` names. */
function s3CallsIn(code: string): string[] {
  return S3_COMMANDS.filter((name) => new RegExp(`\\b${name}\\b`).test(code)).map((name) =>
    name.replace(/Command$/, ''),
  );
}

let bundle: string;
let granted: string[];

beforeAll(async () => {
  const out = await build({
    entryPoints: [join(repoRoot, 'functions/export/handler.ts')],
    bundle: true,
    write: false,
    platform: 'node',
    target: SERVICE_BUNDLING.target,
    format: 'cjs',
    minify: SERVICE_BUNDLING.minify,
    keepNames: SERVICE_BUNDLING.keepNames,
    external: [...SERVICE_BUNDLING.externalModules],
    logLevel: 'silent',
  });
  bundle = out.outputFiles[0]?.text ?? '';
  const template = Template.fromStack(
    buildStack(readFileSync(join(repoRoot, 'exports.config.example.yaml'), 'utf8')).stack,
  );
  granted = roleStatements(template, 'formsdailyFunctionServiceRole')
    .flatMap(actionsOf)
    .filter((a) => a.startsWith('s3:'));
});

describe("the export function's S3 permissions", () => {
  it('are exactly the actions behind the S3 calls of its bundle and of lib-storage', () => {
    const own = s3CallsIn(bundle);
    // Upload (multipart) lives in @aws-sdk/lib-storage, which the bundle requires at run time.
    expect(bundle).toContain('require("@aws-sdk/lib-storage")');
    const storage = readFileSync(
      createRequire(join(repoRoot, 'package.json')).resolve('@aws-sdk/lib-storage'),
      'utf8',
    );
    // lib-storage tags the object only when given `tags`, which the S3 store never passes.
    const sink = readFileSync(join(repoRoot, 'functions/sinks/store/s3.ts'), 'utf8');
    expect(sink).not.toMatch(/\btags\s*:/);
    const viaUpload = s3CallsIn(storage).filter((call) => call !== 'PutObjectTagging');
    const calls = [...new Set([...own, ...viaUpload])].sort();

    const unknown = calls.filter((call) => !(call in ACTIONS_OF_CALL));
    expect(unknown, 'S3 calls without a known IAM action: add them to ACTIONS_OF_CALL').toEqual([]);
    const needed = [...new Set(calls.flatMap((call) => ACTIONS_OF_CALL[call] ?? []))].sort();

    expect(own).toEqual(
      expect.arrayContaining([
        'GetObject',
        'PutObject',
        'DeleteObject',
        'ListObjectsV2',
        'ListMultipartUploads',
      ]),
    );
    expect([...new Set(granted)].sort()).toEqual(needed);
  });
});

/**
 * The export function's S3 permissions are exactly the S3 calls it makes as it ships: the export
 * handler bundled with the esbuild options every deployment uses, the AWS SDK and
 * @aws-sdk/lib-storage (multipart uploads) inside it. A call without its permission fails
 * only in a real account (AccessDenied on a run's clean-up or upload); a permission without a call
 * is more than the function needs.
 */
import { readFileSync } from 'node:fs';
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
/** The source of every module the bundle holds from this repository. */
let ownSource: string;
/** The source of the modules the bundle holds from @aws-sdk/lib-storage. */
let storageSource: string;
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
    metafile: true,
  });
  bundle = out.outputFiles[0]?.text ?? '';
  // The bundle holds the whole S3 client (every command class), so the calls are read from the
  // modules that make them: ours and lib-storage's, as the bundle includes them.
  const inputs = Object.keys(out.metafile.inputs);
  const read = (paths: string[]) => paths.map((p) => readFileSync(join(process.cwd(), p), 'utf8')).join('\n');
  ownSource = read(inputs.filter((p) => !p.includes('node_modules/')));
  storageSource = read(inputs.filter((p) => p.includes('node_modules/@aws-sdk/lib-storage/')));
  const template = Template.fromStack(
    buildStack(readFileSync(join(repoRoot, 'exports.config.example.yaml'), 'utf8')).stack,
  );
  granted = roleStatements(template, 'formsdailyFunctionServiceRole')
    .flatMap(actionsOf)
    .filter((a) => a.startsWith('s3:'));
});

describe("the export function's S3 permissions", () => {
  it('are exactly the actions behind the S3 calls of its bundle, lib-storage included', () => {
    // Upload (multipart) comes from @aws-sdk/lib-storage, bundled like the rest of the SDK: nothing
    // of the SDK is left for the Lambda runtime to provide.
    expect(bundle).not.toMatch(/require\("@aws-sdk\/(client-|lib-)/);
    expect(storageSource).toMatch(/CreateMultipartUploadCommand/);
    const own = s3CallsIn(ownSource);
    // lib-storage tags the object only when given `tags`, which the S3 store never passes.
    const sink = readFileSync(join(repoRoot, 'functions/sinks/store/s3.ts'), 'utf8');
    expect(sink).not.toMatch(/\btags\s*:/);
    const viaUpload = s3CallsIn(storageSource).filter((call) => call !== 'PutObjectTagging');
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

/**
 * Export function: runs one slice of one project of one export and tells the state machine whether it
 * is done. Thin: it checks the event, builds its clients once per container, reads the key through a
 * cache, and calls the core (`runExportSlice`), which receives everything as arguments.
 */

import { isAbsolute, resolve } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { getSecret } from '@aws-lambda-powertools/parameters/secrets';
import { GlueClient } from '@aws-sdk/client-glue';
import { S3Client } from '@aws-sdk/client-s3';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { CommCareAuthError } from '../commcare/errors';
import type { ExportJob, ExportSliceEvent, ExportSliceResult } from '../config/job';
import { parseCredentialSecret } from '../keys/secret';
import { recordSuccessfulExport } from '../keys/usage';
import { ExportEventError, parseContinuation, parseSliceEvent } from './event';
import { limitHeapGrowth } from './heap';
import { runExportSlice } from './slice';

/** HQ credentials as the core uses them. Never logged. */
export interface SliceCredentials {
  readonly username: string;
  readonly apiKey: string;
  readonly baseUrl: string;
  /** The key's month name (`det-2026-11`), recorded after a successful run for the rotation grace period. */
  readonly keyName?: string;
}

/** The RDS secret document (`host`, `port`, `username`, `password`, `dbname`). Never logged. */
export interface DatabaseCredentials {
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly password: string;
  readonly dbname: string;
}

export interface ExportSliceDeps {
  /** The current key (AWSCURRENT), cached for a few minutes. */
  readonly credentials: () => Promise<SliceCredentials>;
  /** Reads the key again, bypassing the cache (after HQ rejected the cached one). */
  readonly refreshCredentials: () => Promise<SliceCredentials>;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly s3Client: S3Client;
  /** Bucket for S3 outputs; the function may use the job's prefix only. */
  readonly bucket?: string;
  /** Database credentials for PostgreSQL outputs (pass `{ refresh: true }` after a 28P01). */
  readonly databaseSecret?: (options?: { refresh?: boolean }) => Promise<DatabaseCredentials>;
  /**
   * The export's Glue database, for a Parquet export defined in HQ: each run's first slice creates or
   * updates its tables (`syncGlueTables`). Absent: the catalog is the CDK app's (or there is none).
   */
  readonly glue?: { readonly client: GlueClient; readonly database: string };
}

export interface SliceClock {
  /** Milliseconds left before Lambda stops the invocation. */
  readonly remainingMs: () => number;
  /** Stop starting new pages when fewer than this many milliseconds remain. */
  readonly safetyMarginMs: number;
}

/** The core's signature (`functions/export/slice.ts`). */
export type ExportSliceRunner = (
  deps: ExportSliceDeps,
  input: ExportSliceEvent,
  clock: SliceClock,
) => Promise<ExportSliceResult>;

/** The part of the Lambda context the handler uses. */
export interface SliceContext {
  getRemainingTimeInMillis(): number;
  readonly awsRequestId?: string;
}

export { ExportEventError } from './event';

/** Settings from the function's environment (set by the CDK stack). */
export interface HandlerSettings {
  readonly credentialSecretArn: string;
  readonly bucket?: string;
  readonly databaseSecretArn?: string;
  /** `GLUE_DATABASE`: the Glue database of a Parquet export defined in HQ. */
  readonly glueDatabase?: string;
  readonly safetyMarginMs: number;
  /** Where relative query file paths are resolved (the function's code root). */
  readonly codeRoot: string;
  /** Seconds a secret value is cached; key rotation is monthly, so minutes are plenty. */
  readonly secretMaxAgeSeconds: number;
}

export function settingsFromEnv(env: NodeJS.ProcessEnv): HandlerSettings {
  const credentialSecretArn = env.CREDENTIAL_SECRET_ARN;
  if (!credentialSecretArn)
    throw new ExportEventError('CREDENTIAL_SECRET_ARN is not set; expected the ARN of the key secret');
  const margin = Number(env.SLICE_SAFETY_MARGIN_MS ?? '90000');
  return {
    credentialSecretArn,
    bucket: env.EXPORT_BUCKET || undefined,
    databaseSecretArn: env.DATABASE_SECRET_ARN || undefined,
    glueDatabase: env.GLUE_DATABASE || undefined,
    safetyMarginMs: Number.isFinite(margin) && margin > 0 ? margin : 90_000,
    codeRoot: env.LAMBDA_TASK_ROOT ?? process.cwd(),
    secretMaxAgeSeconds: 300,
  };
}

/** Reads a secret string by its AWSCURRENT stage (explicitly: see reference/aws.md on moto). */
export type SecretReader = (
  secretId: string,
  options: { forceFetch: boolean; maxAge: number },
) => Promise<string | undefined>;

const powertoolsSecretReader: SecretReader = async (secretId, options) =>
  (await getSecret<string>(secretId, {
    maxAge: options.maxAge,
    forceFetch: options.forceFetch,
    sdkOptions: { VersionStage: 'AWSCURRENT' },
  })) as string | undefined;

/**
 * Builds the handler around a runner and its clients; the module's `handler` uses the real ones, tests
 * pass their own.
 */
export function makeHandler(args: {
  runner: ExportSliceRunner;
  settings: HandlerSettings;
  logger: Logger;
  metrics: Metrics;
  s3Client: S3Client;
  /** Glue client for `settings.glueDatabase`. @default one with the function's region and role */
  glueClient?: GlueClient;
  readSecret: SecretReader;
  /**
   * Records "an export succeeded with key X" (a tag on the credential secret), so the rotation's
   * maintenance run revokes the previous key only after the new one has worked. @default not recorded
   */
  recordExport?: (keyName: string, at: Date) => Promise<void>;
  now?: () => Date;
}) {
  const { runner, settings, logger, metrics, s3Client, readSecret, recordExport } = args;
  const now = args.now ?? (() => new Date());
  let builtGlueClient = args.glueClient;
  const glueClient = (): GlueClient => {
    builtGlueClient ??= new GlueClient({});
    return builtGlueClient;
  };

  async function loadCredentials(job: ExportJob, forceFetch: boolean): Promise<SliceCredentials> {
    const text = await readSecret(settings.credentialSecretArn, {
      forceFetch,
      maxAge: settings.secretMaxAgeSeconds,
    });
    const secret = parseCredentialSecret(text, `credential secret of ${job.credential.name}`);
    const ageDays = (now().getTime() - Date.parse(secret.createdAt)) / 86_400_000;
    if (Number.isFinite(ageDays) && ageDays >= 0)
      metrics.addMetric('KeyAgeDays', MetricUnit.Count, Math.floor(ageDays));
    // The deployment's settings win over the copy in the secret: the copy is only refreshed at the next
    // rotation, and CloudFormation never writes the secret (see lib/credential.ts).
    return {
      username: job.credential.username || secret.username,
      apiKey: secret.key,
      baseUrl: job.credential.baseUrl || secret.baseUrl,
      ...(secret.keyName ? { keyName: secret.keyName } : {}),
    };
  }

  async function loadDatabase(forceFetch: boolean): Promise<DatabaseCredentials> {
    const arn = settings.databaseSecretArn as string;
    const text = await readSecret(arn, { forceFetch, maxAge: settings.secretMaxAgeSeconds });
    let parsed: Partial<DatabaseCredentials>;
    try {
      parsed = JSON.parse(text ?? '') as Partial<DatabaseCredentials>;
    } catch {
      // Never quote the text: it holds the password.
      throw new ExportEventError(
        'The database secret is not JSON; expected { host, port, username, password, dbname }',
      );
    }
    for (const field of ['host', 'username', 'password'] as const) {
      if (typeof parsed[field] !== 'string') {
        throw new ExportEventError(
          `The database secret lacks "${field}"; expected { host, port, username, password, dbname }`,
        );
      }
    }
    return {
      host: parsed.host as string,
      port: Number(parsed.port ?? 5432),
      username: parsed.username as string,
      password: parsed.password as string,
      dbname: parsed.dbname ?? 'postgres',
    };
  }

  return async function handler(event: unknown, context: SliceContext): Promise<ExportSliceResult> {
    const started = Date.now();
    // A malformed event or continuation fails here, before a secret is read: permanently, by name.
    const input = parseSliceEvent(event);
    parseContinuation(input);
    const job: ExportJob =
      input.job.queryFile === undefined || isAbsolute(input.job.queryFile)
        ? input.job
        : { ...input.job, queryFile: resolve(settings.codeRoot, input.job.queryFile) };
    logger.appendKeys({ exportName: job.exportName, project: job.project, runId: input.runId ?? null });
    metrics.setDefaultDimensions({ Export: job.exportName });

    let refreshed = false;
    const deps: ExportSliceDeps = {
      credentials: () => loadCredentials(job, false),
      refreshCredentials: () => {
        refreshed = true;
        return loadCredentials(job, true);
      },
      logger,
      metrics,
      s3Client,
      bucket: settings.bucket,
      databaseSecret: settings.databaseSecretArn ? (o) => loadDatabase(o?.refresh ?? false) : undefined,
      ...(settings.glueDatabase ? { glue: { client: glueClient(), database: settings.glueDatabase } } : {}),
    };
    const clock: SliceClock = {
      remainingMs: () => context.getRemainingTimeInMillis(),
      safetyMarginMs: settings.safetyMarginMs,
    };
    const sliceInput: ExportSliceEvent = { ...input, job };

    try {
      let result: ExportSliceResult;
      try {
        result = await runner(deps, sliceInput, clock);
      } catch (error) {
        // The key may have rotated since it was cached: read it once more and, if it changed, run the
        // slice again from the same continuation. A second rejection is final (repeated failures can
        // lock the HQ account).
        if (!(error instanceof CommCareAuthError) || refreshed) throw error;
        const used = await loadCredentials(job, false);
        const fresh = await deps.refreshCredentials();
        if (fresh.apiKey === used.apiKey && fresh.username === used.username) throw error;
        logger.warn('HQ rejected the cached key; retrying the slice once with the refreshed key', {
          status: error.status,
        });
        metrics.addMetric('CredentialRefreshes', MetricUnit.Count, 1);
        result = await runner(deps, sliceInput, clock);
      }
      if (result.done && recordExport) {
        // The key that just worked is the one the cache holds now (refreshed if it had rotated).
        const used = await loadCredentials(job, false);
        if (used.keyName) {
          try {
            await recordExport(used.keyName, now());
          } catch (error) {
            // The rows are written; failing the run here would only repeat it. Without the record
            // the previous key simply stays valid longer.
            logger.warn('Could not record the successful export on the credential secret', {
              error: error instanceof Error ? error.name : 'Error',
            });
          }
        }
      }
      metrics.addMetric('Rows', MetricUnit.Count, result.rows);
      metrics.addMetric('Pages', MetricUnit.Count, result.pages);
      metrics.addMetric('SliceDurationMs', MetricUnit.Milliseconds, Date.now() - started);
      logger.info('Slice finished', {
        done: result.done,
        rows: result.rows,
        pages: result.pages,
        ...(result.hqConfig
          ? {
              hqExport: result.hqConfig.id,
              configFingerprint: result.hqConfig.fingerprint,
              previousConfigFingerprint: result.hqConfig.previousFingerprint,
              columnChanges: result.hqConfig.columnChanges,
            }
          : {}),
      });
      return {
        done: result.done,
        continuation: result.continuation ?? null,
        rows: result.rows,
        pages: result.pages,
        // Always present: the state machine's result selector reads it (null for a query file).
        hqConfig: result.hqConfig ?? null,
      };
    } catch (error) {
      metrics.addMetric('SliceFailures', MetricUnit.Count, 1);
      logger.error('Slice failed', error as Error);
      throw error;
    } finally {
      metrics.publishStoredMetrics();
      logger.resetKeys();
    }
  };
}

// Module scope: built once per container and reused by every invocation it serves.
const logger = new Logger();
const metrics = new Metrics();
const s3Client = new S3Client({});
const secretsManager = new SecretsManagerClient({});

let built: ReturnType<typeof makeHandler> | undefined;

/** The Lambda entry point. */
export const handler = (event: unknown, context: SliceContext): Promise<ExportSliceResult> => {
  if (!built) {
    limitHeapGrowth();
    const settings = settingsFromEnv(process.env);
    built = makeHandler({
      runner: runExportSlice,
      settings,
      logger,
      metrics,
      s3Client,
      readSecret: powertoolsSecretReader,
      recordExport: (keyName, at) =>
        recordSuccessfulExport(secretsManager, settings.credentialSecretArn, keyName, at),
    });
  }
  return built(event, context);
};

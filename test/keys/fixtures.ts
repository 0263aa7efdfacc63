/**
 * Test driver for the rotation protocol against moto: moto cannot run our Node Lambda, so the test plays
 * the Secrets Manager service. `beginRotation` registers the token → [AWSPENDING] placeholder through
 * moto's RotateSecret (with a function ARN that does not exist, moto registers the placeholder and then
 * answers ResourceNotFoundException), and `runSteps` invokes the handler core in-process.
 */
import { randomUUID } from 'node:crypto';
import {
  CreateSecretCommand,
  DescribeSecretCommand,
  GetSecretValueCommand,
  RotateSecretCommand,
  type SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import type { KeyLog } from '../../functions/keys/log';
import type { ProviderFactory } from '../../functions/keys/provider';
import { defaultProviderFactory } from '../../functions/keys/providers';
import { type RotationDeps, type RotationStep, rotateStep, STEPS } from '../../functions/keys/rotation';
import type { CredentialSecret, CredentialSettings } from '../../functions/keys/secret';

export const FAKE_LAMBDA = 'arn:aws:lambda:us-east-1:123456789012:function:ccexport-rotate-key';

export interface RecordingLog extends KeyLog {
  readonly lines: string[];
}

export function recordingLog(): RecordingLog {
  const lines: string[] = [];
  const rec = (level: string) => (m: string, e?: Record<string, unknown>) => {
    lines.push(`${level} ${m} ${JSON.stringify(e ?? {})}`);
  };
  return { lines, info: rec('INFO'), warn: rec('WARN'), error: rec('ERROR') };
}

export async function createCredential(
  sm: SecretsManagerClient,
  doc: Record<string, unknown>,
): Promise<string> {
  const out = await sm.send(
    new CreateSecretCommand({ Name: `test/keys/${randomUUID()}`, SecretString: JSON.stringify(doc) }),
  );
  return out.ARN!;
}

export async function beginRotation(
  sm: SecretsManagerClient,
  secretId: string,
  token: string,
): Promise<void> {
  const meta = await sm.send(new DescribeSecretCommand({ SecretId: secretId }));
  if (meta.VersionIdsToStages?.[token]) return;
  try {
    await sm.send(
      new RotateSecretCommand({
        SecretId: secretId,
        ClientRequestToken: token,
        RotationLambdaARN: FAKE_LAMBDA,
        RotationRules: { AutomaticallyAfterDays: 30 },
      }),
    );
  } catch (e) {
    if ((e as { name?: string }).name !== 'ResourceNotFoundException') throw e;
  }
}

export interface DriverOptions {
  readonly sm: SecretsManagerClient;
  readonly now: () => Date;
  readonly providers?: ProviderFactory;
  readonly log?: KeyLog;
  readonly settings?: CredentialSettings;
}

export function deps(o: DriverOptions): RotationDeps {
  return {
    sm: o.sm,
    now: o.now,
    providers: o.providers ?? defaultProviderFactory,
    log: o.log ?? recordingLog(),
    ...(o.settings ? { settings: o.settings } : {}),
  };
}

/** Where a test bed hook runs: before a step is invoked, or after it did its work (a crash there loses the answer). */
export type StepHook = (
  step: RotationStep,
  attempt: number,
  phase: 'before' | 'after',
) => Promise<void> | void;

/**
 * Plays the Secrets Manager service for one rotation: registers the token's AWSPENDING placeholder,
 * invokes the four steps in order, and after any failure runs the whole sequence again with the
 * **same** ClientRequestToken, as the service does, up to `attempts` times. `hook` injects failures:
 * throwing in phase 'after' is a Lambda that did the step's work and then crashed (timeout, out of
 * memory) before answering. Resolves to the errors of the failed attempts; rejects after the last.
 */
export async function serviceRotation(
  o: DriverOptions,
  secretId: string,
  options: { token?: string; attempts?: number; hook?: StepHook } = {},
): Promise<{ token: string; failures: unknown[] }> {
  const token = options.token ?? randomUUID();
  const attempts = options.attempts ?? 3;
  const failures: unknown[] = [];
  await beginRotation(o.sm, secretId, token);
  for (let attempt = 1; attempt <= attempts; attempt += 1) {
    try {
      for (const Step of STEPS) {
        await options.hook?.(Step, attempt, 'before');
        await rotateStep({ SecretId: secretId, ClientRequestToken: token, Step }, deps(o));
        await options.hook?.(Step, attempt, 'after');
      }
      return { token, failures };
    } catch (e) {
      failures.push(e);
    }
  }
  throw failures.at(-1);
}

/** One whole rotation with every step run `times` times. Resolves to the token. */
export async function rotate(
  o: DriverOptions,
  secretId: string,
  times = 1,
  token: string = randomUUID(),
): Promise<string> {
  await beginRotation(o.sm, secretId, token);
  for (const Step of STEPS) {
    for (let i = 0; i < times; i += 1) {
      await rotateStep({ SecretId: secretId, ClientRequestToken: token, Step }, deps(o));
    }
  }
  return token;
}

export async function readCurrent(sm: SecretsManagerClient, secretId: string): Promise<CredentialSecret> {
  const out = await sm.send(new GetSecretValueCommand({ SecretId: secretId, VersionStage: 'AWSCURRENT' }));
  return JSON.parse(out.SecretString!) as CredentialSecret;
}

export async function stages(sm: SecretsManagerClient, secretId: string): Promise<Record<string, string[]>> {
  const meta = await sm.send(new DescribeSecretCommand({ SecretId: secretId }));
  return meta.VersionIdsToStages ?? {};
}

/**
 * A client whose RotateSecret behaves like the service: it registers the placeholder and runs the four
 * steps in-process (errors are swallowed, as the service reports them only through events and alarms).
 */
export function drivingClient(o: DriverOptions): SecretsManagerClient {
  const original = o.sm.send.bind(o.sm);
  const proxy = Object.create(o.sm) as SecretsManagerClient;
  // biome-ignore lint/suspicious/noExplicitAny: overriding the overloaded send() for one command
  (proxy as any).send = async (command: any, ...rest: any[]) => {
    if (command instanceof RotateSecretCommand) {
      const token: string = command.input.ClientRequestToken ?? randomUUID();
      try {
        await rotate(o, command.input.SecretId!, 1, token);
      } catch {
        // reported by the rotation alarm in production
      }
      return { ARN: command.input.SecretId, VersionId: token };
    }
    return await original(command, ...rest);
  };
  return proxy;
}

export function baseDoc(
  provider: 'commcare' | 'conduce' | 'civicrm',
  baseUrl: string,
  key: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    provider,
    baseUrl,
    username: 'exporter@example.org',
    key,
    keyName: 'det-2026-01',
    createdAt: '2026-01-01T00:00:00Z',
    projects: ['demo'],
    policy: { namePrefix: 'det', timeZone: 'UTC', leadDays: 7, graceDays: 7, reminderDays: 14 },
    ...extra,
  };
}

/** Captures everything written to stdout/stderr and the console while `fn` runs. */
export async function captureOutput<T>(
  fn: () => Promise<T>,
): Promise<{ result: T | undefined; error: unknown; output: string }> {
  const chunks: string[] = [];
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  const methods = ['log', 'info', 'warn', 'error', 'debug'] as const;
  const saved = methods.map((m) => console[m]);
  // biome-ignore lint/suspicious/noExplicitAny: write() has several overloads; we only record the text
  const rec = (c: any) => {
    chunks.push(String(c));
    return true;
  };
  process.stdout.write = rec as typeof process.stdout.write;
  process.stderr.write = rec as typeof process.stderr.write;
  for (const m of methods) console[m] = (...a: unknown[]) => chunks.push(a.map(String).join(' '));
  let result: T | undefined;
  let error: unknown;
  try {
    result = await fn();
  } catch (e) {
    error = e;
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
    methods.forEach((m, i) => {
      console[m] = saved[i]!;
    });
  }
  return { result, error, output: chunks.join('') };
}

/** Every message and cause message of an error chain. */
export function errorText(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e;
  while (cur instanceof Error) {
    parts.push(cur.name, cur.message, cur.stack ?? '');
    cur = cur.cause;
  }
  return parts.join('\n');
}

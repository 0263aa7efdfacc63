/**
 * Where `ccexport run` gets the HQ username and API key, safest first:
 *
 * 1. `--secret-id ID`: a Secrets Manager secret (read by its AWSCURRENT stage), JSON with `username`
 *    and `key` (the rotation secret's shape) or `apiKey`.
 * 2. The environment variable named by `--api-key-env` (default `CCEXPORT_API_KEY`).
 * 3. `--password VALUE`, DET's flag: it works, but every user of the machine can read a process's
 *    command line, so it warns.
 * 4. A prompt on the terminal, without echo.
 *
 * The username comes from `--username`, else `CCEXPORT_USERNAME`, else the secret, else the prompt.
 */
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { type ParsedFlags, stringFlag, UsageError } from './args';
import type { CommandIO } from './io';

export interface HqCredentials {
  readonly username: string;
  readonly apiKey: string;
  /** Where the key came from, for logs (never the key itself). */
  readonly source: 'secret' | 'environment' | 'command-line' | 'prompt';
  /** Base URL stored with the secret, when it has one. */
  readonly baseUrl?: string;
}

export interface CredentialInputs {
  readonly username?: string;
  readonly password?: string;
  readonly secretId?: string;
  readonly apiKeyEnv?: string;
}

export interface CredentialEnvironment {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly isTTY: boolean;
  readonly warn: (message: string) => void;
  readonly prompt: (question: string, hidden: boolean) => Promise<string>;
  readonly secretsManager?: () => Promise<SecretsManagerClient>;
}

export class CredentialError extends Error {
  override readonly name = 'CredentialError';
}

export async function resolveCredentials(
  inputs: CredentialInputs,
  context: CredentialEnvironment,
): Promise<HqCredentials> {
  let username = inputs.username ?? context.env.CCEXPORT_USERNAME;
  if (inputs.secretId !== undefined) {
    const fromSecret = await readSecret(inputs.secretId, context);
    return {
      username: username ?? fromSecret.username,
      apiKey: fromSecret.apiKey,
      source: 'secret',
      ...(fromSecret.baseUrl ? { baseUrl: fromSecret.baseUrl } : {}),
    };
  }
  const envName = inputs.apiKeyEnv ?? 'CCEXPORT_API_KEY';
  const fromEnv = context.env[envName];
  let apiKey: string | undefined;
  let source: HqCredentials['source'];
  if (inputs.password !== undefined) {
    context.warn(
      'warning: --password puts the API key on the command line, where other users of this machine can read it ' +
        `(ps, /proc). Prefer the ${envName} environment variable, a prompt, or --secret-id.`,
    );
    apiKey = inputs.password;
    source = 'command-line';
  } else if (fromEnv !== undefined && fromEnv !== '') {
    apiKey = fromEnv;
    source = 'environment';
  } else {
    source = 'prompt';
  }
  if (username === undefined || username === '') {
    if (!context.isTTY) {
      throw new CredentialError('no username: pass --username or set CCEXPORT_USERNAME');
    }
    username = (await context.prompt('CommCare HQ username (e-mail): ', false)).trim();
  }
  if (apiKey === undefined) {
    if (!context.isTTY) {
      throw new CredentialError(
        `no API key: set the ${envName} environment variable, pass --secret-id, or run on a terminal to be prompted`,
      );
    }
    apiKey = (await context.prompt(`API key for ${username}: `, true)).trim();
  }
  if (apiKey === '') throw new CredentialError('the API key is empty');
  if (username === '') throw new CredentialError('the username is empty');
  return { username, apiKey, source };
}

/**
 * The credentials a command's flags name (`--username`, `--password`, `--secret-id`, `--api-key-env`),
 * resolved against the command's process: its environment, a prompt on its terminal (both stdin and
 * stderr must be one), and Secrets Manager through the SDK's default chain. Every command that talks to
 * HQ with a key gets it here, so they all take the same flags in the same order of preference.
 */
export async function credentialsFromFlags(
  flags: ParsedFlags,
  io: CommandIO,
  warn: (message: string) => void,
): Promise<HqCredentials> {
  const inputs: Record<keyof CredentialInputs, string | undefined> = {
    username: stringFlag(flags, 'username'),
    password: stringFlag(flags, 'password'),
    secretId: stringFlag(flags, 'secret-id'),
    apiKeyEnv: stringFlag(flags, 'api-key-env'),
  };
  return await resolveCredentials(
    Object.fromEntries(Object.entries(inputs).filter(([, value]) => value !== undefined)),
    {
      env: io.env,
      isTTY: Boolean(io.stdin.isTTY && io.stderr.isTTY),
      warn,
      prompt: (question, hidden) =>
        promptOnTerminal(io.stdin as NodeJS.ReadStream, io.stderr as NodeJS.WriteStream, question, hidden),
      secretsManager: async () =>
        new (await import('@aws-sdk/client-secrets-manager')).SecretsManagerClient({}),
    },
  );
}

/**
 * The HQ base URL a command talks to: `--commcare-hq` when given, else the one stored with the key's
 * secret, else `fallback` (HQ's production server for a command without the flag's value).
 */
export function hqBaseUrl(flag: string | undefined, credentials: HqCredentials, fallback: string): string {
  return flag === undefined && credentials.baseUrl ? credentials.baseUrl : (flag ?? fallback);
}

async function readSecret(
  secretId: string,
  context: CredentialEnvironment,
): Promise<{ username: string; apiKey: string; baseUrl?: string }> {
  if (!context.secretsManager) throw new UsageError('--secret-id needs AWS access');
  let text: string | undefined;
  try {
    const client = await context.secretsManager();
    const { GetSecretValueCommand } = await import('@aws-sdk/client-secrets-manager');
    const result = await client.send(
      new GetSecretValueCommand({ SecretId: secretId, VersionStage: 'AWSCURRENT' }),
    );
    text = result.SecretString;
  } catch (error) {
    throw new CredentialError(
      `could not read secret "${secretId}" from Secrets Manager: ${secretsManagerProblem(error, secretId)}`,
      {
        cause: error,
      },
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text ?? '');
  } catch {
    // Never echo the secret's text: it holds the key.
    throw new CredentialError(`secret "${secretId}" is not a JSON document with "username" and "key"`);
  }
  const doc = (parsed ?? {}) as Record<string, unknown>;
  const username = doc.username;
  const apiKey = doc.key ?? doc.apiKey;
  if (typeof username !== 'string' || username === '') {
    throw new CredentialError(`secret "${secretId}": field "username" is missing or not a string`);
  }
  if (typeof apiKey !== 'string' || apiKey === '') {
    throw new CredentialError(`secret "${secretId}": field "key" is missing or not a string`);
  }
  const baseUrl = typeof doc.baseUrl === 'string' ? doc.baseUrl : undefined;
  return { username, apiKey, ...(baseUrl ? { baseUrl } : {}) };
}

/**
 * What Secrets Manager's error means and what to do. Its messages name the secret, never its value, so
 * they are quoted (cut to 300 characters); the usual causes get a hint.
 */
export function secretsManagerProblem(error: unknown, secretId: string): string {
  const name = error instanceof Error ? error.name : 'Error';
  const message = error instanceof Error ? error.message.slice(0, 300) : String(error).slice(0, 300);
  if (message === 'Region is missing') {
    return 'no AWS region is set; set AWS_REGION to the region of the secret (e.g. AWS_REGION=eu-west-1)';
  }
  let hint = '';
  if (name === 'InvalidRequestException' && /deletion|deleted/i.test(message)) {
    hint =
      `. The secret is scheduled for deletion: restore it (aws secretsmanager restore-secret --secret-id ${secretId}) ` +
      'or name another secret';
  } else if (name === 'ResourceNotFoundException') {
    hint = '. Check the name or ARN, and that AWS_REGION is the region the secret is in';
  } else if (name === 'AccessDeniedException') {
    hint =
      '. The AWS identity in use may not read it (secretsmanager:GetSecretValue, and kms:Decrypt on its key)';
  } else if (name === 'DecryptionFailure') {
    hint = '. The AWS identity in use may not decrypt it with its KMS key (kms:Decrypt)';
  }
  return `${name}: ${message}${hint}`;
}

/** Reads one line from the terminal; with `hidden`, typed characters are not echoed. */
export async function promptOnTerminal(
  input: NodeJS.ReadStream,
  output: NodeJS.WriteStream,
  question: string,
  hidden: boolean,
): Promise<string> {
  output.write(question);
  return await new Promise((resolve, reject) => {
    let answer = '';
    const wasRaw = input.isRaw;
    if (input.isTTY) input.setRawMode(true);
    input.setEncoding('utf8');
    input.resume();
    const done = (error?: Error) => {
      input.off('data', onData);
      if (input.isTTY) input.setRawMode(wasRaw);
      input.pause();
      output.write('\n');
      if (error) reject(error);
      else resolve(answer);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003') return done(new CredentialError('cancelled'));
        if (ch === '\u007f' || ch === '\b') {
          answer = answer.slice(0, -1);
          continue;
        }
        answer += ch;
        if (!hidden) output.write(ch);
      }
    };
    input.on('data', onData);
  });
}

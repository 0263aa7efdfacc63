/**
 * `ccexport keys …`: status, submit (read a key from a hidden prompt or stdin, never argv), rotate,
 * generate. The `ccexport` entry point passes argv after `keys` (a leading "keys" is accepted too).
 */
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { describeCause, KeyUsageError } from '../keys/errors';
import { generateKey } from '../keys/generate';
import { keyStatus } from '../keys/status';
import { type RotationVerdict, rotateNow, startRotation, submitKey, type WaitOptions } from '../keys/submit';

export interface KeysIo {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  isTTY: boolean;
}

export interface KeysDeps {
  secretsManager: SecretsManagerClient;
  now?: () => Date;
  /** How `submit` and `rotate` wait for the rotation's verdict (tests shorten it). */
  wait?: WaitOptions;
}

const USAGE = `usage:
  ccexport keys status <credential>            current key, age, expiry, next rotation, anything pending
  ccexport keys submit <credential> [--name <prefix-YYYY-MM>] [--key-id <id>] [--site-key]
                                               read a new key from a hidden prompt or stdin, rotate to it,
                                               and wait for its test (exit 0 promoted, 1 refused, 3 still running)
                                               --key-id: CiviCRM contact id holding the key
                                               --site-key: CiviCRM, also read the site key (second line)
  ccexport keys rotate <credential> [--now]    start the scheduled rotation now; --now makes a fresh key
                                               even if the current one serves the month (a leaked key),
                                               and revokes the old one once the new one passed its test
  ccexport keys generate                       print a strong random key
<credential> is a secret name or ARN; a bare name means the secret "ccexport/credentials/<name>".
`;

/** Secret id for a credential name: names without "/" or ":" live under ccexport/credentials/. */
export function credentialSecretId(credential: string): string {
  return /[/:]/.test(credential) ? credential : `ccexport/credentials/${credential}`;
}

export async function runKeysCommand(argv: string[], io: KeysIo, deps: KeysDeps): Promise<number> {
  const args = argv[0] === 'keys' ? argv.slice(1) : [...argv];
  const now = deps.now ?? (() => new Date());
  const out = (s: string) => io.stdout.write(s);
  const err = (s: string) => io.stderr.write(s);
  const [command, ...rest] = args;
  try {
    switch (command) {
      case 'generate': {
        if (rest.length > 0) throw new KeyUsageError('"keys generate" takes no arguments');
        out(`${generateKey(32)}\n`);
        return 0;
      }
      case 'status': {
        const credential = onlyCredential(rest, 'status');
        const s = await keyStatus(deps.secretsManager, credentialSecretId(credential), now());
        const lines = [
          `credential:     ${credential} (${s.provider})`,
          s.ageDays === undefined
            ? `current key:    none yet: submit the first key with "ccexport keys submit ${credential}"`
            : `current key:    ${s.keyName}, ${s.ageDays} day(s) old (since ${s.createdAt})`,
          `expires:        ${s.expiresAt ?? 'not set'}`,
          `next rotation:  ${s.nextRotation ?? 'after the first key'}`,
          `pending:        ${s.pendingRotation ? `rotation in progress or failed (version ${s.pendingRotation})` : 'none'}`,
        ];
        if (s.submittedKey) lines.push(`submitted:      ${s.submittedKey} (waiting for its rotation)`);
        if (s.lastRotation) lines.push(`last rotation:  ${s.lastRotation}`);
        if (s.lastSubmission) lines.push(`last submitted: ${s.lastSubmission}`);
        if (s.dueKey)
          lines.push(
            `action needed:  create ${s.dueKey} in CommCare HQ, then "ccexport keys submit ${credential}"`,
          );
        if (s.previousKey) {
          lines.push(
            `previous key:   ${s.previousKey} (${s.previousRetired ? 'retired' : 'still valid: grace period'})`,
          );
        }
        lines.push(
          `last export ok: ${s.lastExport ? `${s.lastExport.at} with ${s.lastExport.keyName}` : 'none recorded'}`,
        );
        out(`${lines.join('\n')}\n`);
        return 0;
      }
      case 'rotate': {
        const immediate = rest.includes('--now');
        const credential = onlyCredential(
          rest.filter((a) => a !== '--now'),
          'rotate',
        );
        const secretId = credentialSecretId(credential);
        if (immediate) {
          const { verdict } = await rotateNow(deps.secretsManager, secretId, now(), deps.wait);
          return report(verdict, credential, out, err);
        }
        const version = await startRotation(deps.secretsManager, secretId, now());
        out(
          `rotation started for ${credential} (version ${version}); see "ccexport keys status ${credential}"\n`,
        );
        return 0;
      }
      case 'submit': {
        const { credential, name, keyId, siteKey } = parseSubmit(rest);
        const lines = io.isTTY ? undefined : await readLines(io.stdin, siteKey ? 2 : 1);
        const key = lines
          ? (lines[0] as string)
          : await readHidden(io, 'Paste the new API key (input is hidden): ');
        const site = siteKey
          ? lines
            ? (lines[1] as string)
            : await readHidden(io, 'Paste the CiviCRM site key (input is hidden): ')
          : undefined;
        out(`submitting the key for ${credential}; waiting for it to be tested against the provider...\n`);
        const { verdict } = await submitKey(
          deps.secretsManager,
          credentialSecretId(credential),
          {
            key,
            ...(name ? { keyName: name } : {}),
            ...(keyId ? { providerKeyId: keyId } : {}),
            ...(site ? { siteKey: site } : {}),
          },
          now(),
          deps.wait,
        );
        return report(verdict, credential, out, err);
      }
      case 'help':
      case '--help':
      case '-h':
        out(USAGE);
        return 0;
      default:
        err(command ? `unknown keys command "${command}"\n${USAGE}` : USAGE);
        return 2;
    }
  } catch (e) {
    if (e instanceof KeyUsageError) {
      err(`error: ${e.message}\n`);
      return 2;
    }
    err(`error: ${describeCause(e)}\n`);
    return 1;
  }
}

/** Prints a rotation's verdict; exit 0 when a key is in use, 1 when refused or failed, 3 when still running. */
function report(
  verdict: RotationVerdict,
  credential: string,
  out: (s: string) => void,
  err: (s: string) => void,
): number {
  switch (verdict.status) {
    case 'promoted':
      out(`key ${verdict.keyName} passed its test and is now the current key of ${credential}.\n`);
      return 0;
    case 'kept':
      out(
        `the current key ${verdict.keyName} of ${credential} already serves this month; nothing changed.\n`,
      );
      return 0;
    case 'rejected':
    case 'failed':
      err(
        `error: the key was not taken: ${verdict.reason}\n` +
          'The current key stays in use. Fix the cause and submit again; CommCare HQ refuses a key name it has ' +
          'seen, so create the new key under another name (or delete the failed one first) and pass --name.\n',
      );
      return 1;
    case 'running':
      err(
        `the rotation has not finished yet${verdict.reason ? ` (${verdict.reason})` : ''}; ` +
          `see "ccexport keys status ${credential}".\n`,
      );
      return 3;
  }
}

function onlyCredential(rest: string[], command: string): string {
  if (rest.length !== 1 || !rest[0] || rest[0].startsWith('-')) {
    throw new KeyUsageError(`"keys ${command}" takes exactly one argument, the credential name`);
  }
  return rest[0];
}

function parseSubmit(rest: string[]): {
  credential: string;
  name?: string;
  keyId?: string;
  siteKey: boolean;
} {
  let credential: string | undefined;
  let name: string | undefined;
  let keyId: string | undefined;
  let siteKey = false;
  for (let i = 0; i < rest.length; i += 1) {
    const a = rest[i] ?? '';
    if (a === '--site-key') {
      siteKey = true;
    } else if (a === '--name' || a === '--key-id') {
      const v = rest[i + 1];
      if (v === undefined) throw new KeyUsageError(`${a} needs a value`);
      if (a === '--name') name = v;
      else keyId = v;
      i += 1;
    } else if (/^--(key|api-key|apikey)(=|$)/.test(a)) {
      throw new KeyUsageError(
        'refusing a key on the command line (it would land in shell history and the process list); ' +
          'paste it at the prompt or pipe it on stdin',
      );
    } else if (a.startsWith('-')) {
      throw new KeyUsageError(`unknown option ${a.split('=')[0]}`);
    } else if (credential === undefined) {
      credential = a;
    } else {
      // Never echo it: it may be the key.
      throw new KeyUsageError(
        'refusing an extra argument: a key must never be given on the command line; ' +
          'paste it at the prompt or pipe it on stdin',
      );
    }
  }
  if (!credential) throw new KeyUsageError('"keys submit" needs the credential name');
  return { credential, siteKey, ...(name ? { name } : {}), ...(keyId ? { keyId } : {}) };
}

/** The first `count` non-empty lines of stdin (the key, then the site key). */
async function readLines(stdin: NodeJS.ReadableStream, count: number): Promise<string[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  if (lines.length < count) {
    throw new KeyUsageError(
      count === 1 ? 'no key on stdin' : 'expected the key and the site key on two lines of stdin',
    );
  }
  return lines.slice(0, count);
}

/** Reads one line without echo (raw mode when the stream supports it). */
async function readHidden(io: KeysIo, prompt: string): Promise<string> {
  io.stderr.write(prompt);
  const tty = io.stdin as NodeJS.ReadableStream & { setRawMode?: (raw: boolean) => void };
  tty.setRawMode?.(true);
  try {
    return await new Promise<string>((resolve, reject) => {
      let value = '';
      const onData = (chunk: Buffer | string) => {
        for (const ch of chunk.toString()) {
          if (ch === '\r' || ch === '\n') {
            cleanup();
            io.stderr.write('\n');
            if (!value.trim()) reject(new KeyUsageError('no key entered'));
            else resolve(value.trim());
            return;
          }
          if (ch === '\u0003') {
            cleanup();
            reject(new KeyUsageError('cancelled'));
            return;
          }
          if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
          else value += ch;
        }
      };
      const onEnd = () => {
        cleanup();
        if (value.trim()) resolve(value.trim());
        else reject(new KeyUsageError('no key entered'));
      };
      const cleanup = () => {
        io.stdin.off('data', onData);
        io.stdin.off('end', onEnd);
        io.stdin.pause();
      };
      io.stdin.on('data', onData);
      io.stdin.on('end', onEnd);
      io.stdin.resume();
    });
  } finally {
    tty.setRawMode?.(false);
  }
}

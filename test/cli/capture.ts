import { PassThrough } from 'node:stream';
import type { CommandIO } from '../../functions/cli/io';

export interface CapturedIO extends CommandIO {
  readonly out: () => string;
  readonly err: () => string;
}

/** A CommandIO whose output is captured; stdin is empty and not a terminal. */
export function captureIO(env: Record<string, string | undefined> = {}, cwd = process.cwd()): CapturedIO {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const stdin = new PassThrough();
  stdin.end();
  let out = '';
  let err = '';
  stdout.on('data', (c: Buffer) => {
    out += c.toString('utf8');
  });
  stderr.on('data', (c: Buffer) => {
    err += c.toString('utf8');
  });
  return { stdin, stdout, stderr, env, cwd, out: () => out, err: () => err };
}

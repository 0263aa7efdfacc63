import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { type RunningMoto, type RunningPostgres, startMoto, startPostgres } from './services';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL of a throwaway PostgreSQL cluster (create your own database in it). */
    pgUrl: string;
    /** moto_server endpoint serving S3 and Secrets Manager. */
    motoEndpoint: string;
  }
}

let postgres: RunningPostgres | undefined;
let moto: RunningMoto | undefined;
let tempRoot: string | undefined;

export async function setup(project: TestProject): Promise<void> {
  // Every temporary folder of the run (the tests', the processes they start, the PostgreSQL cluster's)
  // goes under one folder that teardown removes, so a run leaves nothing in the OS temp folder, whatever
  // a test forgot to remove. The test workers and every process they start inherit TMPDIR; the folder is
  // readable by others because the cluster runs as the postgres user.
  tempRoot = mkdtempSync(join(tmpdir(), 'ccexport-tests-'));
  chmodSync(tempRoot, 0o755);
  process.env.TMPDIR = tempRoot;
  [postgres, moto] = await Promise.all([startPostgres(), startMoto()]);
  project.provide('pgUrl', postgres.url);
  project.provide('motoEndpoint', moto.endpoint);
}

export async function teardown(): Promise<void> {
  moto?.stop();
  postgres?.stop();
  if (tempRoot) rmSync(tempRoot, { recursive: true, force: true });
}

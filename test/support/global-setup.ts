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

export async function setup(project: TestProject): Promise<void> {
  [postgres, moto] = await Promise.all([startPostgres(), startMoto()]);
  project.provide('pgUrl', postgres.url);
  project.provide('motoEndpoint', moto.endpoint);
}

export async function teardown(): Promise<void> {
  moto?.stop();
  postgres?.stop();
}

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { motoS3 } from '../support/aws';
import { CHAOS_KEY, CHAOS_USER, prng } from './support';
import { type ChaosWorld, crashTrial, createBucket } from './trial';

const SEED = 31_337;
let sandbox: RunningSandbox;
let world: ChaosWorld;

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 11,
    projects: [{ name: 'chaos', forms: 400, cases: 20 }],
    credentials: [{ username: CHAOS_USER, apiKey: CHAOS_KEY }],
  });
  world = {
    sandbox,
    project: 'chaos',
    pgAdminUrl: inject('pgUrl'),
    motoEndpoint: inject('motoEndpoint'),
    s3: motoS3(inject('motoEndpoint')),
    bucket: `chaos-${process.pid}`,
    batchSize: 10,
  };
  await createBucket(world.s3, world.bucket);
});

afterAll(async () => {
  await sandbox.close();
});

describe('an incremental export to S3 (moto) as csv killed with SIGKILL at random moments', () => {
  const random = prng(SEED);
  for (let trial = 1; trial <= 3; trial++) {
    const kills = Array.from({ length: 1 }, () => Math.floor(random() * 16));
    it(`ends exact after kills at pages ${kills.join(', ')} and a final run (trial ${trial}, seed ${SEED})`, async () => {
      const outcome = await crashTrial(world, `chaos-s3-${process.pid}_${trial}`, 's3', kills);
      expect(outcome.problems).toEqual([]);
      expect(outcome.rows).toBeGreaterThan(100);
    });
  }
});

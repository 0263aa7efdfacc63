import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Cell } from '../../functions/query/types';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { motoS3 } from '../support/aws';
import { CHAOS_KEY, CHAOS_USER, diffTables, prng } from './support';
import { type ChaosWorld, crashTrial } from './trial';

const SEED = 20_241;
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
    bucket: 'unused',
    batchSize: 10,
  };
});

afterAll(async () => {
  await sandbox.close();
});

describe('an incremental export to PostgreSQL killed with SIGKILL at random moments', () => {
  const random = prng(SEED);
  for (let trial = 1; trial <= 3; trial++) {
    const kills = Array.from({ length: 1 }, () => Math.floor(random() * 16));
    it(`ends exact after kills at pages ${kills.join(', ')} and a final run (trial ${trial}, seed ${SEED})`, async () => {
      const outcome = await crashTrial(world, `chaos_pg_${process.pid}_${trial}`, 'postgres', kills);
      expect(outcome.problems).toEqual([]);
      expect(outcome.rows).toBeGreaterThan(100);
    });
  }
});

describe('the crash-test oracle', () => {
  it('notices a missing row, a changed cell and an unexpected row', () => {
    const truth = new Map([
      [
        't',
        {
          name: 't',
          headings: ['id', 'n'],
          rows: new Map<string, Cell[]>([
            ['a', ['a', 1]],
            ['b', ['b', 2]],
          ]),
        },
      ],
    ]);
    const actual = new Map([
      [
        't',
        new Map<string, (string | null)[]>([
          ['a', ['a', '9']],
          ['c', ['c', '3']],
        ]),
      ],
    ]);
    expect(diffTables(truth, actual)).toEqual([
      't: row a column n: want 1, got 9',
      't: row b missing',
      't: unexpected row c',
    ]);
  });
});

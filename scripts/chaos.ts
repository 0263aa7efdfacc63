/**
 * Crash anywhere: `npm run test:chaos -- [--seed N] [--trials N] [--forms N] [--batch-size N]`.
 *
 * Starts its own PostgreSQL, moto and sandbox HQ on loopback, then per trial takes a fresh target
 * (alternately a PostgreSQL database and an S3 prefix written as csv), runs `node bin/ccexport.js run`
 * and SIGKILLs it after a random number of pages, one to three times (checking after each kill that
 * the checkpoint is not ahead of the data), runs it to the end, and compares the target with the ground
 * truth computed from the sandbox's time line. Prints the seed first; the same seed replays the trials.
 * Exit code 1 when any trial found a problem.
 */

import { startSandbox } from '../functions/sandbox';
import { CHAOS_KEY, CHAOS_USER, prng } from '../test/chaos/support';
import { type ChaosTarget, type ChaosWorld, crashTrial, createBucket } from '../test/chaos/trial';
import { motoS3 } from '../test/support/aws';
import { startMoto, startPostgres } from '../test/support/services';

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const value = Number(process.argv[i + 1]);
  if (!Number.isInteger(value) || value < 0) {
    console.error(`--${name} expects a non-negative integer (got "${process.argv[i + 1]}")`);
    process.exit(2);
  }
  return value;
}

const seed = flag('seed', Math.floor(Math.random() * 2 ** 31));
const trials = flag('trials', 50);
const forms = flag('forms', 400);
const batchSize = flag('batch-size', 10);
console.log(`chaos: seed ${seed}, ${trials} trials, ${forms} forms, batch size ${batchSize}`);
console.log(
  `replay: npm run test:chaos -- --seed ${seed} --trials ${trials} --forms ${forms} --batch-size ${batchSize}`,
);

const random = prng(seed);
const [postgres, moto] = await Promise.all([startPostgres(), startMoto()]);
const sandbox = await startSandbox({
  seed: seed % 1000,
  projects: [{ name: 'chaos', forms, cases: 10 }],
  credentials: [{ username: CHAOS_USER, apiKey: CHAOS_KEY }],
});
const world: ChaosWorld = {
  sandbox,
  project: 'chaos',
  pgAdminUrl: postgres.url,
  motoEndpoint: moto.endpoint,
  s3: motoS3(moto.endpoint),
  bucket: 'chaos',
  batchSize,
};
// Ctrl-C or kill: stop the servers this script started before leaving.
const stopAll = async (signal: string) => {
  console.log(`chaos: ${signal}, stopping the sandbox, moto and PostgreSQL`);
  await sandbox.close().catch(() => undefined);
  moto.stop();
  postgres.stop();
  process.exit(130);
};
process.once('SIGINT', () => void stopAll('SIGINT'));
process.once('SIGTERM', () => void stopAll('SIGTERM'));
const started = Date.now();
let failed = 0;
let kills = 0;
let landed = 0;
try {
  await createBucket(world.s3, world.bucket);
  // Pages of one complete run: kill points are drawn over a little more than that.
  const pagesEstimate = Math.ceil((forms * 0.45) / batchSize) + 2;
  for (let trial = 1; trial <= trials; trial++) {
    const target: ChaosTarget = trial % 2 === 1 ? 'postgres' : 's3';
    const count = 1 + Math.floor(random() * 3);
    const points = Array.from({ length: count }, () => Math.floor(random() * pagesEstimate));
    const outcome = await crashTrial(world, `chaos_${seed}_${trial}`.toLowerCase(), target, points);
    kills += outcome.runs.length;
    landed += outcome.runs.filter((r) => r.killed).length;
    const runs = outcome.runs.map((r) => (r.killed ? `killed@${r.pages}` : `finished(${r.code})`)).join(' ');
    console.log(
      `trial ${String(trial).padStart(3)} ${target.padEnd(8)} ${runs.padEnd(40)} ${outcome.rows} rows ${outcome.problems.length === 0 ? 'OK' : 'FAIL'}`,
    );
    if (outcome.problems.length > 0) {
      failed++;
      for (const p of outcome.problems) console.log(`    ${p}`);
    }
  }
} finally {
  await sandbox.close();
  moto.stop();
  postgres.stop();
}
console.log(
  `summary: seed ${seed}, ${trials} trials, ${failed} failed; ${kills} runs started to be killed, ${landed} killed mid-run, ` +
    `${kills - landed} finished first; ${Math.round((Date.now() - started) / 1000)} s`,
);
process.exitCode = failed > 0 ? 1 : 0;

/**
 * The export Lambda's cold start (issue 15 §5): `functions/export/handler.ts` bundled as the stack bundles
 * it (esbuild, minified CommonJS, the AWS SDK left to the runtime), then loaded in fresh Node processes,
 * each measuring what Lambda's init phase pays: loading the bundle and building the module-scope clients.
 *
 *   node --import tsx bench/lambda.ts [--runs 5]
 *
 * Prints one JSON line: bundle size, init wall and CPU milliseconds and RSS after init (medians).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { median, ROOT, round } from './harness';

export interface ColdStart {
  readonly bundleKb: number;
  readonly runs: number;
  readonly initMs: number;
  readonly initCpuMs: number;
  readonly rssAfterInitMb: number;
}

/** What one fresh process measures while it loads the bundle (printed as JSON). */
const PROBE = `
const t0 = process.hrtime.bigint();
const c0 = process.cpuUsage();
const { handler } = require(process.argv[1]);
if (typeof handler !== 'function') throw new Error('the bundle exports no handler');
const c = process.cpuUsage(c0);
console.log(JSON.stringify({
  initMs: Number(process.hrtime.bigint() - t0) / 1e6,
  initCpuMs: (c.user + c.system) / 1000,
  rssMb: process.memoryUsage().rss / 2 ** 20,
}));
`;

export async function measureColdStart(runs = 5): Promise<ColdStart> {
  // Inside node_modules, so that the SDK the bundle leaves out resolves as it does on the runtime.
  const dir = mkdtempSync(join(ROOT, 'node_modules', '.ccexport-lambda-bench-'));
  try {
    const outfile = join(dir, 'index.js');
    await build({
      absWorkingDir: ROOT,
      entryPoints: ['functions/export/handler.ts'],
      outfile,
      bundle: true,
      minify: true,
      sourcemap: true,
      sourcesContent: false,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      external: ['@aws-sdk/*', 'pg-native'],
      logLevel: 'warning',
    });
    const samples: { initMs: number; initCpuMs: number; rssMb: number }[] = [];
    for (let run = 0; run < runs; run++) {
      const out = spawnSync(process.execPath, ['-e', PROBE, outfile], {
        cwd: dir,
        env: {
          ...process.env,
          AWS_REGION: 'us-east-1',
          AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
          POWERTOOLS_METRICS_NAMESPACE: 'bench',
          POWERTOOLS_SERVICE_NAME: 'bench',
        },
        encoding: 'utf8',
      });
      if (out.status !== 0) throw new Error(`loading the bundle failed: ${out.stderr}`);
      samples.push(JSON.parse(out.stdout.trim().split('\n').pop() ?? '{}'));
    }
    return {
      bundleKb: round(statSync(outfile).size / 1024, 0),
      runs,
      initMs: round(median(samples.map((s) => s.initMs)), 0),
      initCpuMs: round(median(samples.map((s) => s.initCpuMs)), 0),
      rssAfterInitMb: round(median(samples.map((s) => s.rssMb))),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const at = process.argv.indexOf('--runs');
  console.log(JSON.stringify(await measureColdStart(at > 0 ? Number(process.argv[at + 1]) : 5)));
}

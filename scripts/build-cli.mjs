#!/usr/bin/env node
// Builds the `ccexport` command into dist/cli/ (npm's `prepare`, so `npm ci` runs it): our TypeScript
// sources bundled by esbuild into ES modules, one chunk per lazily loaded command, with every npm
// package left to node_modules. bin/ccexport.js runs this bundle while it is newer than every source
// file it was built from (listed in dist/cli/inputs.json) and compiles the sources with tsx otherwise,
// so an edited source is never shadowed by a stale bundle.
//
//   node scripts/build-cli.mjs [OUTDIR]     default dist/cli
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = resolve(root, process.argv[2] ?? 'dist/cli');

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  // An install without dev dependencies has no esbuild: the command still runs, from the sources.
  console.warn('build-cli: esbuild is not installed; ccexport will compile its sources at each start');
  process.exit(0);
}

rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });
const result = await esbuild.build({
  absWorkingDir: root,
  entryPoints: { main: 'functions/cli/main.ts' },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  sourcemap: 'linked',
  metafile: true,
  logLevel: 'warning',
});
const inputs = Object.keys(result.metafile.inputs)
  .filter((path) => !path.includes('node_modules'))
  .map((path) => relative(root, resolve(root, path)));
writeFileSync(join(outdir, 'inputs.json'), `${JSON.stringify(inputs, null, 1)}\n`);
console.log(`build-cli: ${relative(root, outdir)} from ${inputs.length} source files`);

#!/usr/bin/env node
// Builds the `ccexport` command into dist/cli/ (npm's `prepare`, so `npm ci` runs it): our TypeScript
// sources and the npm packages they use bundled by esbuild into ES modules, one chunk per lazily loaded
// command. Bundling the packages matters to start-up: Node's ES module loader resolves, reads and
// format-checks each of their files on its own (axios alone pulls in ~40), and lexes every CommonJS
// file for its exports; inside the bundle they are plain functions (about 0.4 s of CPU less per run).
// A few packages stay in node_modules (EXTERNAL). bin/ccexport.js runs this bundle while it is newer than every source
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

// PGlite loads its WebAssembly and data files from beside its own modules; pg-native is pg's optional
// native binding; tsx and esbuild are build tools; the CDK libraries are never loaded by a command. The
// AWS SDK is loaded on demand (S3 output, Secrets Manager) by `await import(...)` of named exports,
// which a bundled CommonJS package cannot give (its chunk has only a default export).
const EXTERNAL = [
  '@aws-sdk/*',
  '@smithy/*',
  '@aws-lambda-powertools/*',
  '@electric-sql/*',
  'pg-native',
  'tsx',
  'tsx/*',
  'esbuild',
  'aws-cdk-lib',
  'aws-cdk-lib/*',
  'constructs',
  'cdk-nag',
];
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
  external: EXTERNAL,
  // Bundled CommonJS packages call require() for Node's built-in modules; an ES module has none.
  banner: {
    js: "import { createRequire as __cliRequire } from 'node:module'; const require = __cliRequire(import.meta.url);",
  },
  sourcemap: 'linked',
  metafile: true,
  logLevel: 'warning',
});
const inputs = Object.keys(result.metafile.inputs)
  .filter((path) => !path.includes('node_modules'))
  .map((path) => relative(root, resolve(root, path)));
writeFileSync(join(outdir, 'inputs.json'), `${JSON.stringify(inputs, null, 1)}\n`);
console.log(`build-cli: ${relative(root, outdir)} from ${inputs.length} source files`);

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
import { readFile } from 'node:fs/promises';
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
// What the bundle leaves out of axios. The CLI's HTTP client sends its GETs with Node's own client, or,
// when the environment names a proxy, through axios's Node `http` adapter (functions/commcare/
// transport.ts), with no request body and no HTTP/2; yet importing axios loaded three things only other
// uses need (~60 ms of CPU, an eighth of a 100-form export's):
// - its fetch adapter, and its FormData check, read Node's global `fetch`, `Request`, `Response` and
//   `FormData`, whose first access loads and compiles Node's bundled undici (~30 ms). The adapter becomes
//   "not supported here" (axios then keeps to `http`, its first choice in Node anyway); `isFormData`
//   keeps its duck-typed test, which still recognises Node's FormData by its tag.
// - the `form-data` package (multipart bodies), which loads mime-types and evaluates the whole mime-db
//   table (~20 ms); in the bundle, making a multipart body throws.
// - Node's `http2` module (~9 ms to load), imported for the `httpVersion: 2` option that nothing here
//   sets: axios's import of it becomes a stand-in that loads it on first use.
// A patch whose text is no longer found (a newer axios) is skipped with a warning: the command works as
// before, only slower, and test/cli/bundle.test.ts, which checks that a run through a proxy loads no
// undici, fails.
const AXIOS_TRIMS = [
  {
    path: /[\\/]node_modules[\\/]axios[\\/]lib[\\/]adapters[\\/]fetch\.js$/,
    contents:
      '// Left out of the ccexport bundle (scripts/build-cli.mjs).\nexport const getFetch = () => false;\nexport default false;\n',
  },
  {
    path: /[\\/]node_modules[\\/]axios[\\/]lib[\\/]utils\.js$/,
    replace: ["typeof G.FormData !== 'undefined' ? G.FormData : undefined", 'undefined'],
  },
  {
    path: /[\\/]node_modules[\\/]form-data[\\/]lib[\\/]form_data\.js$/,
    contents:
      "// Left out of the ccexport bundle (scripts/build-cli.mjs).\nmodule.exports = class FormData {\n  constructor() {\n    throw new Error('multipart request bodies (form-data) are not part of the ccexport command');\n  }\n};\n",
  },
];

const trimAxios = {
  name: 'trim-axios',
  setup(build) {
    build.onResolve({ filter: /^(node:)?http2$/ }, ({ importer }) =>
      /[\\/]node_modules[\\/]axios[\\/]/.test(importer)
        ? { path: 'http2', namespace: 'on-first-use' }
        : undefined,
    );
    build.onLoad({ filter: /^http2$/, namespace: 'on-first-use' }, () => ({
      contents:
        "let http2;\nexport default new Proxy({}, { get: (_, name) => (http2 ??= require('node:http2'))[name] });\n",
      loader: 'js',
    }));
    for (const trim of AXIOS_TRIMS) {
      build.onLoad({ filter: trim.path }, async ({ path }) => {
        if (trim.contents !== undefined) return { contents: trim.contents, loader: 'js' };
        const source = await readFile(path, 'utf8');
        const [from, to] = trim.replace;
        if (!source.includes(from)) {
          return {
            contents: source,
            loader: 'js',
            warnings: [{ text: `"${from}" not found: left as it is` }],
          };
        }
        return { contents: source.replace(from, to), loader: 'js' };
      });
    }
  },
};

// Bundled CommonJS packages call require() for Node's built-in modules, which an ES module does not have:
// esbuild's runtime helper (`__require`) uses the `require` of its chunk, which this line gives. It stays
// only in the chunks that name `require` outside that helper's calls (the helper's chunk, and a few that
// only mention the word, which is harmless): in the others it cost, at every start, an `import.meta`
// (Node works out each module's file name and folder for it) and a `createRequire` (the list of
// node_modules folders above dist/cli), ~0.3 ms for each of the ~34 chunks a run loads. Where it is
// dropped its line stays, empty, so the source maps still match.
const REQUIRE_BANNER =
  "import { createRequire as __cliRequire } from 'node:module'; const require = __cliRequire(import.meta.url);";
const NAMES_REQUIRE = /(?<![\w$.])require(?![\w$])/;

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
  banner: { js: REQUIRE_BANNER },
  sourcemap: 'linked',
  plugins: [trimAxios],
  metafile: true,
  write: false,
  logLevel: 'warning',
});
for (const file of result.outputFiles) {
  let { text } = file;
  if (file.path.endsWith('.js') && text.startsWith(`${REQUIRE_BANNER}\n`)) {
    const body = text.slice(REQUIRE_BANNER.length);
    if (!NAMES_REQUIRE.test(body)) text = body;
  }
  writeFileSync(file.path, text);
}
const inputs = Object.keys(result.metafile.inputs)
  // Packages, and modules the plugin makes up (`on-first-use:http2`), are not sources to watch.
  .filter((path) => !path.includes('node_modules') && !/^[\w-]+:/.test(path))
  .map((path) => relative(root, resolve(root, path)));
writeFileSync(join(outdir, 'inputs.json'), `${JSON.stringify(inputs, null, 1)}\n`);
console.log(`build-cli: ${relative(root, outdir)} from ${inputs.length} source files`);

#!/usr/bin/env node
// Entry point of the `ccexport` command. The sources are TypeScript. `npm ci` builds them into
// dist/cli/ (scripts/build-cli.mjs, run as `prepare`), and that bundle starts in a fraction of the time
// tsx takes to compile the sources. The bundle runs only while it is newer than every source file it
// was built from; otherwise (a source edited since, no bundle, or CCEXPORT_FROM_SOURCE=1) tsx compiles
// the sources on load, so `npm ci` stays the only set-up step and an edit is never shadowed.
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// The AWS SDK warns on every run under Node 20 that its releases after January 2027 need Node 22. It is
// about which SDK versions this package may pin, not something a person running ccexport can act on.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const root = fileURLToPath(new URL('../', import.meta.url));
const bundle = new URL('../dist/cli/main.js', import.meta.url);

/**
 * True when dist/cli/main.js exists and no source file it was built from changed after it. The ~110
 * files are stat'ed by plain path: a `URL` each made Node's URL-to-path and path functions hot enough
 * at every start to be sent to the optimizing compiler (~30 ms of CPU on its thread, for nothing).
 */
function bundleIsFresh() {
  try {
    const built = statSync(`${root}dist/cli/main.js`).mtimeMs;
    const inputs = JSON.parse(readFileSync(`${root}dist/cli/inputs.json`, 'utf8'));
    return inputs.every((path) => statSync(root + path).mtimeMs <= built);
  } catch {
    return false;
  }
}

let main;
if (process.env.CCEXPORT_FROM_SOURCE !== '1' && bundleIsFresh()) {
  ({ main } = await import(bundle.href));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../functions/cli/main.ts'));
}
process.exitCode = await main(process.argv.slice(2));

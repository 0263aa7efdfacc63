#!/usr/bin/env node
// Entry point of the `ccexport` command. The sources are TypeScript; tsx compiles them on load so that
// `npm ci` is the only set-up step (no build step to forget).
import { register } from 'tsx/esm/api';

// The AWS SDK warns on every run under Node 20 that its releases after January 2027 need Node 22. It is
// about which SDK versions this package may pin, not something a person running ccexport can act on.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

register();
const { main } = await import('../functions/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));

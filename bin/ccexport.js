#!/usr/bin/env node
// Entry point of the `ccexport` command. The sources are TypeScript; tsx compiles them on load so that
// `npm ci` is the only set-up step (no build step to forget).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../functions/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));

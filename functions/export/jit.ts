/**
 * How much V8's optimizing compiler (TurboFan) inlines into one function, in the CLI.
 *
 * An export's hot loop is one async function (`writePage`) calling the query's row builders and the
 * sink, and TurboFan inlines up to 920 bytes of bytecode of callees into each function it optimizes
 * (V8's `--max-inlined-bytecode-size-cumulative`). Those large graphs are compiled again after every
 * deoptimization (a record or page of a shape not seen before), so on a 50,000-form csv export the
 * background compiler used 13–15% of all the process's CPU (perf, all threads). A budget of 200 bytes
 * keeps small helpers inlined and the compile jobs small: the compiler's share fell to ~9% and the
 * whole run's CPU by ~3% (bench/REPORT.md, issue 15). Without inlining at all the code ran slower.
 *
 * Like the heap flags (heap.ts), V8 reads it whenever it compiles, so it applies from the next
 * optimization after it is set. The CLI sets it; the export function does not (untested there).
 */
import { applyV8Flag } from '../common/v8-flags';

export const MAX_INLINED_BYTECODE_CUMULATIVE = 200;

/** Applies `MAX_INLINED_BYTECODE_CUMULATIVE` to this process (once; later calls do nothing). */
export function limitInlining(): void {
  applyV8Flag(`--max-inlined-bytecode-size-cumulative=${MAX_INLINED_BYTECODE_CUMULATIVE}`);
}

/**
 * Runs the synthesized state machine with the bundled export function in a process of its own, for
 * settings Node reads only at start (NODE_EXTRA_CA_CERTS: the CA the function trusts for PostgreSQL,
 * as the stack points it at the runtime's CA file). Reads its orders as JSON on stdin, prints the run
 * as JSON on stdout. Each slice's Lambda context reports time left for `pagesPerSlice` checks, then
 * none: the slice yields as it would near the 15-minute limit.
 */
import { randomUUID } from 'node:crypto';
import { loadBundledHandler, runLocally, type SynthesizedExport } from './harness';

export interface ChildOrders {
  readonly synthesized: SynthesizedExport;
  readonly env: Record<string, string>;
  readonly name: string;
  readonly input: unknown;
  /** Pages a slice may list before its context reports no time left (0: one page per slice). */
  readonly pagesPerSlice: number;
  readonly maxExecutions: number;
}

export interface ChildRun {
  readonly slices: { continuation: unknown; result?: unknown; error?: { name: string; message: string } }[];
  readonly failed?: { name: string; message: string };
}

let text = '';
for await (const chunk of process.stdin) text += chunk;
const orders = JSON.parse(text) as ChildOrders;
const handler = loadBundledHandler(orders.synthesized.codeRoot, orders.env);
const context = () => {
  let checks = 0;
  return {
    awsRequestId: randomUUID(),
    getRemainingTimeInMillis: () => (++checks <= orders.pagesPerSlice ? 15 * 60_000 : 0),
  };
};
const slices: ChildRun['slices'] = [];
let failed: ChildRun['failed'];
try {
  const run = await runLocally(
    { synthesized: orders.synthesized, handler, context, maxExecutions: orders.maxExecutions },
    orders.name,
    orders.input,
  );
  for (const slice of run.slices)
    slices.push({
      continuation: slice.event.continuation,
      ...(slice.result ? { result: slice.result } : {}),
      ...(slice.error ? { error: { name: slice.error.name, message: slice.error.message } } : {}),
    });
} catch (error) {
  const cause = ((error as Error).cause ?? error) as Error;
  failed = { name: cause.name, message: cause.message };
}
process.stdout.write(JSON.stringify({ slices, ...(failed ? { failed } : {}) } satisfies ChildRun));

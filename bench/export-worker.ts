/**
 * Runs one `ccexport run` in this process and prints a JSON line with its wall time and peak RSS,
 * so the benchmark measures the exporter alone (the sandbox runs in another process).
 */
import { PassThrough } from 'node:stream';
import { runRunCommand } from '../functions/cli/run-command';

const started = performance.now();
const stdout = new PassThrough();
const stderr = new PassThrough();
let summary = '';
stdout.on('data', (chunk: Buffer) => {
  summary += chunk.toString();
});
stderr.resume();
const code = await runRunCommand(process.argv.slice(2), {
  stdin: process.stdin,
  stdout,
  stderr,
  env: process.env,
  cwd: process.cwd(),
});
const seconds = (performance.now() - started) / 1000;
/** Reads `12,345 records` style figures from the run's summary line. */
const count = (label: string): number => {
  const match = new RegExp(`([\\d,]+) ${label}`).exec(summary);
  return Number((match?.[1] ?? '0').replaceAll(',', ''));
};
const cpu = process.cpuUsage();
process.stdout.write(
  `${JSON.stringify({
    code,
    seconds,
    // CPU the exporter itself used: on a shared machine this is steadier than wall time.
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    peakRssMb: process.resourceUsage().maxRSS / 1024,
    records: count('records'),
    rows: count('rows'),
    pages: count('pages'),
    retries: count('retries'),
    throttled: count('throttled'),
  })}\n`,
);
process.exit(code);

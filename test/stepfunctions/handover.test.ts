/**
 * The last states of the synthesized state machine, run locally with a stand-in slice: the handover to
 * a new execution and the run's metric survive a failing call (retried), a handover whose start already
 * happened counts as done, and handover names stay within Step Functions' 80 characters.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { ExportSliceEvent } from '../../functions/config/job';
import {
  findState,
  fixtureConfig,
  runLocally,
  type SliceHandler,
  type SynthesizedExport,
  synthesizeExport,
} from './harness';

let synthesized: SynthesizedExport;
let definition: Record<string, unknown>;

/** Done after `slices` slices per project; each slice hands the next a counter as its continuation. */
function countingHandler(slices: number): SliceHandler {
  return async (event) => {
    const n = ((event as ExportSliceEvent).continuation as { n?: number } | null)?.n ?? 0;
    // The export function always sends `hqConfig` (null for a query file): the result selector reads it.
    return n + 1 >= slices
      ? { done: true, continuation: null, rows: 1, pages: 1, hqConfig: null }
      : { done: false, continuation: { n: n + 1 }, rows: 1, pages: 1, hqConfig: null };
  };
}

const context = () => ({ getRemainingTimeInMillis: () => 900_000 });
const serviceError = (name: string) => Object.assign(new Error(name), { name });

beforeAll(() => {
  synthesized = synthesizeExport(fixtureConfig, 'households');
  // One slice per project and execution: every slice but the last hands over.
  definition = structuredClone(synthesized.definition);
  const more = findState(definition, 'More slices?') as {
    Choices: { Variable: string; NumericGreaterThanEquals?: number }[];
  };
  const bound = more.Choices.find((c) => c.Variable === '$.iteration');
  if (bound) bound.NumericGreaterThanEquals = 1;
}, 300_000);

describe('the last states of a run', () => {
  it('retries a failed handover and a failed metric call, and names handovers from a hash of the run', async () => {
    const longName = 'x'.repeat(80);

    const run = await runLocally(
      {
        synthesized,
        definition,
        handler: countingHandler(3),
        context,
        maxExecutions: 5,
        beforeServiceCall: (task, n) => {
          if (n === 1)
            throw serviceError(
              task === 'Record run' ? 'CloudWatch.ThrottlingException' : 'StepFunctions.SfnException',
            );
        },
      },
      longName,
      synthesized.scheduleInput,
    );

    // The interpreter's own MD5 differs from the standard one, so the test checks the shape: one
    // 32-hex-digit hash of the run, then the generation.
    const hash = run.executions[1]?.slice(0, 32) ?? '';
    expect(hash).toMatch(/^[0-9a-f]{32}$/);
    expect(run.executions).toEqual([longName, `${hash}-g1`, `${hash}-g2`]);
    expect(run.executions.every((name) => name.length <= 80)).toBe(true);
    expect(run.recordedRuns).toHaveLength(1);
  });

  it('counts a handover whose execution already exists as handed over', async () => {
    const run = await runLocally(
      {
        synthesized,
        definition,
        handler: countingHandler(2),
        context,
        maxExecutions: 2,
        beforeServiceCall: (task) => {
          if (task === 'Continue in new execution')
            throw serviceError('StepFunctions.ExecutionAlreadyExistsException');
        },
      },
      'already-started',
      synthesized.scheduleInput,
    );

    expect(run.executions).toEqual(['already-started']);
    expect(run.output).toBeDefined();
    expect(run.recordedRuns).toEqual([]);
  });
});

describe('a run an older definition handed over', () => {
  it('resumes projects whose results carry no config record, and records theirs as null', async () => {
    // What an execution of the definition before config records handed over: no `hqConfig` per project.
    const [north, south] = (synthesized.scheduleInput as { slices: ExportSliceEvent[] }).slices;
    const input = {
      runId: 'older-run',
      generation: 1,
      slices: [
        { job: north!.job, continuation: { n: 1 }, done: false, rows: 7 },
        { job: south!.job, continuation: null, done: true, rows: 5 },
      ],
    };

    const run = await runLocally(
      { synthesized, handler: countingHandler(2), context, maxExecutions: 1 },
      'older-run-g1',
      input,
    );

    expect(run.slices.map((s) => s.event.job.project)).toEqual(['north']);
    expect(run.output).toMatchObject({
      pending: [],
      slices: [
        { job: { project: 'north' }, done: true, rows: 8, hqConfig: null },
        { job: { project: 'south' }, done: true, rows: 5, hqConfig: null },
      ],
    });
  });
});

import {
  DescribeExecutionCommand,
  ListExecutionsCommand,
  ListStateMachinesCommand,
  SFNClient,
  StartExecutionCommand,
} from '@aws-sdk/client-sfn';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { runRunsCommand, runTriggerCommand, StateMachineNotFoundError } from '../../functions/cli/aws';

const ARN = 'arn:aws:states:eu-west-1:123456789012:stateMachine:CommCareExports-forms-daily';
const sfnMock = mockClient(SFNClient);

function capture() {
  let out = '';
  let err = '';
  return {
    io: {
      stdout: { write: (s: string) => (out += s) },
      stderr: { write: (s: string) => (err += s) },
      cwd: '/deploy',
    },
    out: () => out,
    err: () => err,
  };
}

const now = () => new Date('2026-11-23T12:00:00Z');

beforeEach(() => {
  sfnMock.reset();
});

describe('ccexport trigger', () => {
  it('starts an execution of the state machine named in the cdk outputs file', async () => {
    sfnMock
      .on(StartExecutionCommand)
      .resolves({ executionArn: `${ARN.replace('stateMachine', 'execution')}:manual-1` });
    const { io, out } = capture();
    const files: Record<string, string> = {
      '/deploy/cdk-outputs.json': JSON.stringify({ CommCareExports: { StateMachineFormsDaily: ARN } }),
    };

    const code = await runTriggerCommand(['forms-daily'], io, {
      sfn: new SFNClient({}),
      readFile: (p) => files[p],
      now,
    });

    expect(code).toBe(0);
    const call = sfnMock.commandCalls(StartExecutionCommand)[0]?.args[0].input;
    expect(call).toEqual({ stateMachineArn: ARN, name: 'manual-2026-11-23T12-00-00-000Z', input: '{}' });
    expect(out()).toContain('Started forms-daily: arn:aws:states:eu-west-1:123456789012:execution:');
    expect(sfnMock.commandCalls(ListStateMachinesCommand)).toHaveLength(0);
  });

  it('finds the state machine by its fixed name when there is no outputs file', async () => {
    sfnMock
      .on(ListStateMachinesCommand, { nextToken: undefined, maxResults: 1000 })
      .resolves({ stateMachines: [], nextToken: 'page2' })
      .on(ListStateMachinesCommand, { nextToken: 'page2', maxResults: 1000 })
      .resolves({
        stateMachines: [
          { name: 'Prod-forms-daily', stateMachineArn: ARN, type: 'STANDARD', creationDate: now() },
        ],
      });
    sfnMock.on(StartExecutionCommand).resolves({ executionArn: 'arn:exec' });
    const { io } = capture();

    await runTriggerCommand(['forms-daily', '--stack', 'Prod', '--name', 'backfill-1'], io, {
      sfn: new SFNClient({}),
      readFile: () => undefined,
    });

    expect(sfnMock.commandCalls(StartExecutionCommand)[0]?.args[0].input).toMatchObject({
      stateMachineArn: ARN,
      name: 'backfill-1',
    });
  });

  it('uses --state-machine-arn without any lookup', async () => {
    sfnMock.on(StartExecutionCommand).resolves({ executionArn: 'arn:exec' });
    const { io } = capture();

    await runTriggerCommand(['forms-daily', '--state-machine-arn', ARN], io, { sfn: new SFNClient({}) });

    expect(sfnMock.commandCalls(StartExecutionCommand)[0]?.args[0].input.stateMachineArn).toBe(ARN);
    expect(sfnMock.commandCalls(ListStateMachinesCommand)).toHaveLength(0);
  });

  it('fails naming the state machine it looked for when the export is not deployed', async () => {
    sfnMock.on(ListStateMachinesCommand).resolves({ stateMachines: [] });
    const { io } = capture();

    const run = runTriggerCommand(['forms-dialy'], io, { sfn: new SFNClient({}), readFile: () => undefined });

    await expect(run).rejects.toThrow(StateMachineNotFoundError);
    await expect(run).rejects.toThrow('No state machine named CommCareExports-forms-dialy');
  });

  it('fails with a usage error when no export is named', async () => {
    const { io } = capture();

    await expect(runTriggerCommand([], io, { sfn: new SFNClient({}) })).rejects.toThrow(
      'expected an export name',
    );
  });
});

describe('ccexport runs', () => {
  it('lists recent executions with status, duration and rows', async () => {
    sfnMock.on(ListExecutionsCommand).resolves({
      executions: [
        { executionArn: 'arn:e2', stateMachineArn: ARN, name: 'run-2', status: 'RUNNING', startDate: now() },
        {
          executionArn: 'arn:e1',
          stateMachineArn: ARN,
          name: 'run-1',
          status: 'SUCCEEDED',
          startDate: now(),
        },
        { executionArn: 'arn:e0', stateMachineArn: ARN, name: 'run-0', status: 'FAILED', startDate: now() },
      ],
    });
    sfnMock
      .on(DescribeExecutionCommand, { executionArn: 'arn:e2' })
      .resolves({ name: 'run-2', status: 'RUNNING', startDate: new Date('2026-11-23T11:59:00Z') } as never)
      .on(DescribeExecutionCommand, { executionArn: 'arn:e1' })
      .resolves({
        name: 'run-1',
        status: 'SUCCEEDED',
        startDate: new Date('2026-11-22T02:00:00Z'),
        stopDate: new Date('2026-11-22T02:41:05Z'),
        output: JSON.stringify({
          slices: [
            { rows: 1200, done: true },
            { rows: 34, done: true },
          ],
          pending: [],
        }),
      } as never)
      .on(DescribeExecutionCommand, { executionArn: 'arn:e0' })
      .resolves({
        name: 'run-0',
        status: 'FAILED',
        startDate: new Date('2026-11-21T02:00:00Z'),
        stopDate: new Date('2026-11-21T02:00:30Z'),
        error: 'CommCareAuthError',
        cause: 'CommCare HQ answered 401 for user "exporter@example.org"',
      } as never);
    const { io, out } = capture();

    const code = await runRunsCommand(['forms-daily', '--state-machine-arn', ARN, '--limit', '3'], io, {
      sfn: new SFNClient({}),
      now,
    });

    expect(code).toBe(0);
    expect(sfnMock.commandCalls(ListExecutionsCommand)[0]?.args[0].input).toEqual({
      stateMachineArn: ARN,
      maxResults: 3,
    });
    const lines = out().split('\n');
    expect(lines[0]).toMatch(/^STARTED \(UTC\)\s+STATUS\s+DURATION\s+ROWS\s+CONFIG\s+NAME$/);
    expect(lines[1]).toMatch(/^2026-11-23 11:59:00\s+RUNNING\s+1m00s\s+-\s+-\s+run-2$/);
    expect(lines[2]).toMatch(/^2026-11-22 02:00:00\s+SUCCEEDED\s+41m05s\s+1234\s+-\s+run-1$/);
    expect(lines[3]).toMatch(/^2026-11-21 02:00:00\s+FAILED\s+30s\s+-\s+-\s+run-0$/);
    expect(out()).toContain('run-0: CommCareAuthError: CommCare HQ answered 401');
  });

  it('marks an execution that handed over to a new one as continued', async () => {
    sfnMock.on(ListExecutionsCommand).resolves({
      executions: [
        { executionArn: 'arn:e1', stateMachineArn: ARN, name: 'big', status: 'SUCCEEDED', startDate: now() },
      ],
    });
    sfnMock.on(DescribeExecutionCommand).resolves({
      name: 'big',
      status: 'SUCCEEDED',
      startDate: new Date('2026-11-22T00:00:00Z'),
      stopDate: new Date('2026-11-22T05:00:00Z'),
      output: JSON.stringify({ slices: [{ rows: 5, done: false }], pending: [{ rows: 5, done: false }] }),
    } as never);
    const { io, out } = capture();

    await runRunsCommand(['forms-daily', '--state-machine-arn', ARN, '--json'], io, {
      sfn: new SFNClient({}),
      now,
    });

    expect(JSON.parse(out().trim())).toEqual({
      name: 'big',
      status: 'CONTINUED',
      startedAt: '2026-11-22T00:00:00.000Z',
      durationSeconds: 18_000,
      rows: 5,
      hqConfigs: [],
    });
  });

  it('fails with a usage error on a limit outside 1-100', async () => {
    const { io } = capture();

    await expect(
      runRunsCommand(['forms-daily', '--limit', '500'], io, { sfn: new SFNClient({}) }),
    ).rejects.toThrow('--limit 500: expected a whole number from 1 to 100');
  });
});

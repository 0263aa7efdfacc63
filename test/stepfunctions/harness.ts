/**
 * Runs the synthesized export state machine locally with aws-local-stepfunctions: the Lambda task is
 * bound to the real export handler, the metric task to a recorder, and the continue-as-new task to a
 * fresh local execution of the same definition (bounded in depth).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Metrics } from '@aws-lambda-powertools/metrics';
import type { S3Client } from '@aws-sdk/client-s3';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import { StateMachine } from 'aws-local-stepfunctions';
// The interpreter's own JSONPath engine (its dependency), used here with Step Functions' result shape.
import { JSONPath } from 'jsonpath-plus';
import type { ExportSliceEvent, ExportSliceResult } from '../../functions/config/job';
import { parseExportsConfig } from '../../functions/config/parse';
import type { SliceContext } from '../../functions/export/handler';
import { readManifests } from '../../functions/sinks';
import { S3ObjectStore } from '../../functions/sinks/store/s3';
import { CommCareExportStack } from '../../lib/stack';
import { parseCsv } from '../sinks/helpers';

// aws-local-stepfunctions 3 requires Node 22 (it calls Promise.withResolvers); the project supports
// Node 20, where the interpreter needs this one ES2024 function.
if (typeof (Promise as { withResolvers?: unknown }).withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: <T>() => {
      let resolve!: (value: T | PromiseLike<T>) => void;
      let reject!: (reason?: unknown) => void;
      const promise = new Promise<T>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}

const ACCOUNT = '123456789012';
const REGION = 'us-east-1';

/** The state machine of one export as deployed: its definition with fake ARNs, and where its code is. */
export interface SynthesizedExport {
  /** Amazon States Language, every CloudFormation token replaced by a fake value. */
  readonly definition: Record<string, unknown>;
  readonly machineName: string;
  /** The ARN the Lambda task invokes (the export function's fake ARN). */
  readonly functionArn: string;
  /** The function's bundled code asset (the handler's code root: it holds `query/<file>`). */
  readonly codeRoot: string;
  readonly iterationsPerExecution: number;
  /** The input the export's EventBridge schedule starts the state machine with. */
  readonly scheduleInput: unknown;
  /** The input its reconcile schedule starts the state machine with; null: the export has none. */
  readonly reconcileScheduleInput: unknown | null;
}

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const fixtureConfig = join(repoRoot, 'test/fixtures/stepfunctions/exports.config.yaml');
const fixtureHandler = join(repoRoot, 'test/fixtures/stepfunctions/handler.ts');
/** The export function's real entry, as the stack deploys it. */
export const exportHandlerEntry = join(repoRoot, 'functions/export/handler.ts');

/**
 * Builds the stack from a config file as `cdk synth` does (cdk.json's feature flags, functions bundled
 * by esbuild, query files copied into their code) and extracts one export. cdk-nag is left to the
 * stack tests. `handlerEntry` defaults to a stand-in (bundled in a blink); pass `exportHandlerEntry`
 * to bundle the real export function.
 */
export function synthesizeExport(
  configPath: string,
  exportName: string,
  handlerEntry: string = fixtureHandler,
): SynthesizedExport {
  // The config file's folder places query files: the repository root, like the example config.
  const config = parseExportsConfig(readFileSync(configPath, 'utf8'), join(repoRoot, 'exports.config.yaml'));
  const { context } = JSON.parse(readFileSync(join(repoRoot, 'cdk.json'), 'utf8')) as {
    context: Record<string, unknown>;
  };
  const app = new App({ context });
  const stack = new CommCareExportStack(app, config.stackName, { config, handlerEntry });
  const template = Template.fromStack(stack);
  const pipeline = stack.pipelines.get(exportName);
  if (!pipeline) throw new Error(`the stack has no export ${exportName}`);
  const fnId = Stack.of(pipeline).getLogicalId(pipeline.function.node.defaultChild as lambda.CfnFunction);
  const machineId = Stack.of(pipeline).getLogicalId(pipeline.stateMachine.node.defaultChild as never);
  const functionArn = `arn:aws:lambda:${REGION}:${ACCOUNT}:function:${fnId}`;

  const resolveToken = (token: unknown): string => {
    const t = token as { Ref?: string; 'Fn::GetAtt'?: [string, string] };
    if (t.Ref === 'AWS::Partition') return 'aws';
    if (t.Ref === 'AWS::Region') return REGION;
    if (t.Ref === 'AWS::AccountId') return ACCOUNT;
    if (t.Ref === 'AWS::URLSuffix') return 'amazonaws.com';
    if (t['Fn::GetAtt']?.[0] === fnId && t['Fn::GetAtt'][1] === 'Arn') return functionArn;
    throw new Error(`unexpected token in the state machine definition: ${JSON.stringify(token)}`);
  };
  const machine = template.toJSON().Resources[machineId] as {
    Properties: { DefinitionString: string | { 'Fn::Join': [string, unknown[]] } };
  };
  const body = machine.Properties.DefinitionString;
  const text =
    typeof body === 'string'
      ? body
      : body['Fn::Join'][1].map((p) => (typeof p === 'string' ? p : resolveToken(p))).join('');

  const schedules = Object.values(template.findResources('AWS::Scheduler::Schedule')) as {
    Properties: { Target: { Arn: unknown; Input: string } };
  }[];
  // The export's schedule and its reconcile schedule both start the machine; reconcile jobs say so.
  const starting = schedules
    .filter((s) => JSON.stringify(s.Properties.Target.Arn) === JSON.stringify({ Ref: machineId }))
    .map((s) => JSON.parse(s.Properties.Target.Input) as { slices: ExportSliceEvent[] });
  const isReconcile = (input: { slices: ExportSliceEvent[] }) =>
    input.slices.some((slice) => slice.job.task === 'reconcile');
  const scheduleInput = starting.find((input) => !isReconcile(input));
  if (!scheduleInput) throw new Error(`no schedule starts ${machineId}`);

  const code = template.toJSON().Resources[fnId] as { Properties: { Code: { S3Key: string } } };
  // The asset manifest says which staged folder becomes the object the function's code points to.
  const manifest = JSON.parse(readFileSync(join(app.outdir, `${stack.artifactId}.assets.json`), 'utf8')) as {
    files: Record<string, { source: { path: string }; destinations: Record<string, { objectKey: string }> }>;
  };
  const asset = Object.values(manifest.files).find((f) =>
    Object.values(f.destinations).some((d) => d.objectKey === code.Properties.Code.S3Key),
  );
  const codeRoot = join(app.outdir, asset?.source.path ?? 'missing');
  if (!asset || !existsSync(codeRoot)) throw new Error(`the function's code asset is not at ${codeRoot}`);
  // No node_modules beside the bundle: it carries the AWS SDK and every other package it loads, as it
  // must on Lambda.
  return {
    definition: JSON.parse(text) as Record<string, unknown>,
    machineName: machineNameOf(text),
    functionArn,
    codeRoot,
    iterationsPerExecution: pipeline.iterationsPerExecution,
    scheduleInput,
    reconcileScheduleInput: starting.find(isReconcile) ?? null,
  };
}

/**
 * Loads the bundled export function (`index.js` of its code asset) the way Lambda does: a fresh module
 * (empty caches, new clients) whose module scope reads `env`, which is merged into process.env and left
 * there for the rest of the test file (each test file runs in its own process).
 */
export function loadBundledHandler(codeRoot: string, env: Record<string, string>): SliceHandler {
  const require = createRequire(import.meta.url);
  for (const key of Object.keys(require.cache)) if (key.startsWith(codeRoot)) delete require.cache[key];
  Object.assign(process.env, env);
  return (require(join(codeRoot, 'index.js')) as { handler: SliceHandler }).handler;
}

/** The name in the continue-as-new task's state machine ARN (the machine's own name). */
function machineNameOf(definitionText: string): string {
  const match = /arn:aws:states:[^:]*:\d+:stateMachine:([^"]+)"/.exec(definitionText);
  if (!match?.[1]) throw new Error('the definition has no state machine ARN (continue-as-new task)');
  return match[1];
}

/** Finds a state by name anywhere in the definition (Map item processors included). */
export function findState(definition: Record<string, unknown>, name: string): Record<string, unknown> {
  const states = definition.States as Record<string, Record<string, unknown>>;
  if (states[name]) return states[name];
  for (const state of Object.values(states)) {
    const inner = (state.ItemProcessor ?? state.Iterator) as Record<string, unknown> | undefined;
    if (inner) {
      try {
        return findState(inner, name);
      } catch {
        // not in this Map
      }
    }
  }
  throw new Error(`no state named ${JSON.stringify(name)}`);
}

/** A path that can match any number of nodes (Jayway's "indefinite" path). */
function isIndefinite(path: string): boolean {
  return /\[\?|\[\*\]|\.\*|\.\.|\[[^\]]*[,:][^\]]*\]/.test(path);
}

/**
 * Step Functions evaluates paths with Jayway JsonPath: an indefinite path (filter, wildcard) yields a
 * list of every match, possibly empty. aws-local-stepfunctions asks its engine for an unwrapped
 * result instead, so such a path fails on zero matches and yields a bare value on one. Each Pass state
 * with such a field becomes a Task here whose local handler fills the field with the list, as AWS
 * does; its other fields are still evaluated by the interpreter.
 */
function shimIndefinitePaths(
  definition: Record<string, unknown>,
  handlers: Record<string, (input: unknown) => Promise<never>>,
): Record<string, unknown> {
  const copy = structuredClone(definition);
  const visit = (machine: Record<string, unknown>) => {
    const states = machine.States as Record<string, Record<string, unknown>>;
    for (const [name, state] of Object.entries(states)) {
      const inner = (state.ItemProcessor ?? state.Iterator) as Record<string, unknown> | undefined;
      if (inner) visit(inner);
      const parameters = state.Parameters as Record<string, unknown> | undefined;
      if (state.Type !== 'Pass' || !parameters) continue;
      const indefinite = Object.entries(parameters).filter(
        ([key, value]) => key.endsWith('.$') && typeof value === 'string' && isIndefinite(value),
      ) as [string, string][];
      if (indefinite.length === 0) continue;
      const definite = Object.fromEntries(
        Object.entries(parameters).filter(([key]) => !indefinite.some(([k]) => k === key)),
      );
      state.Type = 'Task';
      state.Resource = `arn:aws:lambda:${REGION}:${ACCOUNT}:function:jsonpath-shim`;
      state.Parameters = { ...definite, '__stateInput.$': '$' };
      handlers[name] = async (input) => {
        const { __stateInput, ...rest } = input as Record<string, unknown>;
        const result: Record<string, unknown> = { ...rest };
        for (const [key, path] of indefinite) {
          result[key.slice(0, -2)] = JSONPath({ path, json: __stateInput as object, wrap: true });
        }
        return result as never;
      };
    }
  };
  visit(copy);
  return copy;
}

export type SliceHandler = (event: unknown, context: SliceContext) => Promise<ExportSliceResult>;

export interface LocalRunOptions {
  readonly synthesized: SynthesizedExport;
  /** Replaces the definition (e.g. with a smaller iteration bound); defaults to the synthesized one. */
  readonly definition?: Record<string, unknown>;
  readonly handler: SliceHandler;
  /** A fresh Lambda context for each invocation (decides when the slice must yield). */
  readonly context: () => SliceContext;
  /** Called before each invocation with its number (1-based) and event; may change the world. */
  readonly beforeSlice?: (n: number, event: ExportSliceEvent) => Promise<void> | void;
  /** Upper bound on executions (the first included); more fails the run. */
  readonly maxExecutions: number;
  /**
   * Called before each call of a service task ('Continue in new execution', 'Record run') with its
   * call number for that task (1-based); throwing fails that call as the service would.
   */
  readonly beforeServiceCall?: (task: string, n: number) => void;
}

export interface LocalRun {
  /** Every Lambda invocation's event, result or error, in order of start. */
  readonly slices: { event: ExportSliceEvent; result?: ExportSliceResult; error?: Error }[];
  /** Names of the executions, the first one's included, in order of start. */
  readonly executions: string[];
  /** The continue-as-new task's inputs. */
  readonly handovers: { name: string; input: Record<string, unknown> }[];
  /** The `Record run` task's inputs (CloudWatch PutMetricData parameters). */
  readonly recordedRuns: Record<string, unknown>[];
  /** The last execution's output. */
  readonly output: unknown;
}

/** Runs the machine from `input` as execution `name`, then every execution it hands over to. */
export async function runLocally(options: LocalRunOptions, name: string, input: unknown): Promise<LocalRun> {
  const shims: Record<string, (input: unknown) => Promise<never>> = {};
  const definition = shimIndefinitePaths(options.definition ?? options.synthesized.definition, shims);
  const machine = new StateMachine(definition as never, {
    validationOptions: { checkPaths: true, checkArn: true },
  });
  const run: {
    slices: LocalRun['slices'];
    executions: string[];
    handovers: LocalRun['handovers'];
    recordedRuns: Record<string, unknown>[];
  } = { slices: [], executions: [], handovers: [], recordedRuns: [] };
  const pending: { name: string; input: unknown }[] = [{ name, input }];
  let output: unknown;

  const calls = new Map<string, number>();
  const serviceCall = (task: string) => {
    const n = (calls.get(task) ?? 0) + 1;
    calls.set(task, n);
    options.beforeServiceCall?.(task, n);
  };
  const overrides = {
    taskResourceLocalHandlers: {
      ...shims,
      'Export slice': async (taskInput: unknown) => {
        const { FunctionName, Payload } = taskInput as { FunctionName: string; Payload: ExportSliceEvent };
        if (FunctionName !== options.synthesized.functionArn) {
          throw new Error(`the task invokes ${FunctionName}; expected ${options.synthesized.functionArn}`);
        }
        // Lambda serializes the event and the result; so does this binding.
        const event = JSON.parse(JSON.stringify(Payload)) as ExportSliceEvent;
        const record: LocalRun['slices'][number] = { event };
        run.slices.push(record);
        await options.beforeSlice?.(run.slices.length, event);
        try {
          record.result = JSON.parse(
            JSON.stringify(await options.handler(event, options.context())),
          ) as ExportSliceResult;
        } catch (error) {
          record.error = error as Error;
          if (process.env.SFN_TEST_DEBUG) console.info('slice failed', run.slices.length, error);
          throw error;
        }
        if (process.env.SFN_TEST_DEBUG)
          console.info(
            'slice',
            run.slices.length,
            event.job.project,
            JSON.stringify(event.continuation),
            JSON.stringify(record.result),
            new Date().toISOString(),
          );
        return serialized({ StatusCode: 200, ExecutedVersion: '$LATEST', Payload: record.result });
      },
      'Record run': async (taskInput: unknown) => {
        serviceCall('Record run');
        run.recordedRuns.push(taskInput as Record<string, unknown>);
        return {};
      },
      // StartExecution without .sync returns at once; the new execution runs after this one ends.
      'Continue in new execution': async (taskInput: unknown) => {
        const { Name, Input, StateMachineArn } = taskInput as {
          Name: string;
          Input: Record<string, unknown>;
          StateMachineArn: string;
        };
        serviceCall('Continue in new execution');
        if (!StateMachineArn.endsWith(`:stateMachine:${options.synthesized.machineName}`)) {
          throw new Error(`continue-as-new starts ${StateMachineArn}; expected this state machine`);
        }
        run.handovers.push({ name: Name, input: Input });
        pending.push({ name: Name, input: Input });
        return serialized({
          ExecutionArn: executionArn(options.synthesized.machineName, Name),
          StartDate: new Date(),
        });
      },
    },
    // Retries run at once: the test bounds time, not the backoff.
    retryIntervalOverrides: { 'Export slice': 0, 'Continue in new execution': 0, 'Record run': 0 },
  };

  for (let next = pending.shift(); next; next = pending.shift()) {
    if (run.executions.length >= options.maxExecutions) {
      throw new Error(`more than ${options.maxExecutions} executions; the run does not converge`);
    }
    if (run.executions.includes(next.name)) throw new Error(`execution name ${next.name} used twice`);
    run.executions.push(next.name);
    const execution = machine.run(next.input as never, {
      overrides,
      context: {
        Execution: {
          Name: next.name,
          Id: executionArn(options.synthesized.machineName, next.name),
        },
      } as never,
    });
    output = await execution.result;
  }
  return { ...run, output };
}

/** A task result as the service returns it: JSON (the interpreter's JSONValue). */
function serialized(value: unknown): never {
  return JSON.parse(JSON.stringify(value)) as never;
}

function executionArn(machineName: string, name: string): string {
  return `arn:aws:states:${REGION}:${ACCOUNT}:execution:${machineName}:${name}`;
}

/** A Metrics stand-in that records what the handler emits and prints nothing. */
export function recordingMetrics(): { metrics: Metrics; values: Map<string, number[]> } {
  const values = new Map<string, number[]>();
  const fake = {
    addMetric: (name: string, _unit: string, value: number) => {
      values.set(name, [...(values.get(name) ?? []), value]);
    },
    setDefaultDimensions: () => {},
    publishStoredMetrics: () => {},
  };
  // Only the three methods the handler and the slice core call; a cast keeps the test free of EMF output.
  return { metrics: fake as unknown as Metrics, values };
}

/** A file output read back: rows per project and table in manifest order, and the latest row per id. */
export interface Reassembled {
  readonly headings: Record<string, string[]>;
  /** project -> table -> every data row, in the order the runs (slices) and parts wrote them. */
  readonly sequence: Record<string, Record<string, string[][]>>;
  /** project -> table -> id -> the last row written for it (the README's reassembly rule). */
  readonly latest: Record<string, Record<string, Map<string, string[]>>>;
  readonly manifests: number;
  readonly incomplete: number;
}

export async function reassemble(s3: S3Client, url: string): Promise<Reassembled> {
  const store = new S3ObjectStore(s3, url);
  const manifests = await readManifests(store);
  const headings: Record<string, string[]> = {};
  const sequence: Record<string, Record<string, string[][]>> = {};
  const latest: Record<string, Record<string, Map<string, string[]>>> = {};
  for (const manifest of manifests) {
    const objects = [...manifest.objects].sort((a, b) => a.table.localeCompare(b.table) || a.part - b.part);
    for (const object of objects) {
      const found = await store.get(object.key);
      if (!found) throw new Error(`manifest ${manifest.runId} lists ${object.key}, which is missing`);
      const [header = [], ...rows] = parseCsv(found.body);
      const known = headings[object.table];
      if (known && known.join(',') !== header.join(',')) {
        throw new Error(`${object.key}: heading ${header.join(',')} differs from ${known.join(',')}`);
      }
      headings[object.table] = header;
      const idColumn = header.indexOf('id');
      sequence[manifest.project] ??= {};
      const byProject = sequence[manifest.project] as Record<string, string[][]>;
      byProject[object.table] ??= [];
      const tableRows = byProject[object.table] as string[][];
      latest[manifest.project] ??= {};
      const latestOfProject = latest[manifest.project] as Record<string, Map<string, string[]>>;
      latestOfProject[object.table] ??= new Map();
      const byId = latestOfProject[object.table] as Map<string, string[]>;
      for (const row of rows) {
        tableRows.push(row);
        byId.set(row[idColumn] ?? '', row);
      }
    }
  }
  return {
    headings,
    sequence,
    latest,
    manifests: manifests.length,
    incomplete: manifests.filter((m) => !m.complete).length,
  };
}

/** Rows of a table's latest state, sorted by id, for a readable diff. */
export function sortedLatest(r: Reassembled, project: string, table: string): string[][] {
  return [...(r.latest[project]?.[table] ?? new Map<string, string[]>()).entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, row]) => row);
}

/**
 * Points every deployed job at `baseUrl` (the sandbox). The deployment's base URL wins over the copy in
 * the key's secret, and the fixture config can only name a placeholder host (the sandbox's port is
 * chosen when it starts), so the synthesized jobs and schedule input are rewritten as if it had.
 */
export function pointJobsAt(synthesized: SynthesizedExport, baseUrl: string): void {
  const visit = (value: unknown): void => {
    if (Array.isArray(value)) {
      for (const item of value) visit(item);
      return;
    }
    if (value === null || typeof value !== 'object') return;
    const object = value as Record<string, unknown>;
    const credential = object.credential as Record<string, unknown> | undefined;
    if (credential && typeof credential === 'object' && typeof credential.baseUrl === 'string')
      credential.baseUrl = baseUrl;
    for (const item of Object.values(object)) visit(item);
  };
  visit(synthesized.definition);
  visit(synthesized.scheduleInput);
  visit(synthesized.reconcileScheduleInput);
}

/**
 * A local CommCare-HQ-compatible server with synthetic, deterministic data and injectable faults.
 * See README.md in this folder.
 */

export type { SandboxCommandIo } from './cli';
export { parseSandboxArgs, runSandboxCommand, SANDBOX_USAGE, SandboxUsageError } from './cli';
export type { DatasetOptions, SandboxDataset, SandboxResource } from './dataset';
export { createDataset, SANDBOX_RESOURCES, UnknownProjectError } from './dataset';
export type { SandboxDetColumn, SandboxDetExport } from './det-exports';
export type { SandboxChange, SandboxProject } from './records';
export { SandboxChangeError } from './records';
export type { SandboxParams, ServeRequest } from './serve';
export { formatMicros, naive, parseFilterDate, SandboxBadRequest, serveList, servePageDirect } from './serve';
export type {
  RequestLogEntry,
  RunningSandbox,
  SandboxCredential,
  SandboxFaults,
  SandboxOptions,
} from './server';
export { DEFAULT_API_KEY, DEFAULT_PROJECT, DEFAULT_USERNAME, route, startSandbox } from './server';

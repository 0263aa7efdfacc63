/** The CommCare HQ client's public API. */

export {
  DEFAULT_MAX_BYTES,
  DEFAULT_MAX_RECORDS,
  formatByteSize,
  parseByteSize,
  type RunBudgetUsed,
} from './budget';
export {
  CommCareClient,
  type CommCareClientOptions,
  createCommCareClient,
  type UserDomain,
} from './client';
export { formatNaiveUtc, parseTimestamp, toNaiveUtc } from './dates';
export { findHqExport, type HqExport } from './det-exports';
export {
  CommCareAuthError,
  CommCareBudgetError,
  CommCareCancelledError,
  CommCareConfigError,
  CommCareDetConfigError,
  CommCareError,
  CommCareRequestError,
  CommCareResponseError,
  CommCareStuckError,
  CommCareThrottledError,
  CommCareUnavailableError,
} from './errors';
export type { CommCareLogEvent, CommCareLogger, CommCareLogLevel, CommCareStats } from './http';
export { rawJsonOf } from './page-body';
export {
  LARGEST_PAGE,
  RESOURCE_NAMES,
  type ResourceSpec,
  resolveBaseUrl,
  resourceSpec,
  type UrlStyle,
} from './resources';
export type { Page, PullPosition, PullRequest, QueryParams, ResourceName } from './types';

import type { JsonObject } from '../common/json';

/**
 * HQ list resources the client knows. The names are DET's `Data Source` names where DET has one
 * (`form`, `case`, `user`, `web-user`, `location`, `application`, `messaging-event`, `ucr`), plus
 * `case-v2`, `group`, `location-v2` and `location_type`.
 */
export type ResourceName =
  | 'form'
  | 'case'
  | 'case-v2'
  | 'user'
  | 'web-user'
  | 'group'
  | 'location'
  | 'location-v2'
  | 'location_type'
  | 'application'
  | 'messaging-event'
  | 'ucr';

/** Query parameters as DET passes them: every name may repeat (repeated values are OR in HQ). */
export type QueryParams = Readonly<Record<string, readonly string[]>>;

/**
 * Where an incremental pull stands after a page: the last `indexed_on` written (naive UTC ISO, as HQ
 * accepts it back in `indexed_on_start`) and the ids of the records carrying exactly that value, which
 * the next request (inclusive boundary) must drop. `cursor` is set for cursor-paged resources.
 */
export interface PullPosition {
  readonly indexedOn: string | null;
  readonly boundaryIds: readonly string[];
  readonly cursor?: string | null;
}

/**
 * A part of a record a caller reads, as the keys that lead to it from the record's top level:
 * `["form", "meta", "username"]`. The value at its end is read whole; each object on the way only for
 * the keys that paths name inside it.
 */
export type RecordKeyPath = readonly string[];

/** What to pull. */
export interface PullRequest {
  readonly project: string;
  readonly resource: ResourceName;
  /** Filters sent on every request (`xmlns.exact`, `type`, `app_id`, `cases__full`, ...). */
  readonly params?: QueryParams;
  /** Resume point: send `indexed_on_start=position.indexedOn` and drop `boundaryIds`. */
  readonly from?: PullPosition;
  /** Explicit lower bound (DET `--since`), used when `from` is absent. */
  readonly since?: string;
  /** Explicit upper bound (DET `--until`), sent as `indexed_on_end`. */
  readonly until?: string;
  /** Page size; capped at the resource's maximum `limit`. */
  readonly pageSize?: number;
  /**
   * The only parts of a record the caller reads, as key paths from its top level (`RecordKeyPath`).
   * Records of forms and cases may then lack everything else (it is never decoded or parsed); every
   * key is kept when the client keeps raw records. Absent: whole records.
   */
  readonly recordKeys?: readonly RecordKeyPath[];
  /**
   * Aborting it stops the pull: requests in flight and waits before retries end at once. The pull also
   * stops all of its own work when it fails or the caller stops reading.
   */
  readonly signal?: AbortSignal;
}

/**
 * A page's records, in order. A keyset page (forms, cases) holds them as HQ's bytes and parses each one
 * as the iteration reaches it, a new object at each pass: read them once, and keep what you need from a
 * record rather than the page.
 */
export type PageRecords = Iterable<JsonObject> & {
  readonly length: number;
  /**
   * Lets go of the bytes the records are read from, for a caller done with the page: without it a
   * page's 2–5 MB body lives until the garbage collector finds it, which for a body that outlived a few
   * young-generation collections (any page being written) is the next full collection, and tens of MB
   * of done pages piled up before one. Reading a record afterwards throws. Absent on pages whose
   * records are plain objects.
   */
  release?(): void;
};

/** One page of records, in order, with the position to resume from after it. */
export interface Page {
  readonly records: PageRecords;
  /** Position after the last record of this page (null for resources without incremental paging). */
  readonly position: PullPosition | null;
  /** HQ's `total_count` / `matching_records` where it gives one. */
  readonly totalCount: number | null;
  /** 0-based page number within this pull. */
  readonly pageNumber: number;
}

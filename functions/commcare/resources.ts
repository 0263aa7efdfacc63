/**
 * What the client knows about each HQ list resource: its URL, its largest page, how it pages and what its
 * response envelope looks like. Facts come from commcare-hq (`corehq/apps/api/urls.py`, the resources'
 * `Meta.max_limit`) and commcare-export (`commcare_minilinq.py`), see the shared reference commcare-hq-api.md.
 */
import type { JsonObject, JsonValue } from '../common/json';
import { CommCareConfigError, CommCareResponseError } from './errors';
import type { QueryParams, ResourceName } from './types';

/**
 * `keyset`: DET's DatePaginator on `indexed_on` (`order_by=indexed_on&indexed_on_start=<last>`), `meta.next`
 * only says whether more exist. `offset`: follow tastypie's relative `meta.next`. `cursor`: follow an
 * opaque `next` link (absolute for case v2) that encodes the whole query.
 */
export type PagingMode = 'keyset' | 'offset' | 'cursor';

export interface ResourceSpec {
  readonly name: ResourceName;
  /** Resource-first spelling, `/a/<d>/api/<path>/`. */
  readonly path: string;
  /** The v0.5/v0.6 spelling HQ keeps "to manage the transition". */
  readonly legacyPath: string;
  /** Largest `limit` HQ accepts (tastypie clamps above it; case v2 answers 400). */
  readonly maxLimit: number;
  readonly paging: PagingMode;
  /** `tastypie`: `{meta: {next, total_count, limit}, objects}`; `case-v2`: `{matching_records, cases, next}`. */
  readonly envelope: 'tastypie' | 'case-v2';
  /** Field that identifies a record, for dropping boundary duplicates. */
  readonly idField: string;
  /** Incremental window for cursor resources: the date field and the parameters for since/until. */
  readonly dateWindow?: {
    readonly field: string;
    readonly sinceParam: string;
    readonly untilParam: string;
    readonly orderBy?: string;
  };
}

const RESOURCES: Readonly<Record<ResourceName, ResourceSpec>> = {
  form: {
    name: 'form',
    path: 'form/v1',
    legacyPath: 'v0.5/form',
    maxLimit: 1000,
    paging: 'keyset',
    envelope: 'tastypie',
    idField: 'id',
  },
  case: {
    name: 'case',
    path: 'case/v1',
    legacyPath: 'v0.5/case',
    maxLimit: 5000,
    paging: 'keyset',
    envelope: 'tastypie',
    idField: 'id',
  },
  'case-v2': {
    name: 'case-v2',
    path: 'case/v2',
    legacyPath: 'v0.6/case',
    maxLimit: 5000,
    paging: 'cursor',
    envelope: 'case-v2',
    idField: 'case_id',
    // case v2 date filters accept `Z`; results come oldest first by indexed_on.
    dateWindow: { field: 'indexed_on', sinceParam: 'indexed_on.gte', untilParam: 'indexed_on.lte' },
  },
  user: {
    name: 'user',
    path: 'user/v1',
    legacyPath: 'v0.5/user',
    maxLimit: 1000,
    paging: 'offset',
    envelope: 'tastypie',
    idField: 'id',
  },
  'web-user': {
    name: 'web-user',
    path: 'web-user/v1',
    legacyPath: 'v0.5/web-user',
    maxLimit: 1000,
    paging: 'offset',
    envelope: 'tastypie',
    idField: 'id',
  },
  group: {
    name: 'group',
    path: 'group/v1',
    legacyPath: 'v0.5/group',
    maxLimit: 1000,
    paging: 'offset',
    envelope: 'tastypie',
    idField: 'id',
  },
  location: {
    name: 'location',
    path: 'location/v1',
    legacyPath: 'v0.5/location',
    maxLimit: 1000,
    paging: 'offset',
    envelope: 'tastypie',
    idField: 'id',
  },
  'location-v2': {
    name: 'location-v2',
    path: 'location/v2',
    legacyPath: 'v0.6/location',
    maxLimit: 5000,
    paging: 'offset',
    envelope: 'tastypie',
    idField: 'location_id',
  },
  location_type: {
    name: 'location_type',
    path: 'location_type/v1',
    legacyPath: 'v0.5/location_type',
    maxLimit: 1000,
    paging: 'offset',
    envelope: 'tastypie',
    idField: 'id',
  },
  application: {
    // DoesNothingPaginator: every app in one response, `meta.limit` null, `next` null.
    name: 'application',
    path: 'application/v1',
    legacyPath: 'v0.5/application',
    maxLimit: 1000,
    paging: 'offset',
    envelope: 'tastypie',
    idField: 'id',
  },
  'messaging-event': {
    name: 'messaging-event',
    path: 'messaging-event/v1',
    legacyPath: 'v0.5/messaging-event',
    maxLimit: 1000,
    paging: 'cursor',
    envelope: 'tastypie',
    idField: 'id',
    // DET's DatePaginator('date_last_activity'): gte for since, lt for until.
    dateWindow: {
      field: 'date_last_activity',
      sinceParam: 'date_last_activity.gte',
      untilParam: 'date_last_activity.lt',
      orderBy: 'date_last_activity',
    },
  },
  ucr: {
    // Data-source rows; needs `data_source_id`. Cursor in `meta.next`; HQ allows up to 10000 a page.
    name: 'ucr',
    path: 'ucr/v1',
    legacyPath: 'v0.5/ucr',
    maxLimit: 10000,
    paging: 'cursor',
    envelope: 'tastypie',
    idField: 'id',
  },
};

export function resourceSpec(name: string): ResourceSpec {
  const spec = (RESOURCES as Record<string, ResourceSpec | undefined>)[name];
  if (!spec) {
    throw new CommCareConfigError(
      `unknown CommCare resource "${name}"; expected one of ${Object.keys(RESOURCES).join(', ')}`,
    );
  }
  return spec;
}

export const RESOURCE_NAMES = Object.keys(RESOURCES) as ResourceName[];

/**
 * A page size that asks every resource for its largest page: the client caps each request at the
 * resource's `maxLimit` (1000 forms, 5000 cases). The default of the CLI and of the export function when
 * no page size is given. HQ itself clamps a larger `limit` to that maximum (tastypie's paginator), so
 * asking for more would cost nothing but a misleading `limit` in the URL; the sandbox clamps the same way.
 */
export const LARGEST_PAGE = Math.max(...Object.values(RESOURCES).map((spec) => spec.maxLimit));

/** DET's `--commcare-hq` aliases. */
const BASE_URL_ALIASES: Readonly<Record<string, string>> = {
  prod: 'https://www.commcarehq.org',
  local: 'http://localhost:8000',
};

/**
 * `prod` / `local` or any http(s) URL (india, eu, swiss, self-hosted), normalised without a trailing slash.
 * Credentials in the URL are refused: the key travels in the Authorization header only.
 */
export function resolveBaseUrl(value: string): string {
  const raw = BASE_URL_ALIASES[value] ?? value;
  let url: URL;
  try {
    url = new URL(raw);
  } catch (error) {
    throw new CommCareConfigError(
      `CommCare base URL must be "prod", "local" or an http(s) URL such as https://india.commcarehq.org; received "${value}"`,
      { cause: error },
    );
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new CommCareConfigError(`CommCare base URL must use http or https; received "${url.protocol}"`);
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new CommCareConfigError(
      'CommCare base URL must not contain credentials, a query or a fragment; pass the key as apiKey',
    );
  }
  return url.toString().replace(/\/+$/, '');
}

/** True for names and addresses that never leave the machine: `localhost`, 127.0.0.0/8, ::1. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/^\[|\]$/g, '');
  return (
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    host === '::1' ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) ||
    /^::ffff:127\./.test(host)
  );
}

/**
 * Refuses plain http to a host that is not loopback unless `allowInsecureHttp`: the API key travels in
 * the Authorization header of every request, readable by anyone on the path. Loopback stays allowed
 * for a local HQ or the sandbox (DET's `--commcare-hq local` is http://localhost:8000).
 */
export function checkTransport(baseUrl: string, allowInsecureHttp: boolean): void {
  const url = new URL(baseUrl);
  if (url.protocol === 'http:' && !allowInsecureHttp && !isLoopbackHost(url.hostname)) {
    throw new CommCareConfigError(
      `refusing plain http to ${url.host}: the API key would cross the network unencrypted in every ` +
        `request's Authorization header. Use https://${url.host}${url.pathname === '/' ? '' : url.pathname}, ` +
        'or pass --allow-insecure-http (allowInsecureHttp) if the network path is trusted',
    );
  }
}

/** HQ project space names: letters, digits, `-`, `.` and `_` (checked so a project cannot alter the path). */
const PROJECT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function checkProject(project: string): string {
  if (!PROJECT.test(project)) {
    throw new CommCareConfigError(
      `CommCare project must be a project space name (letters, digits, ".", "-", "_"); received "${project}"`,
    );
  }
  return project;
}

/**
 * Why resource-first by default: HQ's `corehq/apps/api/urls.py` says v0.5/v0.6 URLs are duplicated as
 * `<resource>/v1|v2` only "to manage the transition", so the new spelling is the one that stays; DET still
 * sends the legacy one, which `urlStyle: 'legacy'` reproduces.
 */
export type UrlStyle = 'resource-first' | 'legacy';

export function resourceUrl(baseUrl: string, project: string, spec: ResourceSpec, style: UrlStyle): string {
  const path = style === 'legacy' ? spec.legacyPath : spec.path;
  return `${baseUrl}/a/${checkProject(project)}/api/${path}/`;
}

export function userDomainsUrl(baseUrl: string, style: UrlStyle): string {
  return style === 'legacy' ? `${baseUrl}/api/v0.5/user_domains/` : `${baseUrl}/api/user_domains/v1/`;
}

/** Query string with repeated names kept in order (HQ ORs repeated values). */
export function buildQuery(params: QueryParams): string {
  const search = new URLSearchParams();
  for (const [name, values] of Object.entries(params)) {
    for (const value of values) search.append(name, value);
  }
  return search.toString();
}

export function withQuery(url: string, params: QueryParams): string {
  const query = buildQuery(params);
  return query ? `${url}?${query}` : url;
}

/**
 * Resolves a `next` link against the base URL, keeping our origin: tastypie's links are relative, case v2's
 * are absolute, and an absolute link naming another host (a proxy, http vs https) must not receive the key.
 */
export function resolveNext(baseUrl: string, next: string): string {
  const base = new URL(`${baseUrl}/`);
  const target = new URL(next, base);
  return `${base.origin}${target.pathname}${target.search}`;
}

/** One response, reduced to what paging needs. */
export interface Envelope {
  readonly records: JsonObject[];
  /** The `next` link, or null when HQ says there is none. */
  readonly next: string | null;
  readonly totalCount: number | null;
  /** The `limit` HQ applied, when it says (tastypie clamps silently to its maximum). */
  readonly limit: number | null;
}

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The envelope's field holding the records. */
export function listKeyOf(spec: Pick<ResourceSpec, 'envelope'>): string {
  return spec.envelope === 'case-v2' ? 'cases' : 'objects';
}

export function parseEnvelope(spec: Pick<ResourceSpec, 'envelope'>, body: unknown, path: string): Envelope {
  const fail = (what: string): never => {
    throw new CommCareResponseError(`CommCare HQ response for ${path} is not the expected envelope: ${what}`);
  };
  if (!isObject(body as JsonValue)) return fail(`expected a JSON object, received ${typeof body}`);
  const root = body as JsonObject;
  const listKey = listKeyOf(spec);
  const list = root[listKey];
  if (!Array.isArray(list)) return fail(`"${listKey}" is not an array`);
  const records: JsonObject[] = [];
  for (const item of list) {
    if (!isObject(item)) return fail(`an item of "${listKey}" is not an object`);
    records.push(item);
  }
  const num = (v: JsonValue | undefined): number | null => (typeof v === 'number' ? v : null);
  const str = (v: JsonValue | undefined): string | null => (typeof v === 'string' && v !== '' ? v : null);
  if (spec.envelope === 'case-v2') {
    return { records, next: str(root.next), totalCount: num(root.matching_records), limit: null };
  }
  const meta = root.meta;
  if (meta !== undefined && !isObject(meta)) return fail('"meta" is not an object');
  return {
    records,
    next: str(meta?.next),
    totalCount: num(meta?.total_count),
    limit: num(meta?.limit),
  };
}

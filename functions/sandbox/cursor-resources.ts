/**
 * The two plain-Django-view resources that page with a cursor in `meta.next`: messaging events
 * (`corehq/apps/api/resources/messaging_event/`) and UCR data-source rows (`ucr/v1/?data_source_id=`,
 * `response_for_cursor_based_pagination` in `corehq/apps/api/resources/pagination.py`). Both answer
 * `{objects, meta: {limit, next}}`: no offset, no total_count, and `next` is an absolute URL present on
 * every non-empty page (the last page is followed by one empty page with `next: null`).
 */
import type { JsonObject } from '../common/json';
import { parseFilterDate, SandboxBadRequest, SandboxNotFound } from './answers';
import { hash, hex32, Rng, uuid } from './prng';
import { formatMicros } from './records';
import type { SandboxParams } from './serve';

export interface CursorRequest {
  readonly project: string;
  readonly params: SandboxParams;
  /** `http://host:port`: HQ's `reverse(..., absolute=True)` builds `next` from the request's host. */
  readonly origin: string;
}

const START = Date.UTC(2024, 0, 1) * 1000;
const HOUR = 3_600_000_000;

function first(params: SandboxParams, name: string): string | undefined {
  return params[name]?.[0];
}

/** `get_limit_offset` of the messaging-event view: not an integer or ≤ 0 is 400, above max clamps. */
function viewLimit(params: SandboxParams, fallback: number, max: number): number {
  const raw = first(params, 'limit');
  if (raw === undefined) return fallback;
  if (!/^\s*-?\d+\s*$/.test(raw))
    throw new SandboxBadRequest(`Invalid limit '${raw}' provided. Please provide a positive integer.`);
  const value = Number.parseInt(raw, 10);
  if (value <= 0)
    throw new SandboxBadRequest(`Invalid limit '${raw}' provided. Please provide a positive integer.`);
  return Math.min(value, max);
}

/** Python's `b64encode(urlencode(params))`: the cursor HQ hands out. */
function encodeCursor(entries: readonly [string, string][]): string {
  return Buffer.from(new URLSearchParams(entries).toString(), 'utf8').toString('base64');
}

function decodeCursor(cursor: string): URLSearchParams {
  return new URLSearchParams(Buffer.from(cursor, 'base64').toString('utf8'));
}

// ---- messaging events --------------------------------------------------------------------------------

const CONTENT_TYPES = ['sms', 'email', 'sms-survey'] as const;
const SOURCES = ['broadcast', 'conditional-alert', 'keyword'] as const;
const STATUSES = ['completed', 'error', 'in-progress'] as const;

/** One messaging event's facts; `date` and `date_last_activity` are independent time lines. */
interface EventFacts {
  readonly id: number;
  readonly date: number;
  readonly lastActivity: number;
  readonly contentType: (typeof CONTENT_TYPES)[number];
  readonly source: (typeof SOURCES)[number];
  readonly status: (typeof STATUSES)[number];
  readonly caseId: string | null;
}

export class MessagingEvents {
  private readonly facts: EventFacts[] = [];
  private readonly byActivity: EventFacts[];

  constructor(
    private readonly salt: number,
    readonly domain: string,
    count: number,
    caseIds: (k: number) => string | null,
  ) {
    let date = START;
    let tied = false;
    for (let k = 0; k < count; k++) {
      // Pairs of events share a creation time now and then (one broadcast, two recipients), so
      // `last_object_id` has ties to break. Never more than two: HQ's cursor repeats a page forever when
      // more records than a page share one date (it filters `gte` that date and skips one id only).
      tied = k > 0 && !tied && hash(salt, 200, k) % 4 === 0;
      if (!tied) date += 1_000 + (hash(salt, 201, k) % (6 * HOUR));
      const lag = hash(salt, 202, k) % 3 === 0 ? (hash(salt, 203, k) % (72 * HOUR)) + 1 : 0;
      this.facts.push({
        id: 4_000_000 + k * 7 + (hash(salt, 204, k) % 7),
        date,
        lastActivity: date + lag,
        contentType: CONTENT_TYPES[hash(salt, 205, k) % CONTENT_TYPES.length]!,
        source: SOURCES[hash(salt, 206, k) % SOURCES.length]!,
        status: STATUSES[hash(salt, 207, k) % STATUSES.length]!,
        caseId: hash(salt, 208, k) % 2 === 0 ? caseIds(k) : null,
      });
    }
    this.byActivity = [...this.facts].sort((a, b) => a.lastActivity - b.lastActivity || a.id - b.id);
  }

  get count(): number {
    return this.facts.length;
  }

  /** Every event in creation order (ground truth for tests). */
  all(): JsonObject[] {
    return this.facts.map((f) => this.record(f));
  }

  private record(f: EventFacts): JsonObject {
    const rng = new Rng(hash(this.salt, 210, f.id));
    const naive = (micros: number) => formatMicros(micros, 'naive');
    const messages: JsonObject[] = [];
    if (f.contentType === 'email') {
      messages.push({
        message_id: f.id * 3,
        type: 'email',
        direction: 'outgoing',
        content: 'Your monthly visit is due.',
        date: naive(f.date),
        date_modified: f.lastActivity === f.date ? null : naive(f.lastActivity),
        status: f.status,
        backend: 'email',
        email_address: `contact${f.id % 97}@example.org`,
      });
    } else {
      const sms: JsonObject = {
        message_id: f.id * 3,
        type: 'sms',
        direction: 'outgoing',
        content: rng.pick(['Karibu!', 'Rappel : visite demain', 'आपका स्वागत है']),
        // sms dates go through DjangoJSONEncoder: milliseconds.
        date: naive(f.date).slice(0, 23),
        date_modified: f.lastActivity === f.date ? null : naive(f.lastActivity).slice(0, 23),
        status: f.status === 'error' ? 'error' : 'sent',
        backend: 'MOBILE_BACKEND_TWILIO',
        phone_number: `+2547${10_000_000 + (f.id % 89_999_999)}`,
      };
      if (f.status === 'error') sms.error_message = 'Gateway error.';
      messages.push(sms);
    }
    return {
      id: f.id,
      content_type: f.contentType,
      date: naive(f.date),
      date_last_activity: naive(f.lastActivity),
      case_id: f.caseId,
      domain: this.domain,
      error:
        f.status === 'error'
          ? { code: 'GATEWAY_ERROR', message: 'Gateway error.', message_detail: null }
          : null,
      form:
        f.contentType === 'sms-survey'
          ? { app_id: null, form_definition_id: null, form_name: 'Welcome Survey', form_submission_id: null }
          : null,
      messages,
      recipient: {
        recipient_id: f.caseId,
        type: f.caseId ? 'case' : 'unknown',
        name: f.caseId ? `case ${f.caseId.slice(0, 8)}` : 'unknown',
      },
      source: {
        source_id: String(hash(this.salt, 211, f.id) % 10_000),
        type: f.source,
        name: `${f.source} rule`,
      },
      status: f.status,
    };
  }

  /** `messaging_events` list view: filter, sort by (field, id), cursor page. */
  serve(req: CursorRequest): string {
    let params: Record<string, string> = {};
    for (const [k, values] of Object.entries(req.params)) params[k] = values[values.length - 1]!;
    const hasCursor = 'cursor' in params;
    if (hasCursor) {
      // "any other parameters sent alongside it are ignored": the cursor holds the whole query.
      params = Object.fromEntries(decodeCursor(params.cursor!));
    }
    const limit = viewLimit({ limit: params.limit === undefined ? [] : [params.limit] }, 20, 1000);
    const orderBy = params.order_by ?? 'date';
    if (!/^-?(date|date_last_activity)$/.test(orderBy))
      throw new SandboxBadRequest(`No matching '${orderBy}' field for ordering`);
    const descending = orderBy.startsWith('-');
    const field = descending ? orderBy.slice(1) : orderBy;
    const orderValue = (f: EventFacts) => (field === 'date' ? f.date : f.lastActivity);

    const predicates: ((f: EventFacts) => boolean)[] = [];
    for (const [name, value] of Object.entries(params)) {
      const dot = name.indexOf('.');
      const base = dot < 0 ? name : name.slice(0, dot);
      if (base === 'date' || base === 'date_last_activity') {
        const op = name.slice(dot + 1);
        if (!['gt', 'gte', 'lt', 'lte'].includes(op))
          throw new SandboxBadRequest(`'${op}' is not a valid date filter qualifier`);
        const bound = parseFilterDate(name, value, 'v2');
        const get = base === 'date' ? (f: EventFacts) => f.date : (f: EventFacts) => f.lastActivity;
        predicates.push((f) =>
          op === 'gt'
            ? get(f) > bound
            : op === 'gte'
              ? get(f) >= bound
              : op === 'lt'
                ? get(f) < bound
                : get(f) <= bound,
        );
      } else if (name === 'content_type') {
        const wanted = new Set(value.split(','));
        predicates.push((f) => wanted.has(f.contentType));
      } else if (name === 'source') {
        const wanted = new Set(value.split(','));
        predicates.push((f) => wanted.has(f.source));
      } else if (name === 'status') {
        if (!(STATUSES as readonly string[]).includes(value) && value !== 'email-delivered')
          throw new SandboxBadRequest(`'${value}' is an invalid value for the 'status' filter`);
        predicates.push((f) => f.status === value);
      } else if (name === 'case_id') {
        predicates.push((f) => f.caseId === value.trim());
      }
      // Other names (limit, order_by, last_object_id, error_code, phone_number, email_address) filter
      // nothing here: the sandbox's events carry no error codes beyond the status.
    }
    const ordered = field === 'date' ? this.facts : this.byActivity;
    const matching = ordered.filter((f) => predicates.every((p) => p(f)));
    if (descending) matching.reverse();

    let page: EventFacts[];
    if (hasCursor) {
      // HQ fetches limit + 1; the first is skipped when it is the previous page's last object, else the
      // extra last one is dropped. Ties longer than that at a page edge come back twice (an HQ quirk).
      const fetched = matching.slice(0, limit + 1);
      const lastId = Number.parseInt(params.last_object_id ?? '', 10);
      page = fetched.length > 0 && fetched[0]!.id === lastId ? fetched.slice(1) : fetched.slice(0, -1);
    } else {
      page = matching.slice(0, limit);
    }
    let next: string | null = null;
    if (page.length > 0) {
      const last = page[page.length - 1]!;
      const entries: [string, string][] = Object.entries(params).filter(
        ([k]) => k !== 'cursor' && k !== 'last_object_id' && k !== `${field}.${descending ? 'lte' : 'gte'}`,
      );
      entries.push([`${field}.${descending ? 'lte' : 'gte'}`, formatMicros(orderValue(last), 'naive')]);
      entries.push(['last_object_id', String(last.id)]);
      next = `${req.origin}/a/${this.domain}/api/messaging-event/v1/?cursor=${encodeURIComponent(encodeCursor(entries))}`;
    }
    return JSON.stringify({ objects: page.map((f) => this.record(f)), meta: { limit, next } });
  }
}

// ---- UCR data-source rows ----------------------------------------------------------------------------

interface RowFacts {
  readonly docId: string;
  /** Milliseconds only: DjangoJSONEncoder serializes the datetime with millisecond precision. */
  readonly insertedAt: number;
  readonly k: number;
}

export class UcrDataSource {
  readonly id: string;
  private readonly rows: RowFacts[] = [];

  constructor(
    private readonly salt: number,
    readonly domain: string,
    count: number,
  ) {
    this.id = hex32(salt, 220);
    let at = START;
    for (let k = 0; k < count; k++) {
      // Rows are written by the UCR pillow in batches: several share one inserted_at.
      if (k === 0 || hash(salt, 221, k) % 3 !== 0) at += 1_000 * (1 + (hash(salt, 222, k) % 90_000));
      this.rows.push({ docId: uuid(salt, 223, k), insertedAt: at, k });
    }
    this.rows.sort((a, b) => a.insertedAt - b.insertedAt || (a.docId < b.docId ? -1 : 1));
  }

  get count(): number {
    return this.rows.length;
  }

  all(): JsonObject[] {
    return this.rows.map((r) => this.record(r));
  }

  private record(r: RowFacts): JsonObject {
    const rng = new Rng(hash(this.salt, 224, r.k));
    const insertedAt = formatMicros(r.insertedAt, 'naive').slice(0, 23);
    // get_datasource_records: every column of the table, and `id` copied from `doc_id`.
    return {
      id: r.docId,
      doc_id: r.docId,
      inserted_at: insertedAt,
      household_size: rng.range(1, 9),
      village: rng.pick(['Kisumu', 'Ségou', 'वाराणसी', 'Gulu']),
      visit_count: rng.int(5),
      last_visit: rng.chance(0.2)
        ? null
        : formatMicros(r.insertedAt - HOUR * rng.int(48), 'naive').slice(0, 10),
    };
  }

  /** `ucr/v1/?data_source_id=`: rows ordered by (inserted_at, doc_id), after the cursor's row. */
  serve(req: CursorRequest): string {
    const params: Record<string, string> = {};
    for (const [k, values] of Object.entries(req.params)) params[k] = values[values.length - 1]!;
    const limit = viewLimit({ limit: params.limit === undefined ? [] : [params.limit] }, 1000, 10_000);
    const sourceId = params.data_source_id;
    if (!sourceId) throw new SandboxBadRequest('Please provide a data_source_id');
    if (sourceId !== this.id)
      throw new SandboxNotFound(`No data source '${sourceId}' in project '${this.domain}'`);
    let startAfter: { at: number; doc: string } | null = null;
    if (params.cursor !== undefined) {
      const decoded = decodeCursor(params.cursor);
      const at = decoded.get('last_inserted_at');
      const doc = decoded.get('last_doc_id');
      // HQ writes the datetime's str() (a space before the time) into its cursor.
      if (at && doc)
        startAfter = { at: parseFilterDate('last_inserted_at', at.replace(' ', 'T'), 'v2'), doc };
    }
    const rows = startAfter
      ? this.rows.filter(
          (r) => r.insertedAt > startAfter.at || (r.insertedAt === startAfter.at && r.docId > startAfter.doc),
        )
      : this.rows;
    const page = rows.slice(0, limit);
    let next: string | null = null;
    if (page.length > 0) {
      const last = page[page.length - 1]!;
      const cursor = encodeCursor([
        ['last_doc_id', last.docId],
        ['last_inserted_at', formatMicros(last.insertedAt, 'naive').replace('T', ' ')],
      ]);
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(params)) if (k !== 'cursor') qs.append(k, v);
      qs.append('cursor', cursor);
      next = `${req.origin}/a/${this.domain}/api/ucr/v1/?${qs.toString()}`;
    }
    return JSON.stringify({ objects: page.map((r) => this.record(r)), meta: { next, limit } });
  }
}

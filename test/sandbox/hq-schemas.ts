/**
 * JSON Schemas of the CommCare HQ list responses the sandbox serves, written from HQ's published API
 * description (`docs/api/openapi/components/schemas/*.yaml` in dimagi/commcare-hq: form, case, case-v2,
 * user, group, location, application, user-domains, messaging-event, pagination, error) and, for UCR rows,
 * `response_for_cursor_based_pagination` in `corehq/apps/api/resources/pagination.py`.
 *
 * Stricter than HQ's own description on purpose: every field HQ always sends is required, and records
 * whose field list HQ's description gives in full allow no other field, so a sandbox that adds, drops or
 * reshapes a field fails here instead of passing every other test.
 */

type Schema = Record<string, unknown>;

/** Naive timestamp: tastypie's `isoformat()` of a naive datetime (no `Z`, no offset). */
const NAIVE = { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,6})?$' };
/** `json_format_datetime`: a literal `Z` and six-digit microseconds. */
const ZULU = { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{6}Z$' };
const STRING = { type: 'string' };
const NULLABLE_STRING = { type: ['string', 'null'] };
const STRINGS = { type: 'array', items: STRING };
const OBJECT = { type: 'object' };
const ABSOLUTE_URL = { type: 'string', pattern: '^https?://' };
const nullable = (schema: Schema): Schema => ({ anyOf: [schema, { type: 'null' }] });

/** A record: every listed property is required unless named in `optional`; `closed` forbids others. */
function record(properties: Record<string, Schema>, options: { optional?: string[]; closed?: boolean } = {}) {
  const optional = new Set(options.optional ?? []);
  return {
    type: 'object',
    properties,
    required: Object.keys(properties).filter((k) => !optional.has(k)),
    additionalProperties: options.closed === false,
  };
}

/** tastypie's `{meta: {limit, next, offset, previous, total_count}, objects}` (pagination.yaml PaginatedResponse). */
function tastypieList(item: Schema): Schema {
  return record({
    meta: record({
      limit: { type: ['integer', 'null'] },
      next: NULLABLE_STRING,
      offset: { type: 'integer' },
      previous: NULLABLE_STRING,
      total_count: { type: 'integer' },
    }),
    objects: { type: 'array', items: item },
  });
}

/** The cursor envelope of messaging events and UCR rows (pagination.yaml CursorMeta). */
function cursorList(item: Schema): Schema {
  return record({
    meta: record({ limit: { type: 'integer' }, next: nullable(ABSOLUTE_URL) }),
    objects: { type: 'array', items: item },
  });
}

const FORM = record(
  {
    id: STRING,
    domain: STRING,
    app_id: NULLABLE_STRING,
    build_id: NULLABLE_STRING,
    type: STRING,
    version: STRING,
    uiversion: NULLABLE_STRING,
    submit_ip: NULLABLE_STRING,
    archived: { type: 'boolean' },
    problem: NULLABLE_STRING,
    initial_processing_complete: { type: ['boolean', 'null'] },
    is_phone_submission: { type: 'boolean' },
    edited_on: nullable(NAIVE),
    edited_by_user_id: NULLABLE_STRING,
    received_on: ZULU,
    server_modified_on: ZULU,
    indexed_on: ZULU,
    metadata: { type: ['object', 'null'] },
    form: {
      type: 'object',
      required: ['@xmlns', 'meta'],
      properties: { '@xmlns': STRING, meta: OBJECT },
    },
    attachments: {
      type: 'object',
      additionalProperties: record({ content_type: STRING, length: { type: 'integer' }, url: STRING }),
    },
    resource_uri: { const: '' },
    cases: { type: 'array', items: OBJECT },
  },
  { optional: ['cases'] },
);

const CASE_V1 = record(
  {
    id: STRING,
    case_id: STRING,
    domain: STRING,
    user_id: NULLABLE_STRING,
    date_modified: NAIVE,
    closed: { type: 'boolean' },
    date_closed: nullable(NAIVE),
    server_date_modified: NAIVE,
    server_date_opened: nullable(NAIVE),
    indexed_on: STRING,
    opened_by: NULLABLE_STRING,
    closed_by: NULLABLE_STRING,
    xform_ids: STRINGS,
    properties: {
      type: 'object',
      required: ['case_name', 'case_type', 'date_opened', 'external_id', 'owner_id'],
    },
    indices: {
      type: 'object',
      additionalProperties: { type: 'object', required: ['case_type', 'case_id'] },
    },
    resource_uri: STRING,
  },
  { optional: ['resource_uri'] },
);

const CASE_V2 = record({
  domain: STRING,
  case_id: STRING,
  case_type: STRING,
  case_name: STRING,
  external_id: NULLABLE_STRING,
  owner_id: NULLABLE_STRING,
  date_opened: nullable(ZULU),
  last_modified: ZULU,
  server_last_modified: ZULU,
  indexed_on: ZULU,
  closed: { type: 'boolean' },
  date_closed: nullable(ZULU),
  properties: {
    type: 'object',
    additionalProperties: STRING,
    // v2 keeps the case's metadata out of `properties` (serialize_es_case strips it).
    not: {
      anyOf: ['case_name', 'case_type', 'date_opened', 'external_id', 'owner_id'].map((k) => ({
        required: [k],
      })),
    },
  },
  indices: {
    type: 'object',
    additionalProperties: record({
      case_id: STRING,
      case_type: STRING,
      relationship: { enum: ['child', 'extension'] },
    }),
  },
});

const CASE_V2_LIST = {
  type: 'object',
  required: ['matching_records', 'cases'],
  properties: {
    matching_records: { type: 'integer' },
    cases: { type: 'array', items: CASE_V2 },
    next: { ...ABSOLUTE_URL, pattern: '^https?://[^?]+\\?cursor=[^&]+$' },
  },
  additionalProperties: false,
};

const MOBILE_WORKER = record(
  {
    id: STRING,
    username: STRING,
    first_name: NULLABLE_STRING,
    last_name: NULLABLE_STRING,
    default_phone_number: NULLABLE_STRING,
    email: STRING,
    phone_numbers: STRINGS,
    groups: STRINGS,
    primary_location: NULLABLE_STRING,
    locations: STRINGS,
    user_data: OBJECT,
    eulas: STRING,
    resource_uri: STRING,
    extras: OBJECT,
  },
  { optional: ['extras'] },
);

const WEB_USER = record(
  {
    id: STRING,
    username: STRING,
    first_name: NULLABLE_STRING,
    last_name: NULLABLE_STRING,
    default_phone_number: NULLABLE_STRING,
    email: STRING,
    phone_numbers: STRINGS,
    role: STRING,
    permissions: OBJECT,
    is_admin: { type: 'boolean' },
    eulas: STRING,
    resource_uri: STRING,
    primary_location_id: STRING,
    assigned_location_ids: STRINGS,
    profile: STRING,
    user_data: OBJECT,
    tableau_role: NULLABLE_STRING,
    is_active_in_domain: { type: 'boolean' },
  },
  // tableau_groups is `use_in='detail'`: never in a list.
);

const GROUP = record(
  {
    id: STRING,
    name: STRING,
    domain: STRING,
    case_sharing: { type: 'boolean' },
    reporting: { type: 'boolean' },
    metadata: OBJECT,
    users: STRINGS,
    resource_uri: STRING,
  },
  { optional: ['resource_uri'] },
);

const LOCATION_V1 = record({
  id: { type: 'integer' },
  name: STRING,
  domain: STRING,
  location_id: STRING,
  site_code: STRING,
  external_id: NULLABLE_STRING,
  created_at: NAIVE,
  last_modified: NAIVE,
  latitude: NULLABLE_STRING,
  longitude: NULLABLE_STRING,
  location_data: OBJECT,
  location_type: ABSOLUTE_URL,
  parent: nullable(ABSOLUTE_URL),
  resource_uri: STRING,
});

const LOCATION_V2 = record({
  domain: STRING,
  location_id: STRING,
  name: STRING,
  site_code: STRING,
  last_modified: NAIVE,
  latitude: NULLABLE_STRING,
  longitude: NULLABLE_STRING,
  location_data: OBJECT,
  location_type_code: STRING,
  location_type_name: STRING,
  parent_location_id: STRING,
});

const LOCATION_TYPE = record({
  id: { type: 'integer' },
  domain: STRING,
  name: STRING,
  code: STRING,
  parent: nullable(ABSOLUTE_URL),
  administrative: { type: 'boolean' },
  shares_cases: { type: 'boolean' },
  view_descendants: { type: 'boolean' },
  resource_uri: STRING,
});

const APPLICATION = record({
  id: STRING,
  resource_uri: STRING,
  name: STRING,
  version: { type: 'integer' },
  is_released: { type: ['boolean', 'null'] },
  built_on: nullable({ type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?$' }),
  build_comment: NULLABLE_STRING,
  built_from_app_id: NULLABLE_STRING,
  modules: {
    type: 'array',
    items: record({
      name: STRING,
      case_type: STRING,
      case_properties: STRINGS,
      unique_id: STRING,
      forms: {
        type: 'array',
        items: record({
          xmlns: NULLABLE_STRING,
          name: { type: 'object', additionalProperties: STRING },
          questions: { type: 'array', items: OBJECT },
          unique_id: STRING,
        }),
      },
    }),
  },
  versions: {
    type: 'array',
    items: record({
      id: STRING,
      built_on: { type: 'string', pattern: 'Z$' },
      build_comment: STRING,
      is_released: { type: 'boolean' },
      version: { type: 'integer' },
    }),
  },
});

const APPLICATION_LIST = record({
  // DoesNothingPaginatorCompat: every app, `limit` null and `offset` 0, always.
  meta: record({
    limit: { type: 'null' },
    next: { type: 'null' },
    offset: { const: 0 },
    previous: { type: 'null' },
    total_count: { type: 'integer' },
  }),
  objects: { type: 'array', items: APPLICATION },
});

const USER_DOMAIN_LIST = record({
  meta: record({ total_count: { type: 'integer' } }),
  objects: { type: 'array', items: record({ domain_name: STRING, project_name: STRING }) },
});

const MESSAGING_EVENT = record({
  id: { type: 'integer' },
  content_type: STRING,
  date: NAIVE,
  date_last_activity: NAIVE,
  case_id: NULLABLE_STRING,
  domain: STRING,
  error: nullable(record({ code: STRING, message: NULLABLE_STRING, message_detail: NULLABLE_STRING })),
  form: nullable(
    record({
      app_id: NULLABLE_STRING,
      form_definition_id: NULLABLE_STRING,
      form_name: NULLABLE_STRING,
      form_submission_id: NULLABLE_STRING,
    }),
  ),
  messages: {
    type: 'array',
    items: record(
      {
        message_id: { type: 'integer' },
        type: { enum: ['sms', 'ivr', 'email'] },
        direction: { enum: ['outgoing', 'incoming', 'unknown'] },
        content: STRING,
        date: NAIVE,
        date_modified: nullable(NAIVE),
        status: STRING,
        backend: STRING,
        phone_number: STRING,
        email_address: STRING,
        error_message: STRING,
      },
      { optional: ['phone_number', 'email_address', 'error_message'] },
    ),
  },
  recipient: record({ recipient_id: NULLABLE_STRING, type: STRING, name: STRING }),
  source: record({ source_id: STRING, type: STRING, name: STRING }),
  status: STRING,
});

const UCR_ROW = {
  type: 'object',
  required: ['id', 'doc_id', 'inserted_at'],
  properties: {
    id: STRING,
    doc_id: STRING,
    inserted_at: { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{3})?$' },
  },
};

const DET_EXPORT = record({
  id: STRING,
  resource_uri: STRING,
  name: STRING,
  type: { enum: ['case', 'form'] },
  export_format: STRING,
  is_deidentified: { type: 'boolean' },
  case_type: NULLABLE_STRING,
  xmlns: NULLABLE_STRING,
  det_config_url: STRING,
});

/** `{"error": "..."}` (error.yaml), the body of 400 and 401 answers. */
export const ERROR_BODY = record({ error: STRING });

/** Response schema per sandbox resource (the `SandboxResource` names). */
export const LIST_SCHEMAS: Readonly<Record<string, Schema>> = {
  form: tastypieList(FORM),
  case: tastypieList(CASE_V1),
  'case-v2': CASE_V2_LIST,
  user: tastypieList(MOBILE_WORKER),
  'web-user': tastypieList(WEB_USER),
  group: tastypieList(GROUP),
  location: tastypieList(LOCATION_V1),
  'location-v2': tastypieList(LOCATION_V2),
  location_type: tastypieList(LOCATION_TYPE),
  application: APPLICATION_LIST,
  'messaging-event': cursorList(MESSAGING_EVENT),
  ucr: cursorList(UCR_ROW),
  user_domains: USER_DOMAIN_LIST,
  det_export_instance: tastypieList(DET_EXPORT),
};

import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCommCareClient, type ResourceName } from '../../functions/commcare/index';
import type { JsonObject } from '../../functions/common/json';
import {
  DEFAULT_API_KEY,
  DEFAULT_USERNAME,
  type RunningSandbox,
  startSandbox,
} from '../../functions/sandbox/server';
import { ERROR_BODY, LIST_SCHEMAS } from './hq-schemas';
import { getJson } from './support';

const ajv = new Ajv({ allErrors: true, strict: false });
const validators = Object.fromEntries(Object.entries(LIST_SCHEMAS).map(([k, s]) => [k, ajv.compile(s)]));
const validateError = ajv.compile(ERROR_BODY);

let sandbox: RunningSandbox;

beforeAll(async () => {
  sandbox = await startSandbox({
    projects: [
      { name: 'demo', forms: 300, cases: 120, mobileUsers: 6, webUsers: 3, groups: 3, locations: 12 },
    ],
  });
});
afterAll(async () => {
  await sandbox.close();
});

function expectConforms(resource: string, body: JsonObject, label: string): void {
  const validate = validators[resource]!;
  const ok = validate(body);
  expect(
    ok ? [] : ajv.errorsText(validate.errors, { separator: '\n' }).split('\n').slice(0, 8),
    label,
  ).toEqual([]);
}

/** Requests that between them reach every shape each resource serves (filters, repeats, closed cases…). */
const REQUESTS: readonly [string, string][] = [
  ['form', '/a/demo/api/form/v1/?limit=300&include_archived'],
  ['form', '/a/demo/api/v0.5/form/?order_by=indexed_on&limit=50&cases__full=true'],
  ['case', '/a/demo/api/case/v1/?limit=5000'],
  ['case', '/a/demo/api/v0.5/case/?closed=true&order_by=indexed_on'],
  ['case-v2', '/a/demo/api/case/v2/?limit=120'],
  ['case-v2', '/a/demo/api/case/v2/?limit=7&case_type=person'],
  ['user', '/a/demo/api/user/v1/'],
  ['web-user', '/a/demo/api/web-user/v1/'],
  ['group', '/a/demo/api/group/v1/'],
  ['location', '/a/demo/api/location/v1/'],
  ['location-v2', '/a/demo/api/location/v2/'],
  ['location_type', '/a/demo/api/location_type/v1/'],
  ['application', '/a/demo/api/application/v1/'],
  ['messaging-event', '/a/demo/api/messaging-event/v1/?limit=1000'],
  ['messaging-event', '/a/demo/api/messaging-event/v1/?limit=5&order_by=date_last_activity'],
  ['user_domains', '/api/user_domains/v1/'],
  ['det_export_instance', '/a/demo/api/det_export_instance/v1/'],
];

describe('the sandbox answers as HQ describes its API', () => {
  it.each(REQUESTS)("serves %s in HQ's shape (%s)", async (resource, path) => {
    const { status, body } = await getJson(`${sandbox.url}${path}`);
    expect(status).toBe(200);
    expectConforms(resource, body, path);
  });

  it("serves UCR data-source rows in HQ's shape", async () => {
    const source = sandbox.dataset.model('demo').ucr.id;
    const { status, body } = await getJson(
      `${sandbox.url}/a/demo/api/ucr/v1/?data_source_id=${source}&limit=40`,
    );
    expect(status).toBe(200);
    expectConforms('ucr', body, 'ucr');
  });

  it("serves every form and case version in HQ's shape, not only the first pages", () => {
    for (const resource of ['form', 'case', 'case-v2'] as const) {
      const objects = [...sandbox.dataset.timeline('demo', resource)];
      const body: JsonObject =
        resource === 'case-v2'
          ? { matching_records: objects.length, cases: objects }
          : {
              meta: { limit: 1000, next: null, offset: 0, previous: null, total_count: objects.length },
              objects,
            };
      expectConforms(resource, body, `${resource} timeline`);
    }
  });

  it.each([
    ['/a/demo/api/form/v1/?limit=abc', 400],
    ['/a/demo/api/form/v1/?indexed_on_start=2024-13-45', 400],
    ['/a/demo/api/case/v1/?offset=-1', 400],
    ['/a/demo/api/case/v2/?limit=6000', 400],
    ['/a/demo/api/case/v2/?nope=1', 400],
    ['/a/demo/api/messaging-event/v1/?limit=0', 400],
    ['/a/demo/api/ucr/v1/', 400],
  ])('answers %s with %i and an {"error"} body', async (path, expected) => {
    const { status, body } = await getJson(`${sandbox.url}${path}`);
    expect(status).toBe(expected);
    expect(validateError(body), JSON.stringify(body)).toBe(true);
  });

  it('answers a rejected key with 401 and an {"error"} body', async () => {
    const { status, body } = await getJson(`${sandbox.url}/a/demo/api/form/v1/`, {
      Authorization: 'ApiKey demo@example.org:wrong',
    });
    expect(status).toBe(401);
    expect(body).toEqual({ error: 'not authorized' });
  });
});

/**
 * Parameters HQ documents per resource (docs/api/*.rst and openapi/paths/*.yaml), plus the paging
 * parameters. A client request with any other name would be an ES term filter on HQ (tastypie) or a 400
 * (case v2): a client that sends one is wrong even where the sandbox tolerates it.
 */
const DOCUMENTED: Readonly<Record<string, RegExp>> = {
  form: /^(limit|offset|order_by|format|xmlns|xmlns\.exact|app_id|include_archived|cases__full|case_id|(indexed_on|received_on|server_modified_on)_(start|end))$/,
  case: /^(limit|offset|order_by|format|type|owner_id|user_id|closed|case_name|external_id|(indexed_on|server_date_modified|date_modified)_(start|end))$/,
  'case-v2':
    /^(limit|cursor|case_type|case_name|external_id|owner_id|closed|include_deprecated|fields|exclude|(properties|indices|fields|exclude)\..+|(indexed_on|server_last_modified|last_modified|date_opened|date_closed)\.(gt|gte|lt|lte))$/,
  'messaging-event':
    /^(limit|cursor|order_by|content_type|source|status|error_code|phone_number|email_address|case_id|(date|date_last_activity)\.(gt|gte|lt|lte))$/,
  ucr: /^(limit|cursor|data_source_id)$/,
  other: /^(limit|offset|format|group|archived|extras|site_code|name|location_type_code|parent_location_id)$/,
};

describe('the client sends only parameters HQ documents', () => {
  it.each([
    'form',
    'case',
    'case-v2',
    'user',
    'web-user',
    'group',
    'location',
    'location-v2',
    'location_type',
    'application',
    'messaging-event',
    'ucr',
  ] as const)('for %s, in a pull and in an incremental pull', async (resource) => {
    const client = createCommCareClient({
      baseUrl: sandbox.url,
      username: DEFAULT_USERNAME,
      apiKey: DEFAULT_API_KEY,
      sleep: async () => {},
    });
    const params: Record<string, string[]> =
      resource === 'ucr' ? { data_source_id: [sandbox.dataset.model('demo').ucr.id] } : {};
    const before = sandbox.requestLog.length;
    for (const since of [null, '2024-03-01T00:00:00']) {
      for await (const _ of client.records({
        project: 'demo',
        resource: resource as ResourceName,
        params,
        pageSize: 50,
        ...(since ? { since } : {}),
      })) {
        // drain
      }
    }
    const names = new Set(sandbox.requestLog.slice(before).flatMap((entry) => Object.keys(entry.query)));
    const allowed = DOCUMENTED[resource] ?? DOCUMENTED.other!;
    expect([...names].filter((n) => !allowed.test(n))).toEqual([]);
  });
});

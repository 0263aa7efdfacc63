import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CommCareClient, createCommCareClient } from '../../functions/commcare/index';
import type { JsonObject } from '../../functions/common/json';
import {
  BuiltinPrefetchError,
  type BuiltinRecordSource,
  type BuiltinResource,
  builtinSources,
  LOCATIONS_TABLE_NAME,
  locationsTablePlan,
  USERS_TABLE_NAME,
  usersTablePlan,
} from '../../functions/query/index';
import type { Cell, SourcePlan } from '../../functions/query/types';
import {
  DEFAULT_API_KEY,
  DEFAULT_USERNAME,
  type RunningSandbox,
  startSandbox,
} from '../../functions/sandbox/server';

// ---- DET's fixture: tests/test_cli.py::mock_hq_client(include_parent) of dimagi/commcare-export -----------

const DET_USERS: JsonObject[] = [
  {
    id: 'id1',
    email: 'em1',
    first_name: 'fn1',
    last_name: 'ln1',
    user_data: {
      commcare_location_id: 'lid1',
      commcare_location_ids: ['lid1', 'lid2'],
      commcare_project: 'p1',
    },
    username: 'u1',
  },
  {
    id: 'id2',
    default_phone_number: 'pn2',
    email: 'em2',
    first_name: 'fn2',
    last_name: 'ln2',
    resource_uri: 'ru0',
    user_data: { commcare_location_id: 'lid2', commcare_project: 'p2' },
    username: 'u2',
  },
];

const DET_LOCATION_TYPES: JsonObject[] = [
  {
    administrative: true,
    code: 'hq',
    domain: 'd1',
    id: 1,
    name: 'HQ',
    parent: null,
    resource_uri: 'lt1',
    shares_cases: false,
    view_descendants: true,
  },
  {
    administrative: false,
    code: 'local',
    domain: 'd1',
    id: 2,
    name: 'Local',
    parent: 'lt1',
    resource_uri: 'lt2',
    shares_cases: true,
    view_descendants: true,
  },
];

function detLocations(includeParent: boolean): JsonObject[] {
  return [
    {
      id: 'id1',
      created_at: '2020-04-01T21:57:26.403053',
      domain: 'd1',
      external_id: 'eid1',
      last_modified: '2020-04-01T21:58:23.88343',
      latitude: '11.2',
      location_data: { p1: 'ld1' },
      location_id: 'lid1',
      location_type: 'lt1',
      longitude: '-20.5',
      name: 'n1',
      resource_uri: 'ru1',
      site_code: 'sc1',
    },
    {
      id: 'id2',
      created_at: '2020-04-01T21:58:47.627371',
      domain: 'd2',
      last_modified: '2020-04-01T21:59:16.018411',
      latitude: '-56.3',
      location_data: { p1: 'ld2' },
      location_id: 'lid2',
      location_type: 'lt2',
      longitude: '18.7',
      name: 'n2',
      parent: includeParent ? 'ru1' : null,
      resource_uri: 'ru2',
      site_code: 'sc2',
    },
  ];
}

/** tests/test_cli.py::EXPECTED_USERS_RESULTS. */
const EXPECTED_USERS = {
  headings: [
    'id',
    'default_phone_number',
    'email',
    'first_name',
    'groups',
    'last_name',
    'phone_numbers',
    'resource_uri',
    'commcare_location_id',
    'commcare_location_ids',
    'commcare_primary_case_sharing_id',
    'commcare_project',
    'username',
  ],
  rows: [
    ['id1', null, 'em1', 'fn1', null, 'ln1', null, null, 'lid1', 'lid1,lid2', null, 'p1', 'u1'],
    ['id2', 'pn2', 'em2', 'fn2', null, 'ln2', null, 'ru0', 'lid2', null, null, 'p2', 'u2'],
  ],
};

/** Our naive datetimes: `Date`s whose UTC fields are the wall-clock fields (DET's JSON writer prints them). */
const naive = (s: string) => new Date(`${s}Z`);

/** tests/test_cli.py::get_expected_locations_results(include_parent), datetimes as our naive `Date`s. */
function expectedLocations(includeParent: boolean) {
  return {
    headings: [
      'id',
      'created_at',
      'domain',
      'external_id',
      'last_modified',
      'latitude',
      'location_data',
      'location_id',
      'location_type',
      'longitude',
      'name',
      'parent',
      'resource_uri',
      'site_code',
      'location_type_administrative',
      'location_type_code',
      'location_type_name',
      'location_type_parent',
      'local',
      'hq',
    ],
    rows: [
      [
        'id1',
        naive('2020-04-01T21:57:26'),
        'd1',
        'eid1',
        naive('2020-04-01T21:58:23'),
        '11.2',
        '{"p1": "ld1", "id": "id1.location_data"}',
        'lid1',
        'lt1',
        '-20.5',
        'n1',
        null,
        'ru1',
        'sc1',
        true,
        'hq',
        'HQ',
        null,
        null,
        'lid1',
      ],
      [
        'id2',
        naive('2020-04-01T21:58:47'),
        'd2',
        null,
        naive('2020-04-01T21:59:16'),
        '-56.3',
        '{"p1": "ld2", "id": "id2.location_data"}',
        'lid2',
        'lt2',
        '18.7',
        'n2',
        includeParent ? 'ru1' : null,
        'ru2',
        'sc2',
        false,
        'local',
        'Local',
        'lt1',
        'lid2',
        includeParent ? 'lid1' : null,
      ],
    ],
  };
}

/** A record source over fixed listings that remembers what was asked. */
function fakeHq(data: Partial<Record<BuiltinResource, JsonObject[]>>) {
  const asked: string[] = [];
  const source: BuiltinRecordSource = {
    async *records({ project, resource }) {
      asked.push(`${project}/${resource}`);
      for (const r of data[resource] ?? []) yield r;
    },
  };
  return { source, asked };
}

/** Runs sources the way the export runner does: each source's records through each of its tables. */
async function run(sources: readonly SourcePlan[], hq: BuiltinRecordSource, project: string) {
  const tables = new Map<string, { headings: readonly string[]; rows: Cell[][] }>();
  for (const s of sources) {
    for (const t of s.tables) tables.set(t.name, { headings: t.headings, rows: [] });
    for await (const record of hq.records({ project, resource: s.resource as BuiltinResource }))
      for (const t of s.tables) tables.get(t.name)!.rows.push(...t.rowsFor(record));
  }
  return tables;
}

describe('DET built-in tables on the documents of tests/test_cli.py', () => {
  it('builds commcare_users exactly as EXPECTED_USERS_RESULTS (test_cli_just_users)', async () => {
    const hq = fakeHq({ user: DET_USERS });
    const sources = await builtinSources(hq.source, 'test', { users: true, locations: false });
    expect(sources.map((s) => [s.resource, s.params, s.tables.map((t) => t.name)])).toEqual([
      ['user', {}, [USERS_TABLE_NAME]],
    ]);
    // Users need nothing fetched up front.
    expect(hq.asked).toEqual([]);
    const tables = await run(sources, hq.source, 'test');
    expect(tables.get('commcare_users')).toEqual(EXPECTED_USERS);
  });

  it('builds commcare_locations with parents as get_expected_locations_results(True)', async () => {
    const hq = fakeHq({ location: detLocations(true), location_type: DET_LOCATION_TYPES });
    const sources = await builtinSources(hq.source, 'test', { users: false, locations: true });
    expect(hq.asked).toEqual(['test/location_type', 'test/location']);
    expect(sources.map((s) => [s.resource, s.tables.map((t) => t.name)])).toEqual([
      ['location', [LOCATIONS_TABLE_NAME]],
    ]);
    const tables = await run(sources, hq.source, 'test');
    expect(tables.get('commcare_locations')).toEqual(expectedLocations(true));
  });

  it('builds commcare_locations without parents as get_expected_locations_results(False)', async () => {
    const hq = fakeHq({ location: detLocations(false), location_type: DET_LOCATION_TYPES });
    const sources = await builtinSources(hq.source, 'test', { users: false, locations: true });
    const tables = await run(sources, hq.source, 'test');
    expect(tables.get('commcare_locations')).toEqual(expectedLocations(false));
  });

  it('returns users before locations when both are asked for, and nothing when neither is', async () => {
    const hq = fakeHq({ user: DET_USERS, location: detLocations(true), location_type: DET_LOCATION_TYPES });
    const both = await builtinSources(hq.source, 'test', { users: true, locations: true });
    expect(both.map((s) => s.resource)).toEqual(['user', 'location']);
    expect(await builtinSources(hq.source, 'test', { users: false, locations: false })).toEqual([]);
  });

  it('declares no data types, as DET declares none for these tables', () => {
    const users = usersTablePlan();
    expect(users.dataTypes).toEqual(users.headings.map(() => null));
    const locations = locationsTablePlan(DET_LOCATION_TYPES, detLocations(true));
    expect(locations.dataTypes).toEqual(locations.headings.map(() => null));
  });
});

describe('commcare_locations on HQ-shaped documents', () => {
  const base = 'https://www.commcarehq.org/a/d/api/v0.5';
  const type = (id: number, code: string, parent: number | null): JsonObject => ({
    id,
    code,
    name: code.toUpperCase(),
    administrative: parent === null,
    parent: parent === null ? null : `${base}/location_type/${parent}/`,
    resource_uri: `${base}/location_type/${id}/`,
  });
  const loc = (pk: number, lid: string, typeId: number, parentLid: string | null): JsonObject => ({
    id: pk,
    location_id: lid,
    location_type: `${base}/location_type/${typeId}/`,
    parent: parentLid === null ? null : `${base}/location/${parentLid}/`,
    resource_uri: `${base}/location/${lid}/`,
    location_data: {},
    created_at: '2021-03-04T05:06:07.123456',
  });

  it('orders ancestor columns deepest first, keeps HQ order within a level and turns hyphens into underscores', () => {
    // HQ lists types in any order; parents may come after children.
    const types = [
      type(3, 'health-post', 2),
      type(1, 'region', null),
      type(2, 'zone', 1),
      type(4, 'chw-site', 2),
    ];
    const table = locationsTablePlan(types, []);
    expect(table.headings.slice(18)).toEqual(['health_post', 'chw_site', 'zone', 'region']);
  });

  it('renders a numeric HQ id as text, in the id column and in location_data’s injected id', () => {
    const table = locationsTablePlan([type(1, 'region', null)], [loc(17, 'r1', 1, null)]);
    const [row] = table.rowsFor(loc(17, 'r1', 1, null));
    expect(row?.[0]).toBe('17');
    expect(row?.[6]).toBe('{"id": "17.location_data"}');
    expect(row?.[1]).toEqual(naive('2021-03-04T05:06:07'));
    expect(row?.slice(14)).toEqual([true, 'region', 'REGION', null, 'r1']);
  });

  it('fills ancestors through a three-level chain and leaves deeper levels empty', () => {
    const types = [type(1, 'region', null), type(2, 'zone', 1), type(3, 'site', 2)];
    const locations = [loc(1, 'r1', 1, null), loc(2, 'z1', 2, 'r1'), loc(3, 's1', 3, 'z1')];
    const table = locationsTablePlan(types, locations);
    const ancestors = locations.map((l) => table.rowsFor(l)[0]!.slice(18));
    expect(ancestors).toEqual([
      [null, null, 'r1'],
      [null, 'z1', 'r1'],
      ['s1', 'z1', 'r1'],
    ]);
  });

  it('stops at an unknown parent, an unknown type or a cycle, with a warning, where DET logs or loops', () => {
    const types = [type(1, 'region', null), type(2, 'zone', 1)];
    const locations = [
      loc(1, 'orphan', 2, 'missing'), // parent not listed
      { ...loc(2, 'typeless', 2, null), location_type: `${base}/location_type/99/` },
      loc(3, 'a', 2, 'b'), // a -> b -> a
      loc(4, 'b', 1, 'a'),
    ];
    const warnings: string[] = [];
    const table = locationsTablePlan(types, locations, (m) => warnings.push(m));
    const rows = locations.map((l) => table.rowsFor(l)[0]!);
    expect(rows.map((r) => r.slice(18))).toEqual([
      ['orphan', null],
      [null, null],
      ['a', 'b'],
      ['a', 'b'],
    ]);
    // The unknown type also empties the location_type_* columns.
    expect(rows[1]!.slice(14, 18)).toEqual([null, null, null, null]);
    expect(warnings).toEqual(
      expect.arrayContaining([
        `Unknown location referenced: ${base}/location/missing/`,
        `Unknown location type referenced: ${base}/location_type/99/`,
        expect.stringContaining('cycle'),
      ]),
    );
  });

  it('treats a location type whose parent type is unknown as a top level, with a warning', () => {
    const warnings: string[] = [];
    const table = locationsTablePlan([type(2, 'zone', 1), type(3, 'site', 2)], [], (m) => warnings.push(m));
    expect(table.headings.slice(18)).toEqual(['site', 'zone']);
    expect(warnings).toEqual([expect.stringContaining('unknown parent type')]);
  });

  it('reports a failed prefetch as BuiltinPrefetchError naming the resource and project', async () => {
    const failing: BuiltinRecordSource = {
      // biome-ignore lint/correctness/useYield: fails before its first record, as a refused request does
      async *records() {
        throw new Error('HTTP 403');
      },
    };
    const err = await builtinSources(failing, 'p1', { users: true, locations: true }).catch((e) => e);
    expect(err).toBeInstanceOf(BuiltinPrefetchError);
    expect(err.message).toContain('location_type of project p1');
    expect(err.message).toContain('HTTP 403');
    expect(err.cause).toBeInstanceOf(Error);
  });
});

describe('DET built-in tables against the sandbox', () => {
  let sandbox: RunningSandbox;
  let client: CommCareClient;
  beforeAll(async () => {
    sandbox = await startSandbox({
      projects: [{ name: 'demo', forms: 10, cases: 10, mobileUsers: 23, groups: 3, locations: 30 }],
    });
    // Small pages so the listings (and the prefetch) take several requests.
    client = createCommCareClient({
      baseUrl: sandbox.url,
      username: DEFAULT_USERNAME,
      apiKey: DEFAULT_API_KEY,
      pageSize: 7,
    });
  });
  afterAll(async () => {
    await sandbox.close();
  });

  it('exports every user and location once, each location with all its ancestors', async () => {
    const sources = await builtinSources(client, 'demo', { users: true, locations: true });
    const tables = await run(sources, client, 'demo');

    const users = tables.get('commcare_users')!;
    const userIds = users.rows.map((r) => r[0]);
    const truthUsers = [...sandbox.dataset.finalState('demo', 'user')].map(([id]) => id);
    expect([...userIds].sort()).toEqual([...truthUsers].sort());
    expect(new Set(userIds).size).toBe(userIds.length);
    const col = (name: string) => users.headings.indexOf(name);
    for (const r of users.rows) {
      expect(r[col('commcare_project')]).toBe('demo');
      expect(r[col('username')]).toEqual(expect.any(String));
    }

    const locations = tables.get('commcare_locations')!;
    const h = locations.headings;
    expect(h.slice(18)).toEqual(['village', 'district', 'state', 'country']);
    const at = (name: string) => h.indexOf(name);
    const ids = locations.rows.map((r) => r[at('location_id')] as string);
    const truthLocations = [...sandbox.dataset.finalState('demo', 'location')].map(([, l]) => l.location_id);
    expect([...ids].sort()).toEqual([...truthLocations].sort());
    expect(new Set(ids).size).toBe(ids.length);

    const byUri = new Map(locations.rows.map((r) => [r[at('resource_uri')], r]));
    const levels = ['country', 'state', 'district', 'village'];
    for (const row of locations.rows) {
      const code = row[at('location_type_code')] as string;
      expect(levels).toContain(code);
      // Walk the parent URIs independently: each ancestor's id sits under its type's column.
      const expected = new Map<string, Cell>(levels.map((l) => [l, null]));
      for (let r: Cell[] | undefined = row; r; r = byUri.get(r[at('parent')])) {
        expected.set(r[at('location_type_code')] as string, r[at('location_id')] ?? null);
      }
      expect(h.slice(18).map((l) => row[at(l)])).toEqual(h.slice(18).map((l) => expected.get(l)));
      // Every level from the country down to the location's own is filled.
      for (const l of levels.slice(0, levels.indexOf(code) + 1))
        expect(row[at(l)]).toEqual(expect.any(String));
      expect(row[at('location_type_name')]).toEqual(expect.any(String));
      expect(row[at('created_at')]).toBeInstanceOf(Date);
      expect(row[at('location_data')]).toMatch(/^\{"population": "\d+"/);
    }
  });
});

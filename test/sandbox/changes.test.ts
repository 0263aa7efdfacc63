import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../functions/common/json';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { DEMO_AUTH, getJson, meta, objects } from './support';

let sandbox: RunningSandbox;
const PROJECT = 'changes';

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 5,
    projects: [{ name: PROJECT, forms: 300, cases: 80, mobileUsers: 6, reindexedShare: 0 }],
  });
});

afterAll(async () => {
  await sandbox.close();
});

async function list(resource: string, query = ''): Promise<JsonObject[]> {
  const { status, body } = await getJson(
    `${sandbox.url}/a/${PROJECT}/api/${resource}/?limit=1000&order_by=indexed_on${query}`,
  );
  expect(status).toBe(200);
  return resource === 'case/v2' ? (body.cases as JsonObject[]) : objects(body);
}

async function caseV2(): Promise<JsonObject[]> {
  const { body } = await getJson(`${sandbox.url}/a/${PROJECT}/api/case/v2/?limit=5000`);
  return body.cases as JsonObject[];
}

function ids(records: readonly JsonObject[], key = 'id'): string[] {
  return records.map((r) => String(r[key]));
}

/** A form the sandbox serves unarchived that nothing below touched yet. */
let nextForm = 0;
async function liveForm(): Promise<JsonObject> {
  const forms = await list('form/v1');
  const form = forms.filter((f) => f.archived === false)[nextForm++ * 7]!;
  return form;
}

describe('sandbox changes (archive, unarchive, delete)', () => {
  it('archives a form: gone without include_archived, served once with archived true and a later indexed_on', async () => {
    const form = await liveForm();
    const id = String(form.id);

    sandbox.apply(PROJECT, { kind: 'archive-form', id });

    expect(ids(await list('form/v1'))).not.toContain(id);
    const all = await list('form/v1', '&include_archived');
    const versions = all.filter((f) => f.id === id);
    expect(versions).toHaveLength(1);
    expect(versions[0]!.archived).toBe(true);
    expect(String(versions[0]!.indexed_on) > String(form.indexed_on)).toBe(true);
    expect(all[all.length - 1]!.id).toBe(id);
  });

  it('archives a form in place when asked (indexed_on unchanged), and unarchives it', async () => {
    const form = await liveForm();
    const id = String(form.id);

    sandbox.apply(PROJECT, { kind: 'archive-form', id, reindex: false });
    const archived = (await list('form/v1', '&include_archived')).filter((f) => f.id === id);
    sandbox.apply(PROJECT, { kind: 'unarchive-form', id });
    const restored = (await list('form/v1')).filter((f) => f.id === id);

    expect(archived).toHaveLength(1);
    expect(archived[0]!.archived).toBe(true);
    expect(archived[0]!.indexed_on).toBe(form.indexed_on);
    expect(restored).toHaveLength(1);
    expect(restored[0]!.archived).toBe(false);
    expect(restored[0]!.form).toEqual(form.form);
  });

  it('deletes an archived form from every list, and refuses to delete one that is not archived', async () => {
    const form = await liveForm();
    const id = String(form.id);

    expect(() => sandbox.apply(PROJECT, { kind: 'delete-form', id })).toThrow(/not archived/);
    sandbox.apply(PROJECT, { kind: 'archive-form', id }, { kind: 'delete-form', id });

    expect(ids(await list('form/v1', '&include_archived'))).not.toContain(id);
    expect(ids(await list('form/v1'))).not.toContain(id);
    expect([...sandbox.dataset.finalState(PROJECT, 'form')].map(([formId]) => formId)).not.toContain(id);
  });

  it('deletes a case from case v1 and v2', async () => {
    const cases = await list('case/v1');
    const id = String(cases[3]!.id);
    const before = meta((await getJson(`${sandbox.url}/a/${PROJECT}/api/case/v1/?limit=1`)).body);

    sandbox.apply(PROJECT, { kind: 'delete-case', id });

    expect(ids(await list('case/v1'))).not.toContain(id);
    expect(ids(await caseV2(), 'case_id')).not.toContain(id);
    const after = meta((await getJson(`${sandbox.url}/a/${PROJECT}/api/case/v1/?limit=1`)).body);
    expect(after.total_count).toBe(Number(before.total_count) - 1);
  });

  it('deletes a mobile worker with its forms and cases', async () => {
    const users = await list('user/v1');
    const userId = String(users[2]!.id);
    const formsBefore = (await list('form/v1', '&include_archived')).filter(
      (f) => (f.metadata as JsonObject).userID === userId,
    );
    expect(formsBefore.length).toBeGreaterThan(0);

    sandbox.apply(PROJECT, { kind: 'delete-worker', userId });

    expect(ids(await list('user/v1'))).not.toContain(userId);
    const forms = await list('form/v1', '&include_archived');
    expect(forms.some((f) => (f.metadata as JsonObject).userID === userId)).toBe(false);
    const owners = (await caseV2()).map((c) => c.owner_id);
    expect(owners).not.toContain(userId);
    expect(sandbox.dataset.count(PROJECT, 'user')).toBe(5);
  });

  it('takes changes over HTTP at POST /a/<project>/sandbox/changes/ with the API key', async () => {
    const form = await liveForm();
    const url = `${sandbox.url}/a/${PROJECT}/sandbox/changes/`;

    const refused = await fetch(url, { method: 'POST', body: '{}' });
    const bad = await fetch(url, {
      method: 'POST',
      headers: DEMO_AUTH,
      body: JSON.stringify({ kind: 'delete-form', id: String(form.id) }),
    });
    const ok = await fetch(url, {
      method: 'POST',
      headers: DEMO_AUTH,
      body: JSON.stringify([{ kind: 'archive-form', id: String(form.id) }]),
    });

    expect(refused.status).toBe(401);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toMatch(/not archived/);
    expect(ok.status).toBe(200);
    expect(ids(await list('form/v1'))).not.toContain(String(form.id));
  });
});

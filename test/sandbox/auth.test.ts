import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';

let sandbox: RunningSandbox;
const project = { name: 'alpha', forms: 30, cases: 10 };

beforeAll(async () => {
  sandbox = await startSandbox({
    projects: [project, { name: 'beta', forms: 30, cases: 10 }, { name: 'gamma', forms: 5, cases: 5 }],
    credentials: [
      { username: 'owner@example.org', apiKey: 'key-all', projects: ['alpha', 'beta'] },
      { username: 'owner@example.org', apiKey: 'key-scoped', domain: 'alpha', projects: ['alpha', 'beta'] },
      { username: 'owner@example.org', apiKey: 'key-expired', expired: true },
      { username: 'owner@example.org', apiKey: 'key-inactive', active: false },
      { username: 'owner@example.org', apiKey: 'key-ip', ipAllowlist: ['10.1.2.3'], projects: ['alpha'] },
    ],
  });
});
afterAll(async () => {
  await sandbox.close();
});

async function call(path: string, authorization?: string, extra: Record<string, string> = {}) {
  const response = await fetch(`${sandbox.url}${path}`, {
    headers: { ...(authorization ? { Authorization: authorization } : {}), ...extra },
  });
  return { status: response.status, text: await response.text(), headers: response.headers };
}

const forms = '/a/alpha/api/form/v1/';

describe('API key authentication', () => {
  it('accepts the ApiKey scheme in any letter case', async () => {
    expect((await call(forms, 'ApiKey owner@example.org:key-all')).status).toBe(200);
    expect((await call(forms, 'apikey owner@example.org:key-all')).status).toBe(200);
  });

  it("fails with 401 and HQ's not-authorized body for each rejected credential", async () => {
    const cases: [string, string, Record<string, string>?][] = [
      ['wrong key', 'ApiKey owner@example.org:nope'],
      ['unknown user', 'ApiKey nobody@example.org:key-all'],
      ['expired key', 'ApiKey owner@example.org:key-expired'],
      ['inactive key', 'ApiKey owner@example.org:key-inactive'],
      ['ip not allowed', 'ApiKey owner@example.org:key-ip', { 'X-Forwarded-For': '10.9.9.9' }],
      ['scoped to another project', 'ApiKey owner@example.org:key-scoped'],
    ];
    for (const [label, header, extra] of cases) {
      const path = label.startsWith('scoped') ? '/a/beta/api/form/v1/' : forms;
      const result = await call(path, header, extra);
      expect(result.status, label).toBe(401);
      expect(result.text, label).toBe('{"error":"not authorized"}');
    }
  });

  it('accepts an allow-listed caller IP from X-Forwarded-For', async () => {
    const result = await call(forms, 'ApiKey owner@example.org:key-ip', {
      'X-Forwarded-For': '10.1.2.3, 10.0.0.1',
    });
    expect(result.status).toBe(200);
  });

  it('fails with 400 for an ApiKey header without a colon', async () => {
    const result = await call(forms, 'ApiKey owner@example.org');
    expect(result.status).toBe(400);
    expect(result.text).toContain('Bad HTTP_AUTHORIZATION header');
  });

  it('fails with 401 and a WWW-Authenticate challenge when no header is sent', async () => {
    const result = await call(forms);
    expect(result.status).toBe(401);
    expect(result.headers.get('www-authenticate')).toBeTruthy();
    expect(result.text).toBe('{"error":"not authorized"}');
  });

  it('does not accept credentials in the query string', async () => {
    const result = await call(`${forms}?username=owner@example.org&api_key=key-all`);
    expect(result.status).toBe(401);
  });

  it('fails with 403 and an empty body for a project the user is not a member of', async () => {
    const result = await call('/a/gamma/api/form/v1/', 'ApiKey owner@example.org:key-all');
    expect(result.status).toBe(403);
    expect(result.text).toBe('');
  });

  it('lets a scoped key reach its own project', async () => {
    expect((await call(forms, 'ApiKey owner@example.org:key-scoped')).status).toBe(200);
  });

  it('accepts the API key as the password of Basic auth', async () => {
    const basic = Buffer.from('owner@example.org:key-all').toString('base64');
    expect((await call(forms, `Basic ${basic}`)).status).toBe(200);
  });
});

describe('user_domains', () => {
  it('lists member projects, and only its own for a scoped key, under both spellings', async () => {
    const all = JSON.parse((await call('/api/v0.5/user_domains/', 'ApiKey owner@example.org:key-all')).text);
    expect(all.objects.map((o: { domain_name: string }) => o.domain_name)).toEqual(['alpha', 'beta']);
    const scoped = JSON.parse(
      (await call('/api/user_domains/v1/', 'ApiKey owner@example.org:key-scoped')).text,
    );
    expect(scoped.objects.map((o: { domain_name: string }) => o.domain_name)).toEqual(['alpha']);
  });

  it('fails with 401 and a plain-text message for a bad key', async () => {
    const result = await call('/api/user_domains/v1/', 'ApiKey owner@example.org:nope');
    expect(result.status).toBe(401);
    expect(result.headers.get('content-type')).toContain('text/plain');
    expect(result.text).toBe('Username or API Key is incorrect, expired or deactivated');
  });
});

describe('request log', () => {
  it('records every request with status and username and never the key', async () => {
    await call(forms, 'ApiKey owner@example.org:key-all');
    await call(forms, 'ApiKey owner@example.org:nope');
    const entries = sandbox.requestLog.filter((e) => e.path === forms);
    expect(entries.some((e) => e.status === 200 && e.username === 'owner@example.org')).toBe(true);
    expect(entries.some((e) => e.status === 401)).toBe(true);
    const serialized = JSON.stringify(sandbox.requestLog);
    for (const key of ['key-all', 'key-scoped', 'nope', 'key-ip']) expect(serialized).not.toContain(key);
  });
});

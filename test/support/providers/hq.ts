/**
 * A tiny CommCare HQ stand-in for key tests (the full HQ sandbox lives in functions/sandbox):
 * `GET /api/user_domains/v1/` and `GET /a/<domain>/api/form/v1/` with `Authorization: ApiKey user:key`.
 * Wrong, deactivated or cross-domain keys get 401 (HQ answers user_domains with text/plain).
 * `addKey`/`deactivateKey` play the person working HQ's API-key page.
 */
import { type RunningServer, send, startServer } from './common';

export interface HqCredential {
  username: string;
  apiKey: string;
  /** Limit the key to one project; absent = all the user's projects. */
  domain?: string;
}

export interface HqKeyServer extends RunningServer {
  addKey(credential: HqCredential): void;
  deactivateKey(apiKey: string): void;
}

export async function startHqKeyServer(options: {
  credentials: HqCredential[];
  projects: string[];
}): Promise<HqKeyServer> {
  const creds = [...options.credentials];
  const server = await startServer((req, _body, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const m = /^ApiKey ([^:]+):(.+)$/i.exec(req.headers.authorization ?? '');
    const cred = m ? creds.find((c) => c.username === m[1] && c.apiKey === m[2]) : undefined;
    const domains = cred ? (cred.domain ? [cred.domain] : options.projects) : [];
    if (path === '/api/user_domains/v1/') {
      if (!cred) return send(res, 401, 'Username or API Key is incorrect, expired or deactivated');
      return send(res, 200, {
        meta: { limit: 20, next: null, offset: 0, previous: null, total_count: domains.length },
        objects: domains.map((d) => ({ domain_name: d, project_name: d })),
      });
    }
    const f = /^\/a\/([^/]+)\/api\/form\/v1\/$/.exec(path);
    if (f) {
      if (!cred || !domains.includes(decodeURIComponent(f[1] ?? ''))) {
        res.writeHead(401);
        res.end();
        return;
      }
      return send(res, 200, {
        meta: { limit: 1, next: null, offset: 0, previous: null, total_count: 0 },
        objects: [],
      });
    }
    return send(res, 404, 'Not Found');
  });
  return Object.assign(server, {
    addKey: (c: HqCredential) => {
      creds.push(c);
    },
    deactivateKey: (apiKey: string) => {
      const i = creds.findIndex((c) => c.apiKey === apiKey);
      if (i >= 0) creds.splice(i, 1);
    },
  });
}

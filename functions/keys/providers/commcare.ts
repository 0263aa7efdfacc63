/**
 * CommCare HQ (assisted). HQ has no API that creates or revokes keys (only the web page
 * `/account/api_keys/`), so `create` and `revoke` ask for a person; `test` proves a key works:
 * `GET /api/user_domains/v1/` (not throttled, lists the projects the key reaches) and then one
 * `limit=1` form request per configured project, which also exercises the IP allow-list and the
 * "API Access" permission. Auth header: `Authorization: ApiKey <username>:<key>`.
 */
import { KeyNotSubmittedError, KeyTestError, ProviderError } from '../errors';
import { type HttpRequest, httpRequest, rejected } from '../http';
import type { IssuedKey, KeyProvider, ListedKey } from '../provider';
import type { CommCareSecret } from '../secret';

const NAME = 'commcare';

export function commcareProvider(
  secret: Pick<CommCareSecret, 'baseUrl' | 'username' | 'projects'>,
): KeyProvider {
  const headers = (key: string) => ({ authorization: `ApiKey ${secret.username}:${key}` });

  function get(key: string, path: string): HttpRequest {
    return { method: 'GET', path, headers: headers(key) };
  }

  return {
    canCreate: false,
    canRevoke: false,
    async create(name: string): Promise<IssuedKey> {
      throw new KeyNotSubmittedError(
        `${NAME}: no key named "${name}" has been submitted; create it on ${secret.baseUrl}/account/api_keys/ ` +
          'and run "ccexport keys submit <credential>"',
      );
    },
    async test(key: string): Promise<void> {
      const domains = get(key, 'api/user_domains/v1/');
      const res = await httpRequest(NAME, secret.baseUrl, domains);
      if (res.status !== 200) {
        throw rejected(
          NAME,
          domains,
          res,
          res.status === 401
            ? ' (check: the key was copied whole, it is active and not expired, and the allow-list holds the egress IPs)'
            : '',
        );
      }
      const body = res.json() as { objects?: { domain_name?: unknown }[] };
      const reachable = new Set((body?.objects ?? []).map((o) => String(o?.domain_name)));
      for (const project of secret.projects) {
        if (!reachable.has(project)) {
          throw new KeyTestError(
            `${NAME}: the key does not reach project "${project}" (user_domains lists ${[...reachable].join(', ') || 'none'})`,
          );
        }
        const probe = get(key, `a/${encodeURIComponent(project)}/api/form/v1/?limit=1`);
        const one = await httpRequest(NAME, secret.baseUrl, probe);
        if (one.status !== 200) {
          throw rejected(
            NAME,
            probe,
            one,
            ` on project "${project}" (check: the key's project scope includes it and the user has "API Access" there)`,
          );
        }
      }
    },
    async revoke(idOrName: string): Promise<void> {
      throw new ProviderError(
        `${NAME}: HQ keys are deactivated by a person: deactivate "${idOrName}" on ${secret.baseUrl}/account/api_keys/`,
      );
    },
    async list(): Promise<ListedKey[]> {
      // HQ lists keys only on its web page.
      return [];
    },
  };
}

/**
 * The one HTTP helper the providers use: global fetch, loopback-friendly, with errors that name the
 * method, path and status and never the headers (which carry keys). axios errors keep the request
 * config, headers included, so a logged axios error would leak the key; fetch errors do not.
 */
import { isTransientStatus, KeyTestError, ProviderError } from './errors';

export interface HttpResponse {
  readonly status: number;
  readonly text: string;
  json(): unknown;
}

export interface HttpRequest {
  readonly method: 'GET' | 'POST';
  /** Path and query, appended to the base URL. Never put a key here. */
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly json?: unknown;
  readonly form?: Record<string, string>;
  readonly timeoutMs?: number;
}

export async function httpRequest(
  provider: string,
  baseUrl: string,
  req: HttpRequest,
): Promise<HttpResponse> {
  const url = new URL(req.path, baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`);
  const headers: Record<string, string> = { accept: 'application/json', ...req.headers };
  let body: string | undefined;
  if (req.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(req.json);
  } else if (req.form) {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(req.form).toString();
  }
  let response: Response;
  try {
    response = await fetch(url, {
      method: req.method,
      headers,
      body,
      signal: AbortSignal.timeout(req.timeoutMs ?? 15_000),
    });
  } catch (cause) {
    throw new ProviderError(`${provider}: ${req.method} ${url.pathname} could not be sent`, {
      cause: cause instanceof Error ? new Error(cause.message) : undefined,
      transient: true,
    });
  }
  const text = await response.text();
  return {
    status: response.status,
    text,
    json() {
      try {
        return JSON.parse(text);
      } catch {
        throw new ProviderError(
          `${provider}: ${req.method} ${url.pathname} answered ${response.status} with a body that is not JSON`,
          { status: response.status },
        );
      }
    },
  };
}

export function unexpected(provider: string, req: HttpRequest, res: HttpResponse): ProviderError {
  const path = req.path.split('?')[0];
  return new ProviderError(`${provider}: ${req.method} ${path} answered HTTP ${res.status} (expected 200)`, {
    status: res.status,
  });
}

/** The error for a key the provider rejected when tested; a 5xx/429 answer is a test that could not run. */
export function rejected(provider: string, req: HttpRequest, res: HttpResponse, hint = ''): KeyTestError {
  const path = req.path.split('?')[0];
  const transient = isTransientStatus(res.status);
  return new KeyTestError(
    transient
      ? `${provider}: the key could not be tested: ${req.method} /${path} answered HTTP ${res.status}; the rotation is retried`
      : `${provider}: the key was rejected: ${req.method} /${path} answered HTTP ${res.status}${hint}`,
    { transient },
  );
}

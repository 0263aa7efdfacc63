/**
 * How a GET reaches HQ: Node's own `http` and `https` modules, or axios when the environment names a
 * proxy.
 *
 * The export sends one kind of request (a GET with three headers, no body, no redirects, the answer read
 * as a stream), and Node's client does that in a few calls. axios did it through its request pipeline
 * (configuration merging, header objects, interceptors, adapters), ~1.4 ms of CPU a request since an
 * export sends too few requests for V8 to optimize any of it, and loading it took ~25 ms of every start.
 * On 50,000 forms to csv, CPU 2.51 → 2.455 s (10 runs each, interleaved); 20,000 forms at 500 ms a
 * page, 3.87 → 3.77 s (6 each), the first requests leaving sooner.
 *
 * What axios gave that Node's client does not is proxies named by the environment (`HTTPS_PROXY`,
 * `HTTP_PROXY`, `ALL_PROXY`, npm's `npm_config_*proxy`, and `NO_PROXY`). Rather than a second proxy
 * implementation, a process with any of these set sends its requests through axios as before (loaded
 * then, not at start), so a network that needs a proxy sees the same requests it always did.
 *
 * Either way the answer comes back as a status, headers in lower case and a body stream, decompressed
 * when HQ compressed it (requests ask for gzip, deflate or br, as axios did), and `identitySize` says
 * whether the stream is the body as sent, of a known length.
 */
import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { pipeline, type Readable } from 'node:stream';
import { createBrotliDecompress, createUnzip } from 'node:zlib';

export interface Answer {
  readonly status: number;
  /** Header names in lower case. */
  readonly headers: Record<string, unknown>;
  /** The body, decompressed when it came compressed. */
  readonly body: Readable;
  /** The body's size when the stream is the body as sent and the answer gave its `Content-Length`. */
  readonly identitySize: number | null;
}

/** Sends a GET; rejects on a network error or when `signal` aborts (which also ends the body stream). */
export type Transport = (url: string, headers: OutgoingHttpHeaders, signal: AbortSignal) => Promise<Answer>;

/** Environment variables that name a proxy to axios (its `proxy-from-env`) or to npm. */
const PROXY_VARIABLE = /^(npm_config_)?((https?|all)_)?proxy$/i;

/** True when `env` names a proxy for requests (any of the variables axios or npm read, set non-empty). */
export function proxyNamedIn(env: NodeJS.ProcessEnv): boolean {
  return Object.entries(env).some(([name, value]) => PROXY_VARIABLE.test(name) && Boolean(value?.trim()));
}

/** Node's client: the global agents (keep-alive since Node 19), no redirects followed, compression asked for. */
export const nodeTransport: Transport = (url, headers, signal) =>
  new Promise<Answer>((resolve, reject) => {
    const send = url.startsWith('https:') ? httpsRequest : httpRequest;
    const request = send(
      url,
      { method: 'GET', headers: { ...headers, 'accept-encoding': 'gzip, deflate, br' }, signal },
      (response) => resolve(answerOf(response)),
    );
    request.on('error', reject);
    request.end();
  });

function answerOf(response: IncomingMessage): Answer {
  const status = response.statusCode ?? 0;
  const headers = response.headers as Record<string, unknown>;
  const encoding = String(headers['content-encoding'] ?? '')
    .trim()
    .toLowerCase();
  // `createUnzip` reads gzip and zlib-wrapped deflate alike, telling them apart by their header.
  const inflate =
    encoding === 'gzip' || encoding === 'x-gzip' || encoding === 'deflate'
      ? createUnzip()
      : encoding === 'br'
        ? createBrotliDecompress()
        : null;
  if (inflate === null) return { status, headers, body: response, identitySize: declaredLength(headers) };
  // A failure on either side (the connection, the compressed data) ends the stream read with it.
  return { status, headers, body: pipeline(response, inflate, () => undefined), identitySize: null };
}

/** The body's length the answer declares (`Content-Length`), or null without a usable one. */
function declaredLength(headers: Record<string, unknown>): number | null {
  const length = Number(headers['content-length']);
  return Number.isSafeInteger(length) && length > 0 ? length : null;
}

/**
 * axios, for a process whose environment names a proxy: it follows the proxy variables (and `NO_PROXY`)
 * the way it always did here. Loaded on the first request.
 */
export function axiosTransport(timeoutMs: number): Transport {
  let client: Promise<import('axios').AxiosInstance> | null = null;
  return async (url, headers, signal) => {
    client ??= import('axios').then(({ default: axios }) =>
      axios.create({
        // A socket idle timeout in Node; `signal` bounds the whole exchange, body included.
        timeout: timeoutMs,
        maxRedirects: 0,
        // The body is read and limited by the caller (after decompression).
        maxContentLength: -1,
        responseType: 'stream',
        transformResponse: [(data: unknown) => data],
        validateStatus: () => true,
      }),
    );
    const response = await (await client).get<Readable>(url, {
      headers: headers as Record<string, string>,
      signal,
    });
    const message = (response.request as { res?: unknown } | undefined)?.res;
    const answerHeaders = response.headers as Record<string, unknown>;
    return {
      status: response.status,
      headers: answerHeaders,
      body: response.data,
      // axios decompresses through a stream of its own: only the response message itself is the body as sent.
      identitySize: message !== undefined && response.data === message ? declaredLength(answerHeaders) : null,
    };
  };
}

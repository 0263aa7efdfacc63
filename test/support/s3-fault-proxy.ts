/**
 * A loopback HTTP proxy in front of moto that injects S3 faults: for each request a rule decides to
 * pass it on, to fail it with a 500 without forwarding it (`fail`), or to forward it and answer 500
 * although S3 did the work (`lose-response`, the fault where a write went through and its answer was
 * lost, so the SDK retries a request that already took effect).
 */
import { createServer, type IncomingHttpHeaders, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { S3Client } from '@aws-sdk/client-s3';

export interface ProxiedRequest {
  readonly method: string;
  /** Path and query, e.g. `/bucket/prefix/checkpoints/k.p.lease.json?x-id=PutObject`. */
  readonly url: string;
  /** The key part of a path-style URL (`prefix/checkpoints/...`), URL-decoded, without the query. */
  readonly key: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** `deny`: a 403 AccessDenied without forwarding, as S3 answers credentials without the permission. */
export type FaultAction = 'pass' | 'fail' | 'lose-response' | 'deny';

export interface S3FaultProxy {
  /** An S3 client that talks to moto through the proxy (SDK defaults otherwise: three attempts). */
  readonly client: S3Client;
  readonly endpoint: string;
  /** Requests that got an injected fault, in order. */
  readonly injected: { action: FaultAction; method: string; key: string }[];
  /** Every request seen, in order. */
  readonly seen: { method: string; key: string; status: number }[];
  close(): Promise<void>;
}

function keyOf(url: string): string {
  const path = url.split('?')[0] ?? '';
  // Path style: /<bucket>/<key>
  return decodeURIComponent(path.split('/').slice(2).join('/'));
}

const INJECTED_500 =
  '<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>' +
  '<Message>We encountered an internal error. Please try again. (injected)</Message></Error>';

export interface S3FaultProxyHooks {
  /**
   * Called once moto has answered a passed request, before the answer goes back; `drop` closes the
   * connection instead (what a client killed at that moment sees: its write took effect, no answer).
   */
  readonly answered?: (req: ProxiedRequest, status: number) => Promise<'answer' | 'drop'>;
}

export async function startS3FaultProxy(
  target: string,
  decide: (req: ProxiedRequest) => FaultAction,
  hooks: S3FaultProxyHooks = {},
): Promise<S3FaultProxy> {
  const upstream = new URL(target);
  const injected: S3FaultProxy['injected'] = [];
  const seen: S3FaultProxy['seen'] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const method = req.method ?? 'GET';
      const url = req.url ?? '/';
      const key = keyOf(url);
      const action = decide({ method, url, key, headers: req.headers, body });
      const answer500 = () => {
        injected.push({ action, method, key });
        seen.push({ method, key, status: 500 });
        res.writeHead(500, { 'Content-Type': 'application/xml' });
        res.end(INJECTED_500);
      };
      if (action === 'fail') {
        answer500();
        return;
      }
      if (action === 'deny') {
        injected.push({ action, method, key });
        seen.push({ method, key, status: 403 });
        res.writeHead(403, { 'Content-Type': 'application/xml' });
        res.end(
          '<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>',
        );
        return;
      }
      // The body is forwarded whole, with its length: no chunked encoding, no 100-continue.
      const { expect: _expect, 'transfer-encoding': _chunked, ...headers } = req.headers;
      const forward = request(
        {
          host: upstream.hostname,
          port: upstream.port,
          method,
          path: url,
          headers: { ...headers, 'content-length': String(body.length) },
        },
        (up) => {
          const upChunks: Buffer[] = [];
          up.on('data', (c: Buffer) => upChunks.push(c));
          up.on('end', () => {
            if (action === 'lose-response') {
              answer500();
              return;
            }
            seen.push({ method, key, status: up.statusCode ?? 502 });
            const answer = () => {
              res.writeHead(up.statusCode ?? 502, up.headers);
              res.end(Buffer.concat(upChunks));
            };
            if (!hooks.answered) {
              answer();
              return;
            }
            hooks
              .answered({ method, url, key, headers: req.headers, body }, up.statusCode ?? 502)
              .then((what) => (what === 'drop' || res.destroyed ? res.destroy() : answer()))
              .catch(() => res.destroy());
          });
        },
      );
      forward.on('error', () => res.destroy());
      forward.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const endpoint = `http://127.0.0.1:${port}`;
  const client = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
  });
  return {
    client,
    endpoint,
    injected,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        client.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A decision that applies `action` to the `nth` (1-based) request matching `match`, once. */
export function nthMatching(
  match: (req: ProxiedRequest) => boolean,
  nth: number,
  action: FaultAction,
): (req: ProxiedRequest) => FaultAction {
  let count = 0;
  return (req) => {
    if (!match(req)) return 'pass';
    count++;
    return count === nth ? action : 'pass';
  };
}

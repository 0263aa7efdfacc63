/** Shared plumbing of the local provider servers (loopback only, for tests and demos). */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RunningServer {
  readonly url: string;
  close(): Promise<void>;
  /** Makes the next `times` requests whose path starts with `pathPrefix` answer `status`. */
  failNext(pathPrefix: string, status: number, times?: number): void;
  /** Requests seen, as `METHOD /path` (no headers, no bodies: they carry keys). */
  readonly requests: string[];
}

export type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;

export async function startServer(handler: Handler): Promise<RunningServer> {
  const failures: { prefix: string; status: number; left: number }[] = [];
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      requests.push(`${req.method} ${path}`);
      const failure = failures.find((f) => f.left > 0 && path.startsWith(f.prefix));
      if (failure) {
        failure.left -= 1;
        send(res, failure.status, { error: 'injected failure' });
        return;
      }
      try {
        handler(req, Buffer.concat(chunks).toString('utf8'), res);
      } catch {
        send(res, 500, { error: 'server error' });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    failNext(prefix, status, times = 1) {
      failures.push({ prefix, status, left: times });
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export function send(res: ServerResponse, status: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': typeof body === 'string' ? 'text/plain' : 'application/json' });
  res.end(text);
}

export function bearer(value: string | string[] | undefined): string | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  const m = /^Bearer (.+)$/i.exec(v ?? '');
  return m?.[1];
}

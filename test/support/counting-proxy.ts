/**
 * A front door for an HQ stand-in (the sandbox or a fake): it holds every data request for a latency
 * before passing it on, and counts each project's data requests in flight, as HQ would see them. Tests
 * and the DET side-by-side benchmark judge "requests in flight per project" by this count, not by
 * what the exporter says it did.
 */
import { createServer, request as httpRequest } from 'node:http';

export interface CountingProxy {
  readonly url: string;
  /** The most data requests of one project in flight at once since the last `reset`. */
  maxInFlight(): number;
  /** Data requests since the last `reset`, in the order they arrived (path and query). */
  requests(): readonly string[];
  reset(): void;
  close(): Promise<void>;
}

/** Starts a proxy on a free loopback port in front of `target` (an http:// base URL). */
export async function startCountingProxy(target: string, latencyMs = 0): Promise<CountingProxy> {
  const upstream = new URL(target);
  const inFlight = new Map<string, number>();
  let max = 0;
  let seen: string[] = [];
  const server = createServer((req, res) => {
    const project = /^\/a\/([^/]+)\/api\//.exec(req.url ?? '')?.[1] ?? null;
    if (project !== null) {
      seen.push(req.url ?? '');
      const now = (inFlight.get(project) ?? 0) + 1;
      inFlight.set(project, now);
      max = Math.max(max, now);
      res.on('close', () => inFlight.set(project, (inFlight.get(project) ?? 1) - 1));
    }
    const forward = () => {
      const out = httpRequest(
        {
          host: upstream.hostname,
          port: upstream.port,
          path: req.url,
          method: req.method,
          headers: req.headers,
        },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      out.on('error', () => res.destroy());
      req.pipe(out);
    };
    if (project !== null && latencyMs > 0) setTimeout(forward, latencyMs);
    else forward();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    maxInFlight: () => max,
    requests: () => seen,
    reset: () => {
      max = 0;
      seen = [];
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

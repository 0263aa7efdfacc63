/**
 * A front door for an HQ stand-in (the sandbox or a fake): it holds every data request for a latency
 * before passing it on, and counts each project's data requests in flight, as HQ would see them. Tests
 * and the DET side-by-side benchmark judge "requests in flight per project" by this count, not by
 * what the exporter says it did. It also keeps when each data request arrived, was passed on and was
 * answered, from which the benchmark reads an exporter's critical path (see bench/det.ts).
 */
import { createServer, request as httpRequest } from 'node:http';
import { performance } from 'node:perf_hooks';

/** One data request as the proxy saw it; times are `performance.now()` of the proxy's process. */
export interface ProxiedRequest {
  /** Path and query. */
  readonly path: string;
  readonly arrivedAt: number;
  /** Passed on to the stand-in, after the latency; null until then. */
  forwardedAt: number | null;
  /** The answer's last byte written to the exporter (the response closed); null until then. */
  endedAt: number | null;
}

export interface CountingProxy {
  readonly url: string;
  /** The most data requests of one project in flight at once since the last `reset`. */
  maxInFlight(): number;
  /** Data requests since the last `reset`, in the order they arrived (path and query). */
  requests(): readonly string[];
  /** The same requests with their times. */
  timeline(): readonly ProxiedRequest[];
  reset(): void;
  close(): Promise<void>;
}

/** Starts a proxy on a free loopback port in front of `target` (an http:// base URL). */
export async function startCountingProxy(target: string, latencyMs = 0): Promise<CountingProxy> {
  const upstream = new URL(target);
  const inFlight = new Map<string, number>();
  let max = 0;
  let seen: ProxiedRequest[] = [];
  const server = createServer((req, res) => {
    const project = /^\/a\/([^/]+)\/api\//.exec(req.url ?? '')?.[1] ?? null;
    const entry: ProxiedRequest | null =
      project === null
        ? null
        : { path: req.url ?? '', arrivedAt: performance.now(), forwardedAt: null, endedAt: null };
    if (project !== null && entry !== null) {
      seen.push(entry);
      const now = (inFlight.get(project) ?? 0) + 1;
      inFlight.set(project, now);
      max = Math.max(max, now);
      res.on('close', () => {
        entry.endedAt = performance.now();
        inFlight.set(project, (inFlight.get(project) ?? 1) - 1);
      });
    }
    const forward = () => {
      if (entry) entry.forwardedAt = performance.now();
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
    requests: () => seen.map((r) => r.path),
    timeline: () => seen,
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

/**
 * A front door for an HQ stand-in (the sandbox or a fake): it holds every data request's answer until a
 * latency has passed since the request arrived, and counts each project's data requests in flight, as HQ
 * would see them. Tests and the DET side-by-side benchmark judge "requests in flight per project" by
 * this count, not by what the exporter says it did. It also keeps when each data request arrived, was
 * answered by the stand-in and was answered to the exporter, from which the benchmark reads an
 * exporter's critical path (see bench/det.ts).
 *
 * The latency models a server that takes that long over a page: the request goes to the stand-in at
 * once, and its answer leaves no sooner than `latencyMs` after the request arrived (later only when the
 * stand-in itself took longer). So "every page answered after 500 ms" means 500 ms, not 500 ms plus the
 * stand-in's own serving: that serving runs on the exporter's machine, and at 4 requests at once it
 * took ~0.1 s on two shared cores (0.06 s at one), a cost HQ's own servers do not put on their clients.
 */
import { createServer, request as httpRequest } from 'node:http';
import { performance } from 'node:perf_hooks';
import { listenOnLoopback } from './loopback';

/** One data request as the proxy saw it; times are `performance.now()` of the proxy's process. */
export interface ProxiedRequest {
  /** Path and query. */
  readonly path: string;
  readonly arrivedAt: number;
  /** Passed on to the stand-in (on arrival); null until then. */
  forwardedAt: number | null;
  /** The stand-in's answer began (its status line and headers came back); null until then. */
  servedAt: number | null;
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
        : {
            path: req.url ?? '',
            arrivedAt: performance.now(),
            forwardedAt: null,
            servedAt: null,
            endedAt: null,
          };
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
        const answerAt = performance.now();
        if (entry) entry.servedAt = answerAt;
        const pass = () => {
          if (res.destroyed) {
            answer.destroy();
            return;
          }
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        };
        // Held (the stand-in's body waiting in its socket) until the latency has passed since arrival.
        const wait = entry !== null && latencyMs > 0 ? entry.arrivedAt + latencyMs - answerAt : 0;
        if (wait > 0) setTimeout(pass, wait);
        else pass();
      },
    );
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  const { url, close } = await listenOnLoopback(server);
  return {
    url,
    maxInFlight: () => max,
    requests: () => seen.map((r) => r.path),
    timeline: () => seen,
    reset: () => {
      max = 0;
      seen = [];
    },
    close,
  };
}

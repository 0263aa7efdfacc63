/**
 * The HQ stand-in's front door (test/support/counting-proxy.ts) models "every page answered after N ms"
 * as a server spending N ms on a page: the stand-in is asked at once and its answer leaves N ms after the
 * request arrived, not N ms plus the stand-in's own serving.
 */
import { createServer, get, type IncomingMessage, type Server } from 'node:http';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { type CountingProxy, startCountingProxy } from '../support/counting-proxy';

let upstream: Server | null = null;
let proxy: CountingProxy | null = null;

afterEach(async () => {
  await proxy?.close();
  upstream?.closeAllConnections();
  await new Promise<void>((resolve) => (upstream ? upstream.close(() => resolve()) : resolve()));
  proxy = null;
  upstream = null;
});

/** A stand-in that tells when a request reaches it and answers at once. */
async function startUpstream(onRequest: () => void): Promise<string> {
  upstream = createServer((_req, res) => {
    onRequest();
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end('{"meta": {}, "objects": []}');
  });
  await new Promise<void>((resolve) => upstream!.listen(0, '127.0.0.1', resolve));
  const address = upstream.address();
  return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
}

function send(url: string): { answered: Promise<IncomingMessage>; failed: Promise<void> } {
  let fail: () => void = () => undefined;
  const failed = new Promise<void>((resolve) => {
    fail = resolve;
  });
  const answered = new Promise<IncomingMessage>((resolve) => {
    get(url, (res) => {
      res.resume();
      res.on('end', () => resolve(res));
    }).on('error', fail);
  });
  return { answered, failed };
}

describe('counting proxy latency', () => {
  it('passes a data request on at once and holds the answer until the latency has passed', async () => {
    let reached: () => void = () => undefined;
    const reachedUpstream = new Promise<void>((resolve) => {
      reached = resolve;
    });
    proxy = await startCountingProxy(await startUpstream(() => reached()), 60_000);
    const { answered, failed } = send(`${proxy.url}/a/clinic/api/v0.5/form/?limit=1`);
    let gotAnswer = false;
    void answered.then(() => {
      gotAnswer = true;
    });
    // Sent on with no wait: a proxy that waited the minute first would not get here.
    await reachedUpstream;
    await new Promise<void>((resolve) => {
      const check = () => (proxy!.timeline()[0]?.servedAt != null ? resolve() : setTimeout(check, 5));
      check();
    });
    const [entry] = proxy.timeline();
    expect(entry!.forwardedAt).not.toBeNull();
    expect(entry!.servedAt).not.toBeNull();
    // The stand-in has answered; the exporter has not been answered and the request is still in flight.
    expect(entry!.endedAt).toBeNull();
    expect(gotAnswer).toBe(false);
    expect(proxy.maxInFlight()).toBe(1);
    await proxy.close();
    proxy = null;
    await failed;
    expect(gotAnswer).toBe(false);
  }, 20_000);

  it('answers no sooner than the latency after the request arrived', async () => {
    proxy = await startCountingProxy(await startUpstream(() => undefined), 300);
    const sent = performance.now();
    const { answered } = send(`${proxy.url}/a/clinic/api/v0.5/form/?limit=1`);
    const res = await answered;
    expect(res.statusCode).toBe(200);
    expect(performance.now() - sent).toBeGreaterThanOrEqual(300);
    const [entry] = proxy.timeline();
    expect(entry!.endedAt! - entry!.arrivedAt).toBeGreaterThanOrEqual(299);
  });

  it('passes requests outside a project on without latency and without counting them', async () => {
    proxy = await startCountingProxy(await startUpstream(() => undefined), 60_000);
    const res = await send(`${proxy.url}/api/user_domains/v1/`).answered;
    expect(res.statusCode).toBe(200);
    expect(proxy.requests()).toEqual([]);
  }, 20_000);
});

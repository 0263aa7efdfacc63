import { createServer } from 'node:http';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import {
  axiosTransport,
  nodeTransport,
  proxyNamedIn,
  type Transport,
} from '../../functions/commcare/transport';
import { type ForwardProxy, startForwardProxy } from '../support/forward-proxy';
import { type ListeningServer, listenOnLoopback } from '../support/loopback';

const BODY = JSON.stringify({ meta: { next: null }, objects: [{ id: 'a', text: 'x'.repeat(5000) }] });
const ENCODERS: Record<string, (bytes: Buffer) => Buffer> = {
  gzip: gzipSync,
  deflate: deflateSync,
  br: brotliCompressSync,
};

let server: ListeningServer | null = null;
let proxy: ForwardProxy | null = null;
const savedEnv = { ...process.env };

afterEach(async () => {
  await proxy?.close();
  proxy = null;
  await server?.close();
  server = null;
  for (const name of Object.keys(process.env)) if (!(name in savedEnv)) delete process.env[name];
  Object.assign(process.env, savedEnv);
});

/** A server answering BODY, compressed as the `encoding` query parameter says; the Accept-Encoding it got. */
async function startServer(): Promise<{ url: string; accepted: string[] }> {
  const accepted: string[] = [];
  const http = createServer((req, res) => {
    accepted.push(String(req.headers['accept-encoding'] ?? ''));
    const encoding = new URL(req.url ?? '/', 'http://x').searchParams.get('encoding');
    const plain = Buffer.from(BODY);
    const bytes = encoding ? ENCODERS[encoding]!(plain) : plain;
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': String(bytes.length),
      ...(encoding ? { 'content-encoding': encoding } : {}),
    });
    res.end(bytes);
  });
  server = await listenOnLoopback(http);
  return { url: server.url, accepted };
}

async function text(transport: Transport, url: string) {
  const answer = await transport(url, { accept: 'application/json' }, AbortSignal.timeout(5000));
  const chunks: Buffer[] = [];
  for await (const chunk of answer.body) chunks.push(chunk as Buffer);
  return { answer, text: Buffer.concat(chunks).toString('utf8') };
}

describe('proxies named by the environment', () => {
  it('are the variables axios and npm read, set to something', () => {
    for (const name of [
      'HTTPS_PROXY',
      'http_proxy',
      'ALL_PROXY',
      'npm_config_proxy',
      'npm_config_https_proxy',
    ])
      expect(proxyNamedIn({ [name]: 'http://proxy.example:3128' })).toBe(true);
    expect(proxyNamedIn({ HTTPS_PROXY: ' ' })).toBe(false);
    expect(proxyNamedIn({ NO_PROXY: '*' })).toBe(false);
    expect(proxyNamedIn({ PROXY_PASS: 'x', HOME: '/home/me' })).toBe(false);
  });
});

describe("Node's client", () => {
  it('asks for compression and reads gzip, deflate and br answers; a plain one keeps its length', async () => {
    const { url, accepted } = await startServer();
    for (const encoding of ['gzip', 'deflate', 'br']) {
      const { answer, text: body } = await text(nodeTransport, `${url}/?encoding=${encoding}`);
      expect(body).toBe(BODY);
      expect(answer.identitySize).toBeNull();
    }
    const plain = await text(nodeTransport, `${url}/`);
    expect(plain.text).toBe(BODY);
    expect(plain.answer.identitySize).toBe(Buffer.byteLength(BODY));
    expect(plain.answer.headers['content-type']).toBe('application/json');
    expect(accepted.every((value) => /gzip/.test(value) && /br/.test(value))).toBe(true);
  });

  it('rejects when its signal aborts before the answer', async () => {
    server = await listenOnLoopback(createServer(() => {})); // never answers
    await expect(nodeTransport(`${server.url}/`, {}, AbortSignal.timeout(50))).rejects.toMatchObject({
      name: 'AbortError',
    });
  });
});

describe('axios, when a proxy is named', () => {
  it('sends the request through the proxy HTTP_PROXY names, and reads the answer as Node does', async () => {
    const { url } = await startServer();
    proxy = await startForwardProxy();
    process.env.HTTP_PROXY = proxy.url;
    delete process.env.NO_PROXY;
    delete process.env.no_proxy;
    const gzip = await text(axiosTransport(5000), `${url}/a/demo/api/form/v1/?encoding=gzip`);
    expect(gzip.text).toBe(BODY);
    expect(gzip.answer.identitySize).toBeNull();
    const plain = await text(axiosTransport(5000), `${url}/a/demo/api/form/v1/`);
    expect(plain.answer.identitySize).toBe(Buffer.byteLength(BODY));
    expect(proxy.seen).toEqual([`${url}/a/demo/api/form/v1/?encoding=gzip`, `${url}/a/demo/api/form/v1/`]);
  });
});

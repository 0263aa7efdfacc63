/**
 * A plain HTTP forward proxy on loopback, the kind `HTTP_PROXY` names: it takes absolute-form requests
 * (`GET http://host:port/path`), sends them on and pipes the answers back, and keeps the URLs it was
 * asked for. No CONNECT (https through a tunnel): the servers behind it in tests are plain http.
 */
import { createServer, type IncomingMessage, request, type ServerResponse } from 'node:http';
import { listenOnLoopback } from './loopback';

/** Sends `req` on to `host:port` at `path`, as it came, and pipes the answer back to `res`. */
export function passOn(
  req: IncomingMessage,
  res: ServerResponse,
  target: { readonly hostname: string; readonly port: string },
  path: string,
): void {
  const out = request(
    { host: target.hostname, port: target.port, path, method: req.method, headers: req.headers },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    },
  );
  out.on('error', () => res.destroy());
  req.pipe(out);
}

export interface ForwardProxy {
  readonly url: string;
  /** Absolute URLs of the requests it forwarded, in order. */
  readonly seen: string[];
  close(): Promise<void>;
}

export async function startForwardProxy(): Promise<ForwardProxy> {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    const target = new URL(req.url ?? '');
    seen.push(target.href);
    passOn(req, res, target, target.pathname + target.search);
  });
  const { url, close } = await listenOnLoopback(server);
  return { url, seen, close };
}

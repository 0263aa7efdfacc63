/** A fake HQ answering whatever body a test gives, and file listing (query workbooks: test/support/query-workbook.ts). */
import { existsSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

/** Every file under a folder (recursively); none when it does not exist. */
export function filesUnder(folder: string): string[] {
  if (!existsSync(folder)) return [];
  return readdirSync(folder, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

/** A loopback server standing in for HQ that answers every request with the given status and body. */
export async function fakeHq(answer: () => { status: number; body: string | Buffer; type?: string }) {
  let requests = 0;
  const server: Server = createServer((req, res) => {
    requests++;
    req.resume();
    const { status, body, type } = answer();
    res.writeHead(status, {
      'Content-Type': type ?? 'application/json',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests: () => requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A one-page tastypie answer with the given objects (a raw JSON text, so tests can put anything in it). */
export function envelope(objectsJson: string, count = 1): string {
  return `{"meta": {"limit": 1000, "next": null, "offset": 0, "previous": null, "total_count": ${count}}, "objects": ${objectsJson}}`;
}

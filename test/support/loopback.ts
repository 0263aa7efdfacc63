/** Test servers on loopback ports the OS picks. */
import type { Server } from 'node:http';

export interface ListeningServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** Closes the server, ending its open (keep-alive) connections too. */
  close(): Promise<void>;
}

/** Starts `server` on a free loopback port. */
export async function listenOnLoopback(server: Server): Promise<ListeningServer> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

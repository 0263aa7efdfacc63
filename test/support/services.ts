/**
 * Real services for integration tests: a throwaway PostgreSQL 15 cluster and a moto_server (S3 and
 * Secrets Manager wire protocols), both on loopback ports chosen by the OS. Started once per `npm test`
 * by the vitest global setup; tests read their addresses with `inject()`.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function postgresBinDir(): string {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root))
    throw new Error('PostgreSQL is not installed (expected /usr/lib/postgresql/<version>/bin)');
  const versions = readdirSync(root).sort((a, b) => Number(b) - Number(a));
  for (const version of versions) {
    const bin = join(root, version, 'bin');
    if (existsSync(join(bin, 'pg_ctl'))) return bin;
  }
  throw new Error('PostgreSQL is installed but pg_ctl was not found under /usr/lib/postgresql');
}

/** Runs a command as the `postgres` user when we are root (the server refuses to run as root). */
function runAsPostgres(command: string, args: string[]): void {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (isRoot) {
    const quoted = [command, ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
    execFileSync('su', ['postgres', '-s', '/bin/sh', '-c', quoted], { stdio: 'pipe' });
  } else {
    execFileSync(command, args, { stdio: 'pipe' });
  }
}

export interface RunningPostgres {
  readonly url: string;
  readonly port: number;
  stop(): void;
}

export interface PostgresOptions {
  /** Serve TLS with this certificate and key (PEM); without it the server speaks plain TCP only. */
  readonly tls?: { readonly certificate: string; readonly key: string };
}

export async function startPostgres(options: PostgresOptions = {}): Promise<RunningPostgres> {
  const bin = postgresBinDir();
  const dir = mkdtempSync(join(tmpdir(), 'ccexport-pg-'));
  chmodSync(dir, 0o777);
  const port = await freePort();
  let tlsFlags = '';
  if (options.tls) {
    // The server reads its key only if the server's user owns it and nobody else can read it.
    const cert = join(dir, 'server.crt');
    const key = join(dir, 'server.key');
    writeFileSync(cert, options.tls.certificate);
    writeFileSync(key, options.tls.key, { mode: 0o600 });
    if (typeof process.getuid === 'function' && process.getuid() === 0) {
      execFileSync('chown', ['postgres', cert, key]);
    }
    tlsFlags = ` -c ssl=on -c ssl_cert_file=${cert} -c ssl_key_file=${key}`;
  }
  const data = join(dir, 'data');
  runAsPostgres(join(bin, 'initdb'), [
    '-D',
    data,
    '-A',
    'trust',
    '-U',
    'postgres',
    '--no-sync',
    '-E',
    'UTF8',
  ]);
  runAsPostgres(join(bin, 'pg_ctl'), [
    '-D',
    data,
    '-l',
    join(dir, 'server.log'),
    '-o',
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200${tlsFlags}`,
    '-w',
    'start',
  ]);
  return {
    url: `postgresql://postgres@127.0.0.1:${port}/postgres`,
    port,
    stop() {
      try {
        runAsPostgres(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', 'stop']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

export interface RunningMoto {
  readonly endpoint: string;
  stop(): void;
}

export async function startMoto(): Promise<RunningMoto> {
  const port = await freePort();
  const child: ChildProcess = spawn('moto_server', ['-H', '127.0.0.1', '-p', String(port)], {
    stdio: 'ignore',
    detached: false,
  });
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const response = await fetch(`${endpoint}/moto-api/`);
      if (response.status < 500) break;
    } catch {
      // not up yet
    }
    if (child.exitCode !== null) throw new Error(`moto_server exited with code ${child.exitCode}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('moto_server did not start within 20 s');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    endpoint,
    stop() {
      child.kill('SIGTERM');
    },
  };
}

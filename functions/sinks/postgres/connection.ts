import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import type pg from 'pg';
import { SinkConfigError, SinkError } from '../errors';
import type { DatabaseConnection, SslMode } from '../types';

/**
 * The few operations the SQL sink needs, over node-postgres (a server) or PGlite (embedded), so both
 * run the same SQL. Only COPY differs: pg streams `COPY ... FROM STDIN`, PGlite reads `/dev/blob`
 * (its adapter is in `pglite.ts`).
 */
export interface SqlConnection {
  readonly kind: 'postgresql' | 'pglite';
  query<R = Record<string, unknown>>(
    text: string,
    params?: readonly unknown[],
  ): Promise<{ rows: R[]; rowCount: number }>;
  /** COPY CSV (UTF-8), given in chunks of whole lines, into `target` (already quoted, with its column list). */
  copyCsv(target: string, chunks: readonly (string | Uint8Array)[]): Promise<void>;
  close(): Promise<void>;
}

const SSL_MODES: readonly SslMode[] = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'];

/** node-postgres connection settings; `ssl` is what node's TLS gets (or false). */
export interface PgClientSettings {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password?: string;
  readonly database: string;
  readonly ssl: false | ConnectionOptions;
  /** `prefer`/`allow`: retry without TLS when the server has none (libpq's behaviour). */
  readonly fallbackToPlain: boolean;
  /** `user@host:port/db`, for messages (never the password). */
  readonly description: string;
}

/**
 * libpq's `sslmode` as node TLS options. `require` encrypts without checking the certificate (unless
 * a CA file is given: libpq then verifies the chain, like `verify-ca`); `verify-ca` checks the chain
 * but not the host name; `verify-full` checks both.
 */
export function tlsOptions(
  sslmode: SslMode,
  caFile?: string,
  readFile: (path: string) => string = (p) => readFileSync(p, 'utf8'),
): { ssl: false | ConnectionOptions; fallbackToPlain: boolean } {
  if (!SSL_MODES.includes(sslmode)) {
    throw new SinkConfigError(`sslmode must be one of ${SSL_MODES.join(', ')}, received "${sslmode}"`);
  }
  let ca: string | undefined;
  if (caFile) {
    try {
      ca = readFile(caFile);
    } catch (error) {
      throw new SinkConfigError(`Cannot read the CA bundle file "${caFile}"`, { cause: error });
    }
  }
  switch (sslmode) {
    case 'disable':
      return { ssl: false, fallbackToPlain: false };
    case 'allow':
    case 'prefer':
      return { ssl: { rejectUnauthorized: false }, fallbackToPlain: true };
    case 'require':
      return ca
        ? {
            ssl: { ca, rejectUnauthorized: true, checkServerIdentity: () => undefined },
            fallbackToPlain: false,
          }
        : { ssl: { rejectUnauthorized: false }, fallbackToPlain: false };
    case 'verify-ca':
      return {
        ssl: { ...(ca ? { ca } : {}), rejectUnauthorized: true, checkServerIdentity: () => undefined },
        fallbackToPlain: false,
      };
    case 'verify-full':
      return { ssl: { ...(ca ? { ca } : {}), rejectUnauthorized: true }, fallbackToPlain: false };
  }
}

/** Settings from a `postgresql://` URL (sslmode and sslrootcert honoured) or an RDS-shaped object. */
export function pgSettings(source: string | DatabaseConnection): PgClientSettings {
  let conn: DatabaseConnection;
  if (typeof source === 'string') {
    let url: URL;
    try {
      url = new URL(source);
    } catch (error) {
      throw new SinkConfigError(
        'Expected a URL like postgresql://user:password@host:5432/dbname (not shown: it may hold a password)',
        {
          cause: error instanceof Error ? new Error(error.name) : undefined,
        },
      );
    }
    if (url.protocol !== 'postgresql:' && url.protocol !== 'postgres:') {
      throw new SinkConfigError(
        `Expected a postgresql:// URL, received one starting with "${url.protocol}//"`,
      );
    }
    const param = (name: string) => url.searchParams.get(name) ?? undefined;
    conn = {
      host: param('host') ?? (decodeURIComponent(url.hostname.replace(/^\[|\]$/g, '')) || 'localhost'),
      port: url.port ? Number(url.port) : undefined,
      username: decodeURIComponent(url.username) || 'postgres',
      password: url.password ? decodeURIComponent(url.password) : undefined,
      dbname:
        decodeURIComponent(url.pathname.replace(/^\//, '')) || decodeURIComponent(url.username) || 'postgres',
      sslmode: param('sslmode') as SslMode | undefined,
      caFile: param('sslrootcert'),
    };
  } else {
    conn = source;
  }
  if (!conn.host || !conn.username || !conn.dbname) {
    throw new SinkConfigError(
      `A database connection needs host, username and dbname; received host "${conn.host}", username "${conn.username}", dbname "${conn.dbname}"`,
    );
  }
  const port = conn.port ?? 5432;
  const { ssl, fallbackToPlain } = tlsOptions(conn.sslmode ?? 'prefer', conn.caFile);
  return {
    host: conn.host,
    port,
    user: conn.username,
    ...(conn.password !== undefined ? { password: conn.password } : {}),
    database: conn.dbname,
    ssl: ssl && conn.sslmode === 'verify-full' ? { ...ssl, servername: conn.host } : ssl,
    fallbackToPlain,
    description: `${conn.username}@${conn.host}:${port}/${conn.dbname}`,
  };
}

function pgAdapter(client: pg.Client, copyFrom: typeof import('pg-copy-streams').from): SqlConnection {
  return {
    kind: 'postgresql',
    async query<R>(text: string, params?: readonly unknown[]) {
      const result = await client.query(text, params as unknown[] | undefined);
      return { rows: result.rows as R[], rowCount: result.rowCount ?? 0 };
    },
    async copyCsv(target, chunks) {
      const stream = client.query(copyFrom(`COPY ${target} FROM STDIN WITH (FORMAT csv)`));
      await new Promise<void>((resolve, reject) => {
        stream.on('finish', resolve);
        stream.on('error', reject);
        // Chunks go to the socket as they are; joining them first would copy the batch once more.
        for (const chunk of chunks) stream.write(chunk);
        stream.end();
      });
    },
    async close() {
      await client.end();
    },
  };
}

/** Connects to a PostgreSQL server. Errors name the server but never the password. */
export async function connectPostgres(source: string | DatabaseConnection): Promise<SqlConnection> {
  const settings = pgSettings(source);
  // Loaded here rather than at the top so that importing the sinks does not load node-postgres.
  const [{ default: pg }, copyStreams] = await Promise.all([import('pg'), import('pg-copy-streams')]);
  // pg-copy-streams is CommonJS: Node's loader lists its exports by name, a bundle (the built CLI) only
  // as the module's default export.
  const copyFrom = copyStreams.from ?? copyStreams.default?.from;
  if (typeof copyFrom !== 'function') throw new Error('pg-copy-streams did not load: no COPY FROM stream');
  const attempt = async (ssl: false | ConnectionOptions) => {
    const client = new pg.Client({
      host: settings.host,
      port: settings.port,
      user: settings.user,
      password: settings.password,
      database: settings.database,
      ssl,
      application_name: 'ccexport',
    });
    // A dropped connection emits 'error' on the client; without a listener node would crash the process.
    client.on('error', () => undefined);
    await client.connect();
    return client;
  };
  try {
    try {
      return pgAdapter(await attempt(settings.ssl), copyFrom);
    } catch (error) {
      if (settings.fallbackToPlain && settings.ssl && /does not support SSL/i.test(String(error))) {
        return pgAdapter(await attempt(false), copyFrom);
      }
      throw error;
    }
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    const safeReason = settings.password ? reason.replaceAll(settings.password, '***') : reason;
    throw new SinkError(`Cannot connect to PostgreSQL ${settings.description}: ${safeReason}`);
  }
}

/** Databases of their own for tests, on the PostgreSQL server the global set-up starts (`inject('pgUrl')`). */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { createDatabase as createNamedDatabase } from '../chaos/support';

/** Creates a new, empty database named `<prefix>_<random>` and returns its URL. */
export async function createDatabase(prefix: string): Promise<string> {
  return await createNamedDatabase(inject('pgUrl'), `${prefix}_${randomBytes(4).toString('hex')}`);
}

/** Runs `f` with a client connected to `url`, closing the connection after. */
export async function withDb<T>(url: string, f: (db: pg.Client) => Promise<T>): Promise<T> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    return await f(db);
  } finally {
    await db.end();
  }
}

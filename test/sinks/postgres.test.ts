import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { TableSpec } from '../../functions/query/types';
import { ConcurrentRunError, createSink, TypeConflictError } from '../../functions/sinks';
import { pgName } from '../../functions/sinks/postgres/naming';
import { checkpoint, run } from './helpers';

let admin: pg.Client;
let dbUrl: string;

beforeAll(async () => {
  const base = inject('pgUrl');
  admin = new pg.Client({ connectionString: base });
  await admin.connect();
  const name = `sinks_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(base);
  url.pathname = `/${name}`;
  dbUrl = `${url.toString()}?sslmode=disable`;
});

afterAll(async () => {
  await admin.end();
});

async function query<R = Record<string, unknown>>(text: string, params?: unknown[]): Promise<R[]> {
  const client = new pg.Client({ connectionString: dbUrl.replace('?sslmode=disable', '') });
  await client.connect();
  try {
    return (await client.query(text, params)).rows as R[];
  } finally {
    await client.end();
  }
}

function table(
  name: string,
  headings: string[],
  dataTypes: TableSpec['dataTypes'] = headings.map(() => null),
): TableSpec {
  return { name, headings, dataTypes };
}

describe('PostgreSQL output', () => {
  it('creates tables, adds columns when new fields appear and widens to text like DET', async () => {
    const name = `evolve_${randomUUID().slice(0, 6)}`;
    const v1 = table(name, ['id', 'count', 'when', 'flag', 'always_null']);
    const first = await createSink({ format: 'sql', output: dbUrl });
    await first.begin([v1], run('r1', { checkpointKey: name }));
    await first.writeRows(name, [['a', 1, new Date(Date.UTC(2024, 0, 2, 3, 4, 5)), true, null]]);
    await first.finish();
    const v2 = table(
      name,
      ['id', 'count', 'when', 'flag', 'always_null', 'new_field', 'doc'],
      [null, null, null, null, null, null, 'json'],
    );
    const second = await createSink({ format: 'sql', output: dbUrl });
    await second.begin([v2], run('r2', { checkpointKey: name }));
    await second.writeRows(name, [
      ['b', 'not a number', new Date(Date.UTC(2024, 0, 3)), false, null, 3_000_000_000, { k: [1, 2] }],
      ['a', null, null, null, null, null, null],
    ]);
    await second.finish();
    const columns = await query<{ column_name: string; data_type: string }>(
      `SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`,
      [name],
    );
    expect(columns.map((c) => [c.column_name, c.data_type])).toEqual([
      ['id', 'text'],
      ['count', 'text'],
      ['when', 'timestamp without time zone'],
      ['flag', 'boolean'],
      ['new_field', 'bigint'],
      ['doc', 'jsonb'],
    ]);
    const rows = await query(`SELECT * FROM "${name}" ORDER BY id`);
    expect(rows).toEqual([
      { id: 'a', count: '1', when: new Date(2024, 0, 2, 3, 4, 5), flag: true, new_field: null, doc: null },
      {
        id: 'b',
        count: 'not a number',
        when: new Date(2024, 0, 3),
        flag: false,
        new_field: '3000000000',
        doc: { k: [1, 2] },
      },
    ]);
  });

  it('fails instead of widening a column when strictTypes is on', async () => {
    const name = `strict_${randomUUID().slice(0, 6)}`;
    const spec = table(name, ['id', 'n']);
    const sink = await createSink({ format: 'sql', output: dbUrl, strictTypes: true });
    await sink.begin([spec], run('r1', { checkpointKey: name }));
    await sink.writeRows(name, [['a', 1]]);
    await sink.commit([]);
    await sink.writeRows(name, [['b', 'x']]);
    await expect(sink.commit([])).rejects.toThrow(TypeConflictError);
    await sink.abort(new Error('stop'));
    expect(await query(`SELECT id, n FROM "${name}"`)).toEqual([{ id: 'a', n: 1 }]);
  });

  it('upserts on id so a second identical run leaves the same rows, and null never overwrites', async () => {
    const name = `upsert_${randomUUID().slice(0, 6)}`;
    const spec = table(name, ['id', 'v', 'w']);
    const rows = Array.from({ length: 250 }, (_, i) => [`id-${i}`, i, `w${i}`]);
    for (const runId of ['r1', 'r2']) {
      const sink = await createSink({ format: 'sql', output: dbUrl, batchRows: 100 });
      await sink.begin([spec], run(runId, { checkpointKey: name }));
      await sink.writeRows(name, rows);
      await sink.writeRows(name, [
        ['id-0', null, 'changed'],
        ['id-0', 99, null],
      ]);
      await sink.finish();
    }
    expect(await query(`SELECT count(*)::int AS n FROM "${name}"`)).toEqual([{ n: 250 }]);
    expect(await query(`SELECT * FROM "${name}" WHERE id = 'id-0'`)).toEqual([
      { id: 'id-0', v: 99, w: 'changed' },
    ]);
  });

  it('keeps nothing after the last commit when the connection dies, and the checkpoint matches the data', async () => {
    const name = `crash_${randomUUID().slice(0, 6)}`;
    const spec = table(name, ['id', 'v']);
    const sink = await createSink({ format: 'sql', output: dbUrl, batchRows: 10 });
    await sink.begin([spec], run('r1', { checkpointKey: name }));
    await sink.writeRows(
      name,
      Array.from({ length: 30 }, (_, i) => [`a${i}`, i]),
    );
    await sink.commit([checkpoint('2024-01-01T00:00:00', { checkpointKey: name })]);
    await sink.writeRows(
      name,
      Array.from({ length: 30 }, (_, i) => [`b${i}`, i]),
    );
    await admin.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'ccexport' AND datname = $1`,
      [new URL(dbUrl).pathname.slice(1)],
    );
    await expect(sink.commit([checkpoint('2024-02-01T00:00:00', { checkpointKey: name })])).rejects.toThrow();
    await sink.abort(new Error('connection lost'));
    expect(await query(`SELECT count(*)::int AS n FROM "${name}"`)).toEqual([{ n: 30 }]);
    const reader = await createSink({ format: 'sql', output: dbUrl });
    expect((await reader.readCheckpoint(name, 'demo', 'form'))?.position.indexedOn).toBe(
      '2024-01-01T00:00:00',
    );
  });

  it('stores hostile table and column names safely, with distinct names after truncation', async () => {
    const long = `${'é'.repeat(40)}_tail`;
    const spec = table(`x"; DROP TABLE users; -- ${randomUUID().slice(0, 4)}`, [
      'id',
      'col"quote',
      'semi;colon',
      `${long}_one`,
      `${long}_two`,
      'ünïcødé 名前',
    ]);
    const sink = await createSink({ format: 'sql', output: dbUrl });
    await sink.begin([spec], run('r1', { checkpointKey: 'hostile' }));
    await sink.writeRows(spec.name, [['1', 'q', 's', 'one', 'two', 'u']]);
    await sink.finish();
    const one = pgName(`${long}_one`);
    const two = pgName(`${long}_two`);
    expect(Buffer.byteLength(one)).toBeLessThanOrEqual(63);
    expect(one).not.toBe(two);
    const [row] = await query(`SELECT * FROM "${spec.name.replaceAll('"', '""')}"`);
    expect(row).toEqual({
      id: '1',
      'col"quote': 'q',
      'semi;colon': 's',
      [one]: 'one',
      [two]: 'two',
      'ünïcødé 名前': 'u',
    });
  });

  it('refuses a second run of the same export at once with a clear message', async () => {
    const name = `lock_${randomUUID().slice(0, 6)}`;
    const spec = table(name, ['id']);
    const first = await createSink({ format: 'sql', output: dbUrl });
    await first.begin([spec], run('r1', { checkpointKey: name }));
    const second = await createSink({ format: 'sql', output: dbUrl });
    const failure = second.begin([spec], run('r2', { checkpointKey: name }));
    await expect(failure).rejects.toThrow(ConcurrentRunError);
    await expect(failure).rejects.toThrow(`Another run of export "${name}" for project "demo"`);
    await first.finish();
    await second.begin([spec], run('r3', { checkpointKey: name }));
    await second.finish();
  });

  it("writes checkpoints in the target database without touching DET's table, readable without a run", async () => {
    const name = `ckpt_${randomUUID().slice(0, 6)}`;
    const sink = await createSink({ format: 'sql', output: dbUrl });
    await sink.begin([table(name, ['id'])], run('r1', { checkpointKey: name }));
    await sink.writeRows(name, [['a']]);
    await sink.commit([checkpoint('2024-03-01T00:00:00', { checkpointKey: name, tables: [name] })]);
    await sink.finish();
    const fresh = await createSink({ format: 'sql', output: dbUrl });
    expect(await fresh.readCheckpoint(name, 'demo', 'form')).toEqual(
      checkpoint('2024-03-01T00:00:00', { checkpointKey: name, tables: [name] }),
    );
    expect(await query(`SELECT to_regclass('commcare_export_runs') AS t`)).toEqual([{ t: null }]);
  });

  it('fails to connect with a message that names the server but never the password', async () => {
    const url = new URL(dbUrl);
    url.password = 'S3cretPassw0rd';
    url.port = '1';
    const sink = await createSink({ format: 'sql', output: url.toString() });
    const error = await sink.begin([table('t', ['id'])], run('r1')).catch((e: unknown) => e as Error);
    expect(String(error)).toMatch(/Cannot connect to PostgreSQL postgres@127\.0\.0\.1:1\//);
    expect(`${String(error)} ${(error as Error).stack} ${JSON.stringify(error)}`).not.toContain(
      'S3cretPassw0rd',
    );
  });
});

import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { TableSpec } from '../../functions/query/types';
import { ConcurrentRunError, createSink, DeclaredTypeError, TypeConflictError } from '../../functions/sinks';
import { pgName } from '../../functions/sinks/postgres/naming';
import { PERMANENT_ERRORS } from '../../lib/export-pipeline';
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
  it('adds a new column to two interleaved tables whose rows already exist (a batch rollback never undoes it)', async () => {
    // Found through `--with-organization` on an existing database: a direct COPY that met existing ids
    // rolled back to its savepoint after the other table's ALTER TABLE had been issued, undoing it.
    const parents = `parents_${randomUUID().slice(0, 6)}`;
    const kids = `kids_${randomUUID().slice(0, 6)}`;
    const load = async (withUid: boolean, runId: string) => {
      const headings = ['id', 'name', ...(withUid ? ['uid'] : [])];
      const sink = await createSink({ format: 'sql', output: dbUrl });
      await sink.begin(
        [table(parents, headings), table(kids, headings)],
        run(runId, { checkpointKey: parents }),
      );
      for (let i = 0; i < 300; i++) {
        const uid = withUid ? [`u${i}`] : [];
        await sink.writeRows(parents, [[`p${i}`, 'x', ...uid]]);
        await sink.writeRows(kids, [
          [`k${i}a`, 'x', ...uid],
          [`k${i}b`, 'y', ...uid],
        ]);
        if (i % 100 === 99) await sink.commit([]);
      }
      await sink.finish();
    };

    await load(false, 'r1');
    await load(true, 'r2');

    const [counted] = await query<{ n: string }>(`SELECT count(*) AS n FROM "${kids}" WHERE uid IS NOT NULL`);
    expect(Number(counted?.n)).toBe(600);
  });

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

  it('keeps declared Data Types and converts the strings HQ sends into them', async () => {
    const name = `declared_${randomUUID().slice(0, 6)}`;
    const spec = table(
      name,
      ['id', 'age', 'visits', 'pregnant', 'dob', 'note'],
      [null, 'integer', 'integer', 'boolean', 'date', 'text'],
    );
    const sink = await createSink({ format: 'sql', output: dbUrl });
    await sink.begin([spec], run('r1', { checkpointKey: name }));
    await sink.writeRows(name, [
      ['a', '12', 3, 'true', '2024-02-03', 12],
      ['b', ' -7 ', '0', 'FALSE', '2023-12-31', 'x'],
      ['c', null, null, null, null, null],
    ]);
    await sink.finish();

    const columns = await query<{ column_name: string; data_type: string }>(
      `SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`,
      [name],
    );
    expect(columns.map((c) => c.data_type)).toEqual([
      'text',
      'integer',
      'integer',
      'boolean',
      'date',
      'text',
    ]);
    const rows = await query(
      `SELECT id, age, visits, pregnant, to_char(dob, 'YYYY-MM-DD') AS dob, note FROM "${name}" ORDER BY id`,
    );
    expect(rows).toEqual([
      { id: 'a', age: 12, visits: 3, pregnant: true, dob: '2024-02-03', note: '12' },
      { id: 'b', age: -7, visits: 0, pregnant: false, dob: '2023-12-31', note: 'x' },
      { id: 'c', age: null, visits: null, pregnant: null, dob: null, note: null },
    ]);
  });

  it('fails a value that cannot become its declared type, naming table, column, row id and value, and commits nothing of the batch', async () => {
    const name = `declared_bad_${randomUUID().slice(0, 6)}`;
    const spec = table(name, ['id', 'age'], [null, 'integer']);
    const sink = await createSink({ format: 'sql', output: dbUrl });
    await sink.begin([spec], run('r1', { checkpointKey: name }));
    await sink.writeRows(name, [['a', '1']]);
    await sink.commit([]);
    const failed = (async () => {
      await sink.writeRows(name, [['b', '2']]);
      await sink.writeRows(name, [['case-77', 'twelve']]);
      await sink.commit([]);
    })();

    await expect(failed).rejects.toThrow(DeclaredTypeError);
    // On AWS the state machine fails the run at once instead of retrying the same record.
    expect(PERMANENT_ERRORS).toContain(((await failed.catch((e: unknown) => e)) as Error).name);
    await expect(failed).rejects.toThrow(
      `Table "${name}", column "age" (integer), row id "case-77": the string "twelve" cannot be converted to integer`,
    );
    await sink.abort(new Error('stop'));
    expect(await query(`SELECT id, age FROM "${name}"`)).toEqual([{ id: 'a', age: 1 }]);
    const [column] = await query<{ data_type: string }>(
      `SELECT data_type FROM information_schema.columns WHERE table_name = $1 AND column_name = 'age'`,
      [name],
    );
    expect(column?.data_type).toBe('integer');
  });

  it('fails instead of widening a column when strictTypes is on', async () => {
    const name = `strict_${randomUUID().slice(0, 6)}`;
    const spec = table(name, ['id', 'n']);
    const sink = await createSink({ format: 'sql', output: dbUrl, strictTypes: true });
    await sink.begin([spec], run('r1', { checkpointKey: name }));
    await sink.writeRows(name, [['a', 1]]);
    await sink.commit([]);
    await sink.writeRows(name, [['b', 'x']]);
    const refused = sink.commit([]);
    await expect(refused).rejects.toThrow(TypeConflictError);
    expect(PERMANENT_ERRORS).toContain(((await refused.catch((e: unknown) => e)) as Error).name);
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

  it('merges repeated ids within and across batch boundaries as if the upserts ran one by one', async () => {
    const name = `dups_${randomUUID().slice(0, 6)}`;
    const spec = table(name, ['id', 'v', 'w']);
    const sink = await createSink({ format: 'sql', output: dbUrl, batchRows: 3 });
    await sink.begin([spec], run('r1', { checkpointKey: name }));
    // Batches of 3: [a, b, a] [c, a, b] [b, d]; one row per call, as the export loop writes.
    const rows = [
      ['a', 1, 'a1'],
      ['b', 2, null],
      ['a', null, 'a2'],
      ['c', 3, 'c1'],
      ['a', 10, null],
      ['b', null, 'b1'],
      ['b', 20, null],
      ['d', null, null],
    ];
    for (const row of rows) await sink.writeRows(name, [row]);
    await sink.finish();
    expect(await query(`SELECT * FROM "${name}" ORDER BY id`)).toEqual([
      { id: 'a', v: 10, w: 'a2' },
      { id: 'b', v: 20, w: 'b1' },
      { id: 'c', v: 3, w: 'c1' },
      { id: 'd', v: null, w: null },
    ]);
  });

  it('adds a column first seen in a later batch and widens columns in a later batch', async () => {
    const name = `later_${randomUUID().slice(0, 6)}`;
    const spec = table(name, ['id', 'n', 'big', 'flag', 'late']);
    const sink = await createSink({ format: 'sql', output: dbUrl, batchRows: 2 });
    await sink.begin([spec], run('r1', { checkpointKey: name }));
    await sink.writeRows(name, [
      ['a', 1, 1, true, null],
      ['b', 2, 2, false, null],
    ]);
    // Same batch: a row that fits the columns as they are, then one that needs them changed.
    await sink.writeRows(name, [
      ['c', 3, 3, true, null],
      ['d', 'four', 5_000_000_000, 'maybe', new Date(Date.UTC(2024, 5, 6, 7, 8, 9))],
    ]);
    await sink.writeRows(name, [['e', 5, 6, false, null]]);
    await sink.finish();
    const columns = await query<{ column_name: string; data_type: string }>(
      'SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position',
      [name],
    );
    expect(columns.map((c) => [c.column_name, c.data_type])).toEqual([
      ['id', 'text'],
      ['n', 'text'],
      ['big', 'bigint'],
      ['flag', 'text'],
      ['late', 'timestamp without time zone'],
    ]);
    expect(await query(`SELECT id, n, big::text, flag, late FROM "${name}" ORDER BY id`)).toEqual([
      { id: 'a', n: '1', big: '1', flag: 'true', late: null },
      { id: 'b', n: '2', big: '2', flag: 'false', late: null },
      { id: 'c', n: '3', big: '3', flag: 'true', late: null },
      { id: 'd', n: 'four', big: '5000000000', flag: 'maybe', late: new Date(2024, 5, 6, 7, 8, 9) },
      { id: 'e', n: '5', big: '6', flag: 'false', late: null },
    ]);
  });

  it('keeps every character of hostile text values and tells an empty string from null', async () => {
    const name = `text_${randomUUID().slice(0, 6)}`;
    const spec = table(name, ['id', 't']);
    const values = [
      '',
      null,
      '\\.',
      'back\\slash',
      'quote " and "" two',
      'comma, here',
      'line\nfeed',
      'carriage\rreturn',
      '  padded  ',
      'nul\0gone',
      'ünïcødé 名前 😀',
      'NULL',
    ];
    const sink = await createSink({ format: 'sql', output: dbUrl });
    await sink.begin([spec], run('r1', { checkpointKey: name }));
    await sink.writeRows(
      name,
      values.map((v, i) => [`id-${String(i).padStart(2, '0')}`, v]),
    );
    await sink.finish();
    const rows = await query<{ t: string | null }>(`SELECT t FROM "${name}" ORDER BY id`);
    expect(rows.map((r) => r.t)).toEqual(values.map((v) => (v === null ? null : v.replaceAll('\0', ''))));
  });

  it('merges rows whose ids another writer inserted, without letting null overwrite their values', async () => {
    const name = `other_${randomUUID().slice(0, 6)}`;
    const spec = table(name, ['id', 'v', 'w']);
    const first = await createSink({ format: 'sql', output: dbUrl });
    await first.begin([spec], run('r1', { checkpointKey: name }));
    await first.writeRows(name, [['x', 1, 'kept']]);
    await first.finish();
    // A new run of another export: its first batch is COPY'd optimistically and meets id x.
    const second = await createSink({ format: 'sql', output: dbUrl, batchRows: 2 });
    await second.begin([spec], run('r2', { checkpointKey: `${name}-other` }));
    await second.writeRows(name, [
      ['y', 2, 'new'],
      ['x', 5, null],
    ]);
    await second.writeRows(name, [['z', 3, null]]);
    await second.finish();
    expect(await query(`SELECT * FROM "${name}" ORDER BY id`)).toEqual([
      { id: 'x', v: 5, w: 'kept' },
      { id: 'y', v: 2, w: 'new' },
      { id: 'z', v: 3, w: null },
    ]);
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

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { main } from '../../functions/cli/main';
import { pgName } from '../../functions/sinks/postgres/naming';
import { CHAOS_KEY, CHAOS_USER, createDatabase, dropDatabase } from '../chaos/support';
import { captureIO } from '../cli/capture';
import { formSheet, workbook } from '../support/query-workbook';
import { envelope, fakeHq, filesUnder } from './support';

let work: string;
const databases: string[] = [];

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'ccexport-hostile-hq-'));
});

afterAll(async () => {
  rmSync(work, { recursive: true, force: true });
  for (const name of databases) await dropDatabase(inject('pgUrl'), name).catch(() => undefined);
});

async function queryFile(
  name: string,
  sheetName: string,
  columns: [string, string, string?][],
): Promise<string> {
  const file = join(work, name);
  writeFileSync(file, await workbook([{ name: sheetName, rows: formSheet(columns) }]));
  return file;
}

function args(hq: string, query: string, format: string, output: string): string[] {
  return [
    '--project',
    'p',
    '--commcare-hq',
    hq,
    '--username',
    CHAOS_USER,
    '--query',
    query,
    '--output-format',
    format,
    '--output',
    output,
    '--progress',
    'none',
  ];
}

describe('HQ answers of the wrong shape', () => {
  const shapes: [string, string][] = [
    [
      '"objects" is a string',
      '{"meta": {"limit": 1000, "next": null, "offset": 0, "total_count": 1}, "objects": "nope"}',
    ],
    ['no envelope at all', '[]'],
    ['objects that are not records', envelope('[1, "two", null]', 3)],
    ['a meta that is a list', '{"meta": [], "objects": []}'],
  ];
  for (const [index, [label, body]] of shapes.entries()) {
    it(`fails with a clear error naming the request and writes nothing when ${label}`, async () => {
      const hq = await fakeHq(() => ({ status: 200, body }));
      try {
        const query = await queryFile(`shape${index}.xlsx`, 'Forms', [
          ['id', 'id'],
          ['name', 'form.name'],
        ]);
        const output = join(work, `shape${index}-out`);
        const io = captureIO({ CCEXPORT_API_KEY: CHAOS_KEY });
        const code = await main(args(hq.url, query, 'csv', output), io);
        expect(code).toBe(1);
        expect(io.err()).toMatch(/form/);
        expect(io.err()).toMatch(/expected|not|invalid|unexpected/i);
        expect(io.err()).not.toMatch(/\n\s+at /);
        expect(io.err()).not.toContain(CHAOS_KEY);
        expect(filesUnder(output)).toEqual([]);
      } finally {
        await hq.close();
      }
    });
  }
});

describe('hostile values in HQ data', () => {
  const long = 'ü'.repeat(300_000);
  const form = (id: string, name: string) =>
    `{"id": "${id}", "indexed_on": "2024-01-01T00:00:00.000000Z", "received_on": "2024-01-01T00:00:00.000000Z", "form": {"name": ${name}}}`;

  it('exports very long strings and invalid UTF-8 bytes to PostgreSQL, the bytes as U+FFFD', async () => {
    // The invalid bytes sit inside the second record's JSON string; the rest is well-formed.
    const [head, tail] = envelope(
      `[${form('f1', JSON.stringify(long))}, ${form('f2', '"bad @@ end"')}]`,
      2,
    ).split('@@');
    const body = Buffer.concat([Buffer.from(head!), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from(tail!)]);
    const hq = await fakeHq(() => ({ status: 200, body }));
    const name = `hostile_values_${process.pid}`;
    databases.push(name);
    const dbUrl = await createDatabase(inject('pgUrl'), name);
    try {
      const query = await queryFile('values.xlsx', 'Forms', [
        ['id', 'id'],
        ['name', 'form.name'],
      ]);
      const io = captureIO({ CCEXPORT_API_KEY: CHAOS_KEY });
      const code = await main(args(hq.url, query, 'sql', dbUrl), io);
      expect(io.err()).toBe('');
      expect(code).toBe(0);
      const client = new pg.Client({ connectionString: dbUrl });
      await client.connect();
      try {
        const { rows } = await client.query<{ id: string; name: string }>(
          'SELECT id, name FROM "Forms" ORDER BY id',
        );
        expect(rows.map((r) => r.id)).toEqual(['f1', 'f2']);
        expect(rows[0]?.name).toBe(long);
        expect(rows[1]?.name).toBe('bad \uFFFD\uFFFD\uFFFD end');
      } finally {
        await client.end();
      }
    } finally {
      await hq.close();
    }
  });
});

describe('table and column names built to break SQL', () => {
  const table = 'x"; drop table canary; --';
  const columns: [string, string][] = [
    ['id', 'id'],
    ["it's; delete from canary", 'form.a'],
    ['"quoted" name', 'form.b'],
    ['semi;colon -- comment', 'form.c'],
    ['नाम 名前 ☃', 'form.d'],
  ];

  it('are quoted as data: the table is created under its own name and nothing else is touched', async () => {
    const record = `{"id": "r1", "indexed_on": "2024-01-01T00:00:00.000000Z", "form": {"a": "A", "b": "B", "c": "C", "d": "D"}}`;
    const hq = await fakeHq(() => ({ status: 200, body: envelope(`[${record}]`) }));
    const name = `hostile_names_${process.pid}`;
    databases.push(name);
    const dbUrl = await createDatabase(inject('pgUrl'), name);
    const client = new pg.Client({ connectionString: dbUrl });
    await client.connect();
    try {
      await client.query('CREATE TABLE canary (v text); INSERT INTO canary VALUES ($$alive$$)');
      const query = await queryFile('names.xlsx', table.slice(0, 31).replace(/[\\/?*[\]:]/g, '_'), columns);
      const io = captureIO({ CCEXPORT_API_KEY: CHAOS_KEY });
      const code = await main(args(hq.url, query, 'sql', dbUrl), io);
      expect(io.err()).toBe('');
      expect(code).toBe(0);
      const canary = await client.query<{ v: string }>('SELECT v FROM canary');
      expect(canary.rows).toEqual([{ v: 'alive' }]);
      const sheet = table.slice(0, 31).replace(/[\\/?*[\]:]/g, '_');
      const { rows } = await client.query<Record<string, string>>(
        `SELECT * FROM "${pgName(sheet).replaceAll('"', '""')}"`,
      );
      expect(rows).toHaveLength(1);
      expect(Object.keys(rows[0]!).sort()).toEqual(columns.map(([c]) => pgName(c)).sort());
      expect(Object.values(rows[0]!).sort()).toEqual(['A', 'B', 'C', 'D', 'r1']);
    } finally {
      await client.end();
      await hq.close();
    }
  });
});

describe('a column name longer than PostgreSQL allows', () => {
  it('is refused before any request with the name, its length and the limit, and nothing is written', async () => {
    const hq = await fakeHq(() => ({ status: 200, body: envelope('[]', 0) }));
    const name = `hostile_long_${process.pid}`;
    databases.push(name);
    const dbUrl = await createDatabase(inject('pgUrl'), name);
    try {
      const long = `very ${'long '.repeat(30)}name`;
      const query = await queryFile('long.xlsx', 'Forms', [
        ['id', 'id'],
        [long, 'form.c'],
      ]);
      const io = captureIO({ CCEXPORT_API_KEY: CHAOS_KEY });
      const code = await main(args(hq.url, query, 'sql', dbUrl), io);
      expect(code).not.toBe(0);
      expect(io.err()).toContain(long);
      expect(io.err()).toMatch(/159 bytes.*63/);
      expect(hq.requests()).toBe(0);
      const client = new pg.Client({ connectionString: dbUrl });
      await client.connect();
      try {
        const { rows } = await client.query(
          "SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'",
        );
        expect(rows).toEqual([{ n: 0 }]);
      } finally {
        await client.end();
      }
    } finally {
      await hq.close();
    }
  });
});

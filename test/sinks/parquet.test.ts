import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { Cell, TableSpec } from '../../functions/query/types';
import { safeKeySegment } from '../../functions/sinks/cells';
import { parquetColumns } from '../../functions/sinks/formats/parquet/columns';
import { LocalObjectStore } from '../../functions/sinks/store/local';
import { PERMANENT_ERRORS } from '../../lib/export-pipeline';
import { motoS3 } from '../support/aws';
import { duckdb, duckdbAvailable, sqlString } from '../support/duckdb';
import { childTable, formRow, formsTable, run } from './helpers';
import { createSink, readManifests } from './local-helpers';

const hasDuckdb = duckdbAvailable();

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'ccexport-parquet-'));
}

const typedTable: TableSpec = {
  name: 'visits',
  headings: ['id', 'Visit Date', 'visited_at', 'children', 'consented', 'notes', 'payload'],
  dataTypes: [null, 'date', 'datetime', 'integer', 'boolean', 'text', 'json'],
};

/** Every .parquet file under a folder, as a DuckDB glob. */
function glob(dir: string, table: string): string {
  return sqlString(join(dir, safeKeySegment(table), '**', '*.parquet'));
}

describe.skipIf(!hasDuckdb)('parquet output, read back by DuckDB', () => {
  it('writes one typed file per table under a run_date partition, with the run columns', async () => {
    // prepare
    const dir = tempDir();
    const sink = await createSink({ format: 'parquet', output: dir });
    const rows = Array.from({ length: 25 }, (_, i) => formRow(i));

    // act
    await sink.begin([formsTable, childTable], run('run-1'));
    for (let i = 0; i < rows.length; i += 10) await sink.writeRows('forms', rows.slice(i, i + 10));
    await sink.writeRows(childTable.name, [['c1', 'form-00001', 'a|b']]);
    await sink.finish();

    // assert
    const [manifest] = await readManifests(new LocalObjectStore(dir));
    const runDate = manifest!.startedAt.slice(0, 10);
    expect(readdirSync(join(dir, 'forms'))).toEqual([`run_date=${runDate}`]);
    expect(readdirSync(join(dir, 'forms', `run_date=${runDate}`))).toEqual(['run-1.parquet']);
    expect(manifest!.objects.map((o) => o.key)).toContain(`forms/run_date=${runDate}/run-1.parquet`);

    const read = duckdb(`SELECT * FROM read_parquet(${glob(dir, 'forms')}) ORDER BY _seq`);
    // DuckDB reads the Hive-style folder as a column too, as Athena does with the partition key.
    expect(read.columns).toEqual([...formsTable.headings, '_run_id', '_exported_at', '_seq', 'run_date']);
    expect(read.types).toEqual([
      ...formsTable.headings.map(() => 'VARCHAR'),
      'VARCHAR',
      'TIMESTAMP',
      'BIGINT',
      'DATE',
    ]);
    expect(read.rows).toHaveLength(25);
    const exportedAt = `${manifest!.startedAt.slice(0, 10)} ${manifest!.startedAt.slice(11, 23)}`;
    // Columns without a Data Type hold the csv text of the cell; nested values are JSON.
    expect(read.rows[7]).toEqual([
      'form-00007',
      'Zoë, "the" one\nsecond line',
      '7',
      'False',
      '2024-01-08 10:20:30',
      '7.5',
      null,
      null,
      'run-1',
      exportedAt,
      7,
      runDate,
    ]);
    expect(read.rows[5]![6]).toBe('{"a":5,"b":[1,"x"]}');

    const child = duckdb(`SELECT id, parent, note, _run_id FROM read_parquet(${glob(dir, childTable.name)})`);
    expect(child.rows).toEqual([['c1', 'form-00001', 'a|b', 'run-1']]);
  });

  it("types columns by the query's Data Types, reading text as the type and blank text as null", async () => {
    const dir = tempDir();
    const sink = await createSink({ format: 'parquet', output: dir });
    await sink.begin([typedTable], run('run-1'));
    await sink.writeRows('visits', [
      ['v1', '2024-03-01', '2024-03-01T10:11:12.345Z', '3', 'true', 'नमस्ते 🌍', { a: [1, 2] }],
      [
        'v2',
        new Date(Date.UTC(2024, 2, 2)),
        new Date(Date.UTC(2024, 2, 2, 5, 6, 7)),
        2 ** 53 - 1,
        false,
        null,
        null,
      ],
      ['v3', '', '2024-03-03 04:05:06', ' ', 'Yes', '', 'text'],
      ['v4', null, null, null, null, null, null],
    ]);
    await sink.finish();

    const read = duckdb(
      `SELECT * EXCLUDE (_run_id, _exported_at, _seq, run_date) FROM read_parquet(${glob(dir, 'visits')}) ORDER BY id`,
    );
    expect(read.columns).toEqual([
      'id',
      'visit_date',
      'visited_at',
      'children',
      'consented',
      'notes',
      'payload',
    ]);
    expect(read.types).toEqual(['VARCHAR', 'DATE', 'TIMESTAMP', 'BIGINT', 'BOOLEAN', 'VARCHAR', 'VARCHAR']);
    expect(read.rows).toEqual([
      ['v1', '2024-03-01', '2024-03-01 10:11:12.345', 3, true, 'नमस्ते 🌍', '{"a":[1,2]}'],
      ['v2', '2024-03-02', '2024-03-02 05:06:07.000', 2 ** 53 - 1, false, null, null],
      ['v3', null, '2024-03-03 04:05:06.000', null, true, '', '"text"'],
      ['v4', null, null, null, null, null, null],
    ]);
  });

  it.each<[heading: string, value: Cell, index: number, message: string]>([
    ['visited_at', 'not a date', 2, 'the string "not a date" cannot be read as timestamp'],
    ['children', 'n/a', 3, 'the string "n/a" cannot be read as bigint'],
    // Beyond 2^53 a JavaScript number is not exact: refused rather than written as a wrong count.
    ['children', 2 ** 53 + 2, 3, 'the number "9007199254740994" cannot be read as bigint'],
    ['consented', 'maybe', 4, 'the string "maybe" cannot be read as boolean'],
  ])(
    'fails naming table, column, row id and value when %s cannot take %j',
    async (heading, value, index, message) => {
      // prepare
      const dir = tempDir();
      const sink = await createSink({ format: 'parquet', output: dir });
      await sink.begin([typedTable], run('run-1'));
      const row: Cell[] = ['v7', null, null, null, null, null, null];
      row[index] = value;

      // act
      const written = sink.writeRows('visits', [['v6', null, null, '1', null, null, null], row]);

      // assert
      await expect(written).rejects.toMatchObject({
        name: 'DeclaredTypeError',
        message: expect.stringContaining(`Table "visits", column "${heading}" (`),
      });
      await expect(written).rejects.toThrow(`row id "v7": ${message}`);
      // On AWS the state machine fails the run at once instead of retrying the same record.
      expect(PERMANENT_ERRORS).toContain(((await written.catch((e: unknown) => e)) as Error).name);
      await sink.abort(new Error('stopped'));
    },
  );

  it('streams a large table as several row groups, and continues _seq across parts after a commit', async () => {
    const dir = tempDir();
    const sink = await createSink({ format: 'parquet', output: dir, parquetRowGroupRows: 1000 });
    await sink.begin([formsTable], run('run-1'));
    for (let i = 0; i < 4500; i += 500) {
      await sink.writeRows(
        'forms',
        Array.from({ length: 500 }, (_, j) => formRow(i + j)),
      );
    }
    await sink.commit([]);
    await sink.writeRows('forms', [formRow(4500)]);
    await sink.finish();

    const groups = duckdb(
      `SELECT file_name, count(DISTINCT row_group_id) FROM parquet_metadata(${glob(dir, 'forms')}) GROUP BY ALL ORDER BY 1`,
    );
    expect(groups.rows.map((r) => [String(r[0]).split('/').at(-1), r[1]])).toEqual([
      ['run-1-0002.parquet', 1],
      ['run-1.parquet', 5],
    ]);
    const seq = duckdb(
      `SELECT count(*), count(DISTINCT _seq), min(_seq), max(_seq), max(_seq) FILTER (WHERE id = 'form-04500') FROM read_parquet(${glob(dir, 'forms')})`,
    );
    expect(seq.rows).toEqual([[4501, 4501, 0, 4500, 4500]]);
    const meta = duckdb(`SELECT DISTINCT compression FROM parquet_metadata(${glob(dir, 'forms')})`);
    expect(meta.rows).toEqual([['SNAPPY']]);
  });

  it('reads a column added to the query between runs as null in the older files', async () => {
    const dir = tempDir();
    const before: TableSpec = { name: 'cases', headings: ['id', 'name'], dataTypes: [null, null] };
    const after: TableSpec = {
      name: 'cases',
      headings: ['id', 'name', 'age'],
      dataTypes: [null, null, 'integer'],
    };
    const first = await createSink({ format: 'parquet', output: dir });
    await first.begin([before], run('run-1'));
    await first.writeRows('cases', [['c1', 'Ann']]);
    await first.finish();
    const second = await createSink({ format: 'parquet', output: dir });
    await second.begin([after], run('run-2'));
    await second.writeRows('cases', [['c2', 'Bob', 41]]);
    await second.finish();

    const read = duckdb(
      `SELECT id, name, age, _run_id FROM read_parquet(${glob(dir, 'cases')}, union_by_name = true) ORDER BY id`,
    );
    expect(read.types).toEqual(['VARCHAR', 'VARCHAR', 'BIGINT', 'VARCHAR']);
    expect(read.rows).toEqual([
      ['c1', 'Ann', null, 'run-1'],
      ['c2', 'Bob', 41, 'run-2'],
    ]);
  });

  it("types columns without a Data Type by their Map Via's kind, and writes the missing-value text in them as null", async () => {
    // prepare: what str2num, str2bool, str2date and count-selected give, with DET's missing value "---"
    const visits: TableSpec = {
      name: 'visits',
      headings: ['id', 'weight', 'referred', 'seen_on', 'symptoms', 'note'],
      dataTypes: [null, null, null, null, null, null],
      valueKinds: [null, 'number', 'boolean', 'datetime', 'integer', null],
      missingValue: '---',
    };
    const dir = tempDir();
    const sink = await createSink({ format: 'parquet', output: dir });

    // act
    await sink.begin([visits], run('run-1'));
    await sink.writeRows('visits', [
      ['v1', 61.5, true, new Date(Date.UTC(2024, 2, 1, 9, 55)), 2, 'ok'],
      ['v2', 7, false, new Date(Date.UTC(2024, 2, 2)), 0, 3],
      ['v3', '---', '---', '---', '---', '---'],
    ]);
    await sink.finish();

    // assert
    const read = duckdb(
      `SELECT * EXCLUDE (_run_id, _exported_at, _seq, run_date) FROM read_parquet(${glob(dir, 'visits')}) ORDER BY id`,
    );
    expect(read.types).toEqual(['VARCHAR', 'DOUBLE', 'BOOLEAN', 'TIMESTAMP', 'BIGINT', 'VARCHAR']);
    expect(read.rows).toEqual([
      ['v1', 61.5, true, '2024-03-01 09:55:00.000', 2, 'ok'],
      ['v2', 7, false, '2024-03-02 00:00:00.000', 0, '3'],
      ['v3', null, null, null, null, '---'],
    ]);
    // Only the typed columns carry min/max statistics.
    const stats = duckdb(
      `SELECT path_in_schema, stats_min_value IS NOT NULL FROM parquet_metadata(${glob(dir, 'visits')}) WHERE path_in_schema IN ('id', 'weight', 'seen_on') ORDER BY 1`,
    );
    expect(stats.rows).toEqual([
      ['id', false],
      ['seen_on', true],
      ['weight', true],
    ]);
  });

  it('writes a header-only file with the full schema for a table without rows', async () => {
    const dir = tempDir();
    const sink = await createSink({ format: 'parquet', output: dir });
    await sink.begin([typedTable], run('run-1'));
    await sink.finish();
    const read = duckdb(`DESCRIBE SELECT * EXCLUDE (run_date) FROM read_parquet(${glob(dir, 'visits')})`);
    expect(read.rows.map((r) => [r[0], r[1]])).toEqual(
      parquetColumns(typedTable).map((c) => [
        c.name,
        {
          string: 'VARCHAR',
          json: 'VARCHAR',
          bigint: 'BIGINT',
          double: 'DOUBLE',
          boolean: 'BOOLEAN',
          date: 'DATE',
          timestamp: 'TIMESTAMP',
        }[c.type],
      ]),
    );
    expect(duckdb(`SELECT count(*) FROM read_parquet(${glob(dir, 'visits')})`).rows).toEqual([[0]]);
  });
});

describe.skipIf(!hasDuckdb)('parquet output to S3', () => {
  let s3: S3Client;
  let bucket: string;

  beforeAll(async () => {
    s3 = motoS3(inject('motoEndpoint'));
    bucket = `parquet-${randomUUID().slice(0, 8)}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  });

  it('uploads the same partitioned layout, readable after download', async () => {
    const sink = await createSink({
      format: 'parquet',
      output: `s3://${bucket}/commcare/demo`,
      s3Client: s3,
    });
    await sink.begin([formsTable], run('run-1'));
    await sink.writeRows(
      'forms',
      Array.from({ length: 300 }, (_, i) => formRow(i)),
    );
    await sink.finish();

    const listed = await s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: 'commcare/demo/forms/' }),
    );
    const keys = (listed.Contents ?? []).map((c) => c.Key!);
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatch(/^commcare\/demo\/forms\/run_date=\d{4}-\d{2}-\d{2}\/run-1\.parquet$/);
    const body = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: keys[0] }));
    const dir = tempDir();
    mkdirSync(join(dir, 'forms'));
    writeFileSync(join(dir, 'forms', 'run-1.parquet'), await body.Body!.transformToByteArray());
    const read = duckdb(`SELECT count(*), count(DISTINCT id) FROM read_parquet(${glob(dir, 'forms')})`);
    expect(read.rows).toEqual([[300, 300]]);
  });
});

import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_QUERY } from '../../functions/cli/demo-command';
import { main } from '../../functions/cli/main';
import { type RunningSandbox, startSandbox } from '../../functions/sandbox';
import { createDatabase, withDb } from '../support/databases';
import { sandboxExportArgs } from '../support/sandbox-export';
import { captureIO } from './capture';

/**
 * A warehouse DET 1.15 has been filling, built here as DET writes it (no DET needed): its tables with
 * `id varchar(255)` primary keys and text columns, `alembic_version` at DET 1.15's head, and
 * `commcare_export_runs` as its migrations leave it (column order and types included), with the rows
 * DET's CheckpointManager writes: one per table per batch, then final ones, `key` null and the query
 * file's MD5 when no `--checkpoint-key` is given, `since_param` the last record's `indexed_on` as naive
 * UTC ISO text. `ccexport` with the same query and project must resume from there, not pull everything.
 */

const KEY = 'det-takeover-key-0a9e4';
const USER = 'det-user@example.org';
const PROJECT = 'warehouse';
const SENTINEL = 'written by DET';

let sandbox: RunningSandbox;
let scratchUrl: string;
let detUrl: string;
let cutoff: string;
let detRows: Record<string, number>;

function args(output: string, ...extra: string[]): string[] {
  const source = { url: sandbox.url, project: PROJECT, username: USER };
  return sandboxExportArgs(source, 'sql', output, '--auth-mode', 'apikey', '--batch-size', '50', ...extra);
}

/** `ccexport checkpoint` on the database DET filled. */
function checkpointArgs(...flags: string[]): string[] {
  return ['checkpoint', '--output', detUrl, '--project', PROJECT, ...flags];
}

/** Python's `datetime.isoformat()` of HQ's `indexed_on` parsed with `ignoretz`: what DET stores. */
function detSinceParam(indexedOn: string): string {
  return indexedOn.replace(/Z$/, '').replace(/\.0+$/, '');
}

/** commcare_export_runs after DET 1.15's migrations (c36489c5a628 ... 3b37b3b06104), in their order. */
const DET_RUNS_DDL = `CREATE TABLE commcare_export_runs (
  id VARCHAR(64) NOT NULL,
  query_file_name VARCHAR(255),
  query_file_md5 VARCHAR(255),
  since_param VARCHAR(32),
  final BOOLEAN,
  time_of_run VARCHAR(32),
  project VARCHAR(32),
  commcare VARCHAR(255),
  key VARCHAR(255),
  table_name VARCHAR(255),
  data_source VARCHAR(255),
  last_doc_id VARCHAR(255),
  pagination_mode VARCHAR(255),
  cursor VARCHAR(255),
  PRIMARY KEY (id)
)`;

async function detRun(
  db: pg.Client,
  row: {
    md5: string;
    table: string;
    since: string;
    at: string;
    final: boolean;
    key?: string;
    project?: string;
  },
): Promise<void> {
  await db.query(
    `INSERT INTO commcare_export_runs (id, query_file_name, query_file_md5, since_param, final, time_of_run,
       project, commcare, key, table_name, data_source, last_doc_id, pagination_mode, cursor)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'form', $11, 'date_indexed', NULL)`,
    [
      randomUUID().replaceAll('-', ''),
      'household-registration.xlsx',
      row.md5,
      row.since,
      row.final,
      row.at,
      row.project ?? PROJECT,
      sandbox.url,
      row.key ?? null,
      row.table,
      `doc-${row.since}`,
    ],
  );
}

beforeAll(async () => {
  sandbox = await startSandbox({
    seed: 23,
    projects: [{ name: PROJECT, forms: 400, cases: 20 }],
    credentials: [{ username: USER, apiKey: KEY }],
  });
  const forms = [...sandbox.dataset.timeline(PROJECT, 'form')];
  // DET's run ended at --until (whole seconds); its checkpoint is the last record it saw before that.
  const until = String(forms[Math.floor(forms.length / 2)]?.indexed_on).slice(0, 19);
  const seen = forms.map((f) => String(f.indexed_on)).filter((t) => Date.parse(t) < Date.parse(`${until}Z`));
  cutoff = seen[seen.length - 1] as string;

  // What DET's first run loaded: the records indexed up to the cutoff, into tables shaped as DET makes them.
  scratchUrl = await createDatabase('det_scratch');
  const first = captureIO({ CCEXPORT_API_KEY: KEY });
  const code = await main(args(scratchUrl, '--until', until), first);
  expect(first.err()).toBe('');
  expect(code).toBe(0);
  detUrl = await createDatabase('det_warehouse');
  detRows = {};
  const md5 = createHash('md5').update(readFileSync(DEMO_QUERY)).digest('hex');
  await withDb(scratchUrl, (scratch) =>
    withDb(detUrl, async (det) => {
      for (const table of ['households', 'household_members']) {
        const columns = (
          await scratch.query<{ column_name: string }>(
            `SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`,
            [table],
          )
        ).rows.map((r) => r.column_name);
        const others = columns.filter((c) => c !== 'id');
        await det.query(
          `CREATE TABLE "${table}" (id VARCHAR(255) NOT NULL, ${others.map((c) => `"${c}" TEXT`).join(', ')}, PRIMARY KEY (id))`,
        );
        const rows = (await scratch.query(`SELECT * FROM "${table}"`)).rows as Record<string, unknown>[];
        const marked = others[others.length - 1] as string;
        for (const row of rows) {
          const values = columns.map((c) =>
            c === marked
              ? SENTINEL
              : row[c] === null
                ? null
                : String(row[c] instanceof Date ? (row[c] as Date).toISOString() : row[c]),
          );
          await det.query(
            `INSERT INTO "${table}" (${columns.map((c) => `"${c}"`).join(', ')}) VALUES (${columns.map((_, i) => `$${i + 1}`).join(', ')})`,
            values,
          );
        }
        detRows[table] = rows.length;
      }
      await det.query(
        'CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, PRIMARY KEY (version_num))',
      );
      await det.query(`INSERT INTO alembic_version VALUES ('3b37b3b06104')`);
      await det.query(DET_RUNS_DDL);
      const since = detSinceParam(cutoff);
      const early = detSinceParam(String(forms[10]?.indexed_on));
      for (const table of ['households', 'household_members']) {
        // An older run's final checkpoint, this run's batch checkpoints (DET deletes them at its final one,
        // so only the final row is left), and rows of another key and another project that must not count.
        await detRun(det, { md5, table, since: early, at: '2026-01-01T00:00:00.000001', final: true });
        await detRun(det, { md5, table, since, at: '2026-01-02T00:00:00.000001', final: true });
        await detRun(det, {
          md5: 'other',
          table,
          since: early,
          at: '2026-01-03T00:00:00',
          final: true,
          key: 'x',
        });
        await detRun(det, {
          md5,
          table,
          since: early,
          at: '2026-01-04T00:00:00',
          final: true,
          project: 'other',
        });
      }
    }),
  );
});

afterAll(async () => {
  await sandbox.close();
});

async function sentinelRows(table: string): Promise<number> {
  return withDb(detUrl, async (db) => {
    const columns = (
      await db.query<{ column_name: string }>(
        `SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`,
        [table],
      )
    ).rows.map((r) => r.column_name);
    const marked = columns[columns.length - 1] as string;
    const { rows } = await db.query<{ n: string }>(
      `SELECT count(*) AS n FROM "${table}" WHERE "${marked}" = $1`,
      [SENTINEL],
    );
    return Number(rows[0]?.n);
  });
}

async function columnTypes(): Promise<string[]> {
  return withDb(detUrl, async (db) =>
    (
      await db.query<{ d: string }>(
        `SELECT table_name || '.' || column_name || ' ' || data_type || coalesce('(' || character_maximum_length || ')', '') AS d
           FROM information_schema.columns WHERE table_name IN ('households', 'household_members', 'commcare_export_runs')
          ORDER BY table_name, ordinal_position`,
      )
    ).rows.map((r) => r.d),
  );
}

describe('taking over a DET warehouse', () => {
  it("continues from DET's last checkpoint into DET's tables, as they are, and says so", async () => {
    expect(detRows.households).toBeGreaterThan(20);
    expect(await sentinelRows('households')).toBe(detRows.households);
    const typesBefore = await columnTypes();
    const runsBefore = await withDb(
      detUrl,
      async (db) => (await db.query('SELECT * FROM commcare_export_runs ORDER BY id')).rows,
    );

    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    expect(await main(args(detUrl), io)).toBe(0);
    const since = detSinceParam(cutoff);
    expect(io.err()).toContain(
      `took over DET's checkpoint from "public"."commcare_export_runs" for household_members, households (date_indexed since ${since}, run at 2026-01-02T00:00:00.000001`,
    );
    expect(io.err()).toContain("DET's tables are used as they are");

    // Records DET loaded before its checkpoint were not pulled again (their rows keep DET's values);
    // the tables hold every record, once.
    expect(await sentinelRows('households')).toBeGreaterThan((detRows.households ?? 0) * 0.9);
    const full = await createDatabase('det_full');
    expect(await main(args(full), captureIO({ CCEXPORT_API_KEY: KEY }))).toBe(0);
    for (const table of ['households', 'household_members']) {
      const ids = async (url: string) =>
        withDb(url, async (db) =>
          (await db.query<{ id: string }>(`SELECT id FROM "${table}" ORDER BY id`)).rows.map((r) => r.id),
        );
      expect(await ids(detUrl)).toEqual(await ids(full));
    }

    // DET's tables and its checkpoint rows are left as DET made them.
    expect(await columnTypes()).toEqual(typesBefore);
    expect(typesBefore).toContain('households.id character varying(255)');
    expect(
      await withDb(
        detUrl,
        async (db) => (await db.query('SELECT * FROM commcare_export_runs ORDER BY id')).rows,
      ),
    ).toEqual(runsBefore);

    // The next run goes on from our own checkpoint.
    const next = captureIO({ CCEXPORT_API_KEY: KEY });
    expect(await main(args(detUrl), next)).toBe(0);
    expect(next.err()).not.toContain('took over');
  });

  it("does not take over DET's checkpoint of another query file (another MD5)", async () => {
    const other = await createDatabase('det_other');
    await withDb(detUrl, async (det) => {
      const runs = (await det.query('SELECT * FROM commcare_export_runs')).rows as Record<string, unknown>[];
      await withDb(other, async (db) => {
        await db.query(DET_RUNS_DDL);
        for (const r of runs) {
          await db.query(
            `INSERT INTO commcare_export_runs (id, query_file_md5, since_param, final, time_of_run, project, key, table_name, pagination_mode)
             VALUES ($1, 'not-this-query', $2, $3, $4, $5, $6, $7, $8)`,
            [r.id, r.since_param, r.final, r.time_of_run, r.project, r.key, r.table_name, r.pagination_mode],
          );
        }
      });
    });
    const io = captureIO({ CCEXPORT_API_KEY: KEY });
    expect(await main(args(other), io)).toBe(0);
    expect(io.err()).not.toContain('took over');
  });

  it("history lists our checkpoints and DET's; checkpoint moves them to a new key and resets them", async () => {
    const md5 = createHash('md5').update(readFileSync(DEMO_QUERY)).digest('hex');
    const history = captureIO();
    expect(
      await main(['history', '--output', detUrl, '--project', PROJECT, '--query', DEMO_QUERY], history),
    ).toBe(0);
    const text = history.out();
    expect(text).toContain('Checkpoints (commcare_export_checkpoints):');
    expect(text).toMatch(new RegExp(`${md5}\\s+${PROJECT}\\s+households, household_members\\s+form`));
    expect(text).toContain("DET's checkpoints (commcare_export_runs");
    expect(text).toMatch(
      new RegExp(
        `${md5}\\s+${PROJECT}\\s+households\\s+household-registration.xlsx\\s+${detSinceParam(cutoff)}`,
      ),
    );
    expect(text).not.toContain('other');

    const both = captureIO();
    expect(await main(checkpointArgs('--query', DEMO_QUERY, '--reset', '--to-key', 'x'), both)).toBe(2);

    const move = captureIO();
    expect(
      await main(checkpointArgs('--query', DEMO_QUERY, '--to-key', 'renamed', '--only', 'ours'), move),
    ).toBe(0);
    expect(move.out()).toContain(`key ${md5} to key renamed`);
    const moved = captureIO();
    expect(await main(['history', '--output', detUrl, '--checkpoint-key', 'renamed'], moved)).toBe(0);
    expect(moved.out()).toMatch(/renamed\s+warehouse\s+households, household_members\s+form/);
    // A run under the new key resumes from the moved checkpoint: nothing re-pulled, nothing taken over.
    const before = await sentinelRows('households');
    const run = captureIO({ CCEXPORT_API_KEY: KEY });
    expect(await main(args(detUrl, '--checkpoint-key', 'renamed'), run)).toBe(0);
    expect(run.err()).not.toContain('took over');
    expect(await sentinelRows('households')).toBe(before);

    const reset = captureIO();
    expect(await main(checkpointArgs('--checkpoint-key', 'renamed', '--reset'), reset)).toBe(0);
    expect(reset.out()).toContain('The next run exports everything.');
    const again = captureIO();
    expect(await main(checkpointArgs('--checkpoint-key', 'renamed', '--reset'), again)).toBe(1);
    // The query file's own key has DET's rows behind it: resetting ours says the next run takes them over.
    expect(await main(args(detUrl), captureIO({ CCEXPORT_API_KEY: KEY }))).toBe(0);
    const resetMd5 = captureIO();
    expect(await main(checkpointArgs('--query', DEMO_QUERY, '--reset', '--only', 'ours'), resetMd5)).toBe(0);
    expect(resetMd5.out()).toContain(
      "DET's rows of this key are kept (--only ours): the next run takes DET's checkpoint over",
    );
  });
});

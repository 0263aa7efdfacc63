/**
 * Query-transform throughput: a 30-column form table plus a child table over in-memory HQ-shaped forms.
 * `node --import tsx bench/query.ts [records]` prints rows/s (one core, no I/O).
 */
import { fileURLToPath } from 'node:url';
import ExcelJS from 'exceljs';
import type { JsonObject } from '../functions/common/json';
import { compileWorkbook } from '../functions/query/index';

function record(i: number): JsonObject {
  const id = `form-${String(i).padStart(6, '0')}`;
  const child = [0, 1, 2].map((k) => ({
    name: `c${i}-${k}`,
    sex: k % 2 ? 'female' : 'male',
    dob: `2020-01-0${k + 1}`,
    age: String(k + 1),
  }));
  return {
    id,
    domain: 'demo',
    app_id: 'app-1',
    xmlns: 'http://openrosa.org/formdesigner/BENCH',
    received_on: '2024-03-01T10:00:00.123456Z',
    metadata: { userID: `user-${i % 50}`, timeStart: '2024-03-01T09:55:00Z' },
    form: {
      '@name': 'Visit',
      patient: { name: `Patient ${i}`, age: String(20 + (i % 50)), gender: i % 2 ? 'f' : 'm' },
      symptoms: 'fever cough',
      referred: i % 3 ? 'true' : 'false',
      weight: { '#text': '61.5', '@unit': 'kg' },
      meta: { instanceID: id, timeEnd: '2024-03-01T10:00:00Z' },
      case: { '@case_id': `case-${i}`, update: { visits: '3' } },
      q: Object.fromEntries(Array.from({ length: 20 }, (_, k) => [`q${k}`, `answer ${k}`])),
      child: i % 4 === 0 ? child[0]! : child,
    },
  };
}

async function workbook(): Promise<Buffer> {
  const wb = new ExcelJS.Workbook();
  const forms = wb.addWorksheet('forms');
  const fields: [string, string, string?][] = [
    ['id', 'id'],
    ['received_on', 'received_on', 'str2date'],
    ['user', 'metadata.userID'],
    ['name', 'form.patient.name'],
    ['age', 'form.patient.age', 'str2num'],
    ['gender', 'form.patient.gender'],
    ['fever', 'form.symptoms', 'selected(fever)'],
    ['referred', 'form.referred', 'str2bool'],
    ['weight', 'form.weight'],
    ['case_id', 'form.case.@case_id'],
    ...Array.from({ length: 20 }, (_, k): [string, string] => [`q${k}`, `form.q.q${k}`]),
  ];
  forms.addRow(['Data Source', 'Filter Name', 'Filter Value', 'Field', 'Source Field', 'Map Via']);
  fields.forEach(([f, s, via], i) => {
    forms.addRow([
      i === 0 ? 'form' : null,
      i === 0 ? 'xmlns.exact' : null,
      i === 0 ? 'x' : null,
      f,
      s,
      via ?? null,
    ]);
  });
  const kids = wb.addWorksheet('children');
  kids.addRow(['Data Source', 'Filter Name', 'Filter Value', 'Field', 'Source Field', 'Map Via']);
  kids.addRow(['form.form.child[*]', 'xmlns.exact', 'x', 'id', 'id']);
  for (const [f, s, v] of [
    ['form_id', '$.id'],
    ['name', 'name'],
    ['sex', 'sex'],
    ['dob', 'dob', 'str2date'],
    ['age', 'age', 'str2num'],
  ])
    kids.addRow([null, null, null, f, s, v ?? null]);
  return Buffer.from(await wb.xlsx.writeBuffer());
}

export async function benchQueryTransform(opts?: {
  records?: number;
}): Promise<{ rows: number; seconds: number; rowsPerSecond: number }> {
  const n = opts?.records ?? 50_000;
  const q = await compileWorkbook(await workbook(), { baseUrl: 'https://www.commcarehq.org' });
  const source = q.sources[0]!;
  const records = Array.from({ length: n }, (_, i) => record(i));
  // Warm-up so the figure is the steady state, as a long export sees it.
  for (let i = 0; i < Math.min(2000, n); i++) for (const t of source.tables) t.rowsFor(record(i));
  let rows = 0;
  const start = process.hrtime.bigint();
  for (const r of records) for (const t of source.tables) rows += t.rowsFor(r).length;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { rows, seconds, rowsPerSecond: Math.round(rows / seconds) };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const records = Number(process.argv[2] ?? 50_000);
  const r = await benchQueryTransform({ records });
  console.log(
    `query transform: ${r.rows} rows in ${r.seconds.toFixed(2)} s = ${r.rowsPerSecond.toLocaleString('en-US')} rows/s`,
  );
}

/** Hostile query workbooks built with exceljs, a fake HQ answering whatever body a test gives, and file listing. */
import { existsSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import ExcelJS from 'exceljs';

export type SheetRows = (string | null)[][];

export const FORM_HEADINGS = [
  'Data Source',
  'Filter Name',
  'Filter Value',
  'Field',
  'Source Field',
  'Map Via',
];

/** A DET query workbook: each sheet a name and rows, the first row the headings. */
export async function workbook(sheets: { name: string; rows: SheetRows }[]): Promise<Buffer> {
  const wb = new ExcelJS.Workbook();
  for (const s of sheets) {
    const ws = wb.addWorksheet(s.name);
    s.rows.forEach((row, i) => {
      row.forEach((value, j) => {
        if (value !== null) ws.getCell(i + 1, j + 1).value = value;
      });
    });
  }
  return Buffer.from(await wb.xlsx.writeBuffer());
}

/** A form sheet in DET's layout: the first data row carries the source. */
export function formSheet(columns: [field: string, source: string, mapVia?: string][]): SheetRows {
  return [
    FORM_HEADINGS,
    ...columns.map(([field, source, mapVia], i) => [
      i === 0 ? 'form' : null,
      null,
      null,
      field,
      source,
      mapVia ?? null,
    ]),
  ];
}

/** Every file under a folder (recursively); none when it does not exist. */
export function filesUnder(folder: string): string[] {
  if (!existsSync(folder)) return [];
  return readdirSync(folder, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

/** A loopback server standing in for HQ that answers every request with the given status and body. */
export async function fakeHq(answer: () => { status: number; body: string | Buffer; type?: string }) {
  let requests = 0;
  const server: Server = createServer((req, res) => {
    requests++;
    req.resume();
    const { status, body, type } = answer();
    res.writeHead(status, {
      'Content-Type': type ?? 'application/json',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests: () => requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A one-page tastypie answer with the given objects (a raw JSON text, so tests can put anything in it). */
export function envelope(objectsJson: string, count = 1): string {
  return `{"meta": {"limit": 1000, "next": null, "offset": 0, "previous": null, "total_count": ${count}}, "objects": ${objectsJson}}`;
}

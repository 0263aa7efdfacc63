import { cellToJson } from '../cells';
import type { FileFormat } from './types';

/**
 * One JSON document per table and part: `{"name","headings","rows":[[...],...]}`, streamed row by row
 * (DET's json output lists tables without their rows, a defect). Numbers, booleans and nested values
 * stay JSON; dates become DET's `YYYY-MM-DD HH:MM:SS` strings.
 */
export const jsonFormat: FileFormat = {
  name: 'json',
  extension: 'json',
  contentType: 'application/json; charset=utf-8',
  open(table, out) {
    let started = false;
    let first = true;
    const header = async () => {
      if (!started) {
        started = true;
        await out.write(
          `{"name":${JSON.stringify(table.name)},"headings":${JSON.stringify(table.headings)},"rows":[`,
        );
      }
    };
    return {
      async writeRows(rows) {
        await header();
        if (rows.length === 0) return;
        const text = rows.map((r) => cellToJson(r)).join(',\n');
        await out.write(first ? `\n${text}` : `,\n${text}`);
        first = false;
      },
      async end() {
        await header();
        await out.write('\n]}\n');
      },
    };
  },
};

import { cellToJson } from '../cells';
import { BufferedText } from './buffered';
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
    const text = new BufferedText(out);
    let started = false;
    let first = true;
    const header = async () => {
      if (!started) {
        started = true;
        await text.add(
          `{"name":${JSON.stringify(table.name)},"headings":${JSON.stringify(table.headings)},"rows":[`,
        );
      }
    };
    return {
      async writeRows(rows) {
        await header();
        for (const row of rows) {
          await text.add(first ? `\n${cellToJson(row)}` : `,\n${cellToJson(row)}`);
          first = false;
        }
      },
      async end() {
        await header();
        await text.add('\n]}\n');
        await text.flush();
      },
    };
  },
};

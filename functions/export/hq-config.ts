/**
 * The fingerprint of an HQ export's DET config: what the workbook says, not its bytes. HQ builds the
 * workbook afresh on every download (openpyxl stamps its creation time into the file), so the bytes'
 * checksum changes at every run even when nobody touched the export; the fingerprint changes only when
 * a sheet, a cell or a value does.
 */
import { createHash } from 'node:crypto';
import { readWorkbook } from '../query/excel';

export async function configFingerprint(workbook: Buffer): Promise<string> {
  const hash = createHash('md5');
  for (const sheet of await readWorkbook(workbook)) {
    hash.update(JSON.stringify(['sheet', sheet.title]));
    for (let row = 1; row <= sheet.rows; row++) {
      const cells: unknown[] = [];
      for (let col = 1; col <= sheet.cols; col++) cells.push(sheet.get(row, col) ?? null);
      hash.update(JSON.stringify(cells));
    }
  }
  return hash.digest('hex');
}

/**
 * A reader for the plain workbooks query files are: sheets of strings, numbers and booleans. Every run
 * reads its query file first, and loading exceljs for it cost each run ~0.2 s of CPU and ~12 MB of
 * resident memory (its bundle is ~1 MB of code) before the first request to HQ.
 *
 * It reads the zip's central directory, inflates the parts it needs with node:zlib, and scans the XML
 * for what a query sheet holds. It returns null, and the caller reads the file with exceljs instead,
 * for anything whose reading exceljs does differently or that it does not handle the same way: a zip it
 * cannot lay out (zip64, encryption, an unknown compression), XML with namespace prefixes, date-formatted
 * numbers (exceljs turns them into dates), merged cells (exceljs repeats the master's value), phonetic runs, `_xHHHH_` escapes, inline dates, or a cell without its reference. So the result, when
 * there is one, is the grid exceljs would give; test/query/xlsx-light.test.ts checks that on every
 * workbook in the repository and on the shapes the hostile-workbook tests build.
 */
import { inflateRawSync } from 'node:zlib';

export type LightCell = string | number | boolean;

export interface LightSheet {
  readonly title: string;
  /** Row → column → value, 1-based; only cells holding a value. */
  readonly cells: Map<number, Map<number, LightCell>>;
}

interface ZipEntry {
  readonly method: number;
  readonly compressedSize: number;
  readonly localOffset: number;
}

const EOCD = 0x06054b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;

function zipEntries(buf: Buffer): Map<string, ZipEntry> | null {
  if (buf.length < 22) return null;
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 22 - 0xffff); i--) {
    if (buf.readUInt32LE(i) === EOCD) {
      eocd = i;
      break;
    }
  }
  if (eocd === -1) return null;
  const count = buf.readUInt16LE(eocd + 10);
  const offset = buf.readUInt32LE(eocd + 16);
  if (count === 0xffff || offset === 0xffffffff) return null; // zip64
  const entries = new Map<string, ZipEntry>();
  let p = offset;
  for (let k = 0; k < count; k++) {
    if (p + 46 > buf.length || buf.readUInt32LE(p) !== CENTRAL) return null;
    const flags = buf.readUInt16LE(p + 8);
    const method = buf.readUInt16LE(p + 10);
    const compressedSize = buf.readUInt32LE(p + 20);
    const nameLength = buf.readUInt16LE(p + 28);
    const extraLength = buf.readUInt16LE(p + 30);
    const commentLength = buf.readUInt16LE(p + 32);
    const localOffset = buf.readUInt32LE(p + 42);
    if ((flags & 1) !== 0 || compressedSize === 0xffffffff || localOffset === 0xffffffff) return null;
    const name = buf.toString('utf8', p + 46, p + 46 + nameLength);
    entries.set(name, { method, compressedSize, localOffset });
    p += 46 + nameLength + extraLength + commentLength;
  }
  return entries;
}

function entryText(buf: Buffer, entry: ZipEntry): string | null {
  const at = entry.localOffset;
  if (at + 30 > buf.length || buf.readUInt32LE(at) !== LOCAL) return null;
  const start = at + 30 + buf.readUInt16LE(at + 26) + buf.readUInt16LE(at + 28);
  const end = start + entry.compressedSize;
  if (end > buf.length) return null;
  const data = buf.subarray(start, end);
  if (entry.method === 0) return data.toString('utf8');
  if (entry.method === 8) return inflateRawSync(data).toString('utf8');
  return null;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

const REFERENCE = /&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);/g;

/** XML text → string: line ends normalised as an XML parser does, then references decoded; null if unsure. */
function xmlText(raw: string): string | null {
  const text = raw.replace(/\r\n?/g, '\n');
  if (!text.includes('&')) return text;
  // A bare `&` is not well-formed XML: leave the judgement to exceljs.
  if (text.replace(REFERENCE, '').includes('&')) return null;
  let bad = false;
  const out = text.replace(REFERENCE, (_, name: string) => {
    if (name[0] === '#') {
      const code = name[1] === 'x' ? Number.parseInt(name.slice(2), 16) : Number.parseInt(name.slice(1), 10);
      if (!(code >= 0 && code <= 0x10ffff)) bad = true;
      return bad ? '' : String.fromCodePoint(code);
    }
    const v = ENTITIES[name];
    if (v === undefined) bad = true;
    return v ?? '';
  });
  return bad ? null : out;
}

function attr(attrs: string, name: string): string | undefined {
  const m = new RegExp(`(?:^|\\s)${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)')`).exec(attrs);
  if (!m) return undefined;
  return xmlText(m[1] ?? m[2] ?? '') ?? undefined;
}

/** The text of an `<si>` or `<is>`: every `<t>` inside it, joined (rich text runs), or null if unsure. */
function richText(inner: string): string | null {
  if (inner.includes('<rPh')) return null; // phonetic runs: their <t> are not the text
  let out = '';
  for (const m of inner.matchAll(/<t(?:\s[^>]*)?(?:\/>|>([\s\S]*?)<\/t>)/g)) {
    const t = xmlText(m[1] ?? '');
    if (t === null) return null;
    out += t;
  }
  return /_x[0-9A-Fa-f]{4}_/.test(out) ? null : out;
}

/** Number formats exceljs reads as plain numbers: General, the numeric built-ins, no dates. */
function plainNumberFormat(id: number): boolean {
  return (id >= 0 && id <= 13) || (id >= 37 && id <= 44) || id === 48 || id === 49;
}

function cellRef(ref: string): [row: number, col: number] | null {
  const m = /^([A-Z]{1,3})([1-9][0-9]*)$/.exec(ref);
  if (!m) return null;
  let col = 0;
  for (const ch of m[1]!) col = col * 26 + (ch.charCodeAt(0) - 64);
  return [Number(m[2]), col];
}

/** Reads `bytes` as exceljs would for a plain workbook; null when the caller must use exceljs. */
export function readPlainWorkbook(bytes: Uint8Array): LightSheet[] | null {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const entries = zipEntries(buf);
  if (!entries) return null;
  const part = (name: string): string | null | undefined => {
    const entry = entries.get(name);
    return entry ? entryText(buf, entry) : undefined;
  };
  const workbook = part('xl/workbook.xml');
  const rels = part('xl/_rels/workbook.xml.rels');
  if (!workbook || !rels) return null;
  const all = [workbook, rels];
  if (all.some((x) => /<\/?[A-Za-z_][\w.-]*:(workbook|sheets|sheet|Relationships?)\b/.test(x))) return null;

  const targets = new Map<string, { type: string; target: string }>();
  for (const m of rels.matchAll(/<Relationship\b([^>]*?)\/?>/g)) {
    const id = attr(m[1]!, 'Id');
    const target = attr(m[1]!, 'Target');
    const type = attr(m[1]!, 'Type') ?? '';
    if (id !== undefined && target !== undefined) targets.set(id, { type, target });
  }

  let shared: string[] = [];
  const sharedXml = part('xl/sharedStrings.xml');
  if (sharedXml === null) return null;
  if (sharedXml !== undefined) {
    if (/<\/?[A-Za-z_][\w.-]*:(sst|si|t|r)\b/.test(sharedXml)) return null;
    shared = [];
    for (const m of sharedXml.matchAll(/<si(?:\s[^>]*)?(?:\/>|>([\s\S]*?)<\/si>)/g)) {
      const text = richText(m[1] ?? '');
      if (text === null) return null;
      shared.push(text);
    }
  }

  // Style index → number format id, to leave date-formatted numbers to exceljs.
  const formats: number[] = [];
  const styles = part('xl/styles.xml');
  if (styles === null) return null;
  if (styles !== undefined) {
    const xfs = /<cellXfs\b[^>]*>([\s\S]*?)<\/cellXfs>/.exec(styles);
    if (xfs) {
      for (const m of xfs[1]!.matchAll(/<xf\b([^>]*?)\/?>/g))
        formats.push(Number(attr(m[1]!, 'numFmtId') ?? '0'));
    }
  }

  const sheets: LightSheet[] = [];
  for (const m of workbook.matchAll(/<sheet\b([^>]*?)\/?>/g)) {
    const attrs = m[1]!;
    const title = attr(attrs, 'name');
    const rid = /(?:^|\s)r:id\s*=\s*"([^"]*)"/.exec(attrs)?.[1];
    if (title === undefined || rid === undefined) return null;
    const rel = targets.get(rid);
    if (!rel?.type.endsWith('/worksheet')) return null;
    const path = rel.target.startsWith('/') ? rel.target.slice(1) : `xl/${rel.target}`;
    const xml = part(path.replace(/\/\.\//g, '/'));
    if (!xml) return null;
    const cells = readSheet(xml, shared, formats);
    if (!cells) return null;
    sheets.push({ title, cells });
  }
  return sheets.length > 0 ? sheets : null;
}

function readSheet(
  xml: string,
  shared: readonly string[],
  formats: readonly number[],
): Map<number, Map<number, LightCell>> | null {
  if (/<\/?[A-Za-z_][\w.-]*:(worksheet|sheetData|row|c|v|f|is)\b/.test(xml)) return null;
  // exceljs gives every cell of a merged range the first cell's value. A hyperlink changes nothing read
  // here: exceljs keeps the cell's value as the link's text, which is what a query cell reads as.
  if (xml.includes('<mergeCell')) return null;
  const data = /<sheetData\s*\/>|<sheetData\b[^>]*>([\s\S]*?)<\/sheetData>/.exec(xml);
  if (!data) return null;
  const cells = new Map<number, Map<number, LightCell>>();
  for (const m of (data[1] ?? '').matchAll(/<c\b([^>]*?)(?:\/>|>([\s\S]*?)<\/c>)/g)) {
    const attrs = m[1]!;
    const inner = m[2] ?? '';
    const ref = attr(attrs, 'r');
    const at = ref === undefined ? null : cellRef(ref);
    if (!at) return null;
    const type = attr(attrs, 't') ?? 'n';
    const raw = /<v(?:\s[^>]*)?>([\s\S]*?)<\/v>/.exec(inner)?.[1];
    // exceljs turns a number, or a formula's result, in a date format into a date.
    if ((type === 'n' || inner.includes('<f')) && raw !== undefined) {
      if (!plainNumberFormat(formats[Number(attr(attrs, 's') ?? '0')] ?? 0)) return null;
    }
    let value: LightCell | null;
    if (type === 'inlineStr') {
      const is = /<is(?:\s[^>]*)?>([\s\S]*?)<\/is>/.exec(inner);
      value = is ? richText(is[1]!) : null;
      if (is && value === null) return null;
    } else if (raw === undefined) {
      value = null;
    } else if (type === 's') {
      const text = shared[Number(raw)];
      if (text === undefined) return null;
      value = text;
    } else if (type === 'str') {
      const text = xmlText(raw);
      if (text === null || /_x[0-9A-Fa-f]{4}_/.test(text)) return null;
      value = text;
    } else if (type === 'b') {
      value = raw.trim() === '1';
    } else if (type === 'e') {
      value = null;
    } else if (type === 'n') {
      const n = Number.parseFloat(raw);
      if (Number.isNaN(n)) return null;
      value = n;
    } else {
      return null; // 'd' (ISO dates) and anything unknown
    }
    if (value === null) continue;
    const [row, col] = at;
    let line = cells.get(row);
    if (!line) {
      line = new Map();
      cells.set(row, line);
    }
    line.set(col, value);
  }
  return cells;
}

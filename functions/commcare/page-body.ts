/**
 * Reading a list response body from its bytes, once.
 *
 * A 1,000-form page is about 2 MB. Decoding it whole to a string (two bytes a character as soon as one
 * character is outside Latin-1) and parsing that, then re-serialising every record for a JSON-lines file,
 * cost the exporter more CPU per record than HQ spends serving it. So the body stays bytes: a structural
 * scanner finds the top-level list (`"objects": [...]` or `"cases": [...]`) and the byte range of each item
 * in it, each item is decoded and parsed on its own, and the envelope around the list is parsed with the
 * list emptied. Each record keeps its original bytes (`rawJsonOf`), so raw mode writes them unchanged.
 *
 * The scanner only tracks strings and nesting; JSON.parse of the pieces does the validation. Anything the
 * scanner does not expect (items that are not objects, a repeated list key, a missing or truncated list)
 * falls back to parsing the whole body, so odd but valid bodies read exactly as JSON.parse reads them and
 * broken ones fail the same way.
 */
import type { JsonObject } from '../common/json';

/** Byte ranges found by `scanList`. */
export interface ListLayout {
  /** Index of the list's `[`. */
  readonly open: number;
  /** Index of the list's `]`. */
  readonly close: number;
  /** Start and end (exclusive) of each item, flattened: [s0, e0, s1, e1, ...]. */
  readonly items: number[];
  /** Whether a line break appears inside some item (a pretty-printed body). */
  readonly lineBreaks: boolean;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/**
 * Finds the array stored under `key` in the top-level object of `bytes` and the byte range of each of its
 * items. Null when the body is not laid out as `{ ..., "<key>": [ {..}, {..} ], ... }` with every item an
 * object and the key present once (the caller then parses the whole body).
 */
export function scanList(bytes: Uint8Array, key: string): ListLayout | null {
  const keyBytes = Buffer.from(key, 'utf8');
  const n = bytes.length;
  const items: number[] = [];
  let depth = 0;
  let open = -1;
  let close = -1;
  // Top-level object state: whether the next string is a key, and whether the last key was `key`.
  let expectKey = false;
  let keyMatched = false;
  let afterColon = false;
  // Inside the list (depth 2 between items): whether an item or a comma comes next.
  let inList = false;
  let wantItem = true;
  let itemStart = -1;
  let lineBreaks = false;
  let i = 0;
  while (i < n) {
    const c = bytes[i]!;
    if (c === QUOTE) {
      if (inList && depth === 2) return null; // a string item
      const start = i + 1;
      // memchr for the closing quote; a quote preceded by an odd run of backslashes is escaped.
      let j = bytes.indexOf(QUOTE, start);
      for (;;) {
        if (j === -1) return null;
        let slashes = 0;
        while (bytes[j - 1 - slashes] === BACKSLASH) slashes += 1;
        if ((slashes & 1) === 0) break;
        j = bytes.indexOf(QUOTE, j + 1);
      }
      if (depth === 1 && expectKey) {
        keyMatched = j - start === keyBytes.length && equalAt(bytes, start, keyBytes);
        expectKey = false;
      } else if (depth === 1) {
        keyMatched = false;
      }
      i = j + 1;
      continue;
    }
    if (isSpace(c)) {
      if (depth >= 3 && (c === 0x0a || c === 0x0d)) lineBreaks = true;
      i += 1;
      continue;
    }
    if (inList && depth === 2) {
      // Between items: exactly `{` when an item is due, `,` or `]` after one.
      if (c === CLOSE_BRACKET) {
        if (wantItem && items.length > 0) return null; // trailing comma
        close = i;
        inList = false;
        depth = 1;
        keyMatched = false;
        i += 1;
        continue;
      }
      if (wantItem) {
        if (c !== OPEN_BRACE) return null;
        itemStart = i;
        wantItem = false;
        depth = 3;
        i += 1;
        continue;
      }
      if (c !== COMMA) return null;
      wantItem = true;
      i += 1;
      continue;
    }
    if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (depth === 0) {
        if (c !== OPEN_BRACE) return null;
        expectKey = true;
      } else if (depth === 1 && afterColon && keyMatched) {
        if (c !== OPEN_BRACKET || open !== -1) return null; // not a list, or the key twice
        open = i;
        inList = true;
        wantItem = true;
        afterColon = false;
        depth = 2;
        i += 1;
        continue;
      }
      afterColon = false;
      depth += 1;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth -= 1;
      if (depth < 0) return null;
      if (inList && depth === 2) items.push(itemStart, i + 1);
      if (depth === 0) {
        // Only whitespace may follow the top-level object.
        for (let k = i + 1; k < n; k += 1) if (!isSpace(bytes[k]!)) return null;
        return open === -1 || close === -1 ? null : { open, close, items, lineBreaks };
      }
    } else if (depth === 1) {
      if (c === COMMA) {
        expectKey = true;
        keyMatched = false;
        afterColon = false;
      } else if (c === COLON) {
        afterColon = true;
      } else {
        // A number, true, false or null as a top-level value.
        afterColon = false;
        if (keyMatched) return null; // `key` holds something other than a list: let JSON.parse say
      }
    }
    i += 1;
  }
  return null;
}

function equalAt(bytes: Uint8Array, at: number, key: Uint8Array): boolean {
  for (let k = 0; k < key.length; k += 1) if (bytes[at + k] !== key[k]) return false;
  return true;
}

/** Record → its bytes in the response it came from (see `rawJsonOf`). */
const RAW = new WeakMap<object, Uint8Array>();

/**
 * The exact bytes (UTF-8 JSON, one object) HQ sent for `record`, when the client read it from a list
 * page and nobody gave it other bytes. Writers of raw JSON lines use them instead of `JSON.stringify`,
 * which is only right while the record is unchanged: the client never changes a record, and a caller
 * that changes one must not use this. Undefined for records that did not come from the client, or whose
 * bytes span lines (a pretty-printed body), or that may have held invalid UTF-8.
 */
export function rawJsonOf(record: object): Uint8Array | undefined {
  return RAW.get(record);
}

/** Thrown by `parseListBody` when the bytes are not JSON (the HTTP layer retries those). */
export class BodyNotJsonError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BodyNotJsonError';
  }
}

/**
 * Parses a list response: the root object with its list holding the records. With `keepRaw`, items keep
 * their bytes (`rawJsonOf`) when the scanner could lay the body out; otherwise the whole body is parsed.
 */
export function parseListBody(bytes: Buffer, listKey: string, keepRaw = true): unknown {
  const layout = scanList(bytes, listKey);
  if (layout === null) return parseWhole(bytes);
  let root: unknown;
  try {
    const envelope = bytes.toString('utf8', 0, layout.open + 1) + bytes.toString('utf8', layout.close);
    root = JSON.parse(envelope);
  } catch {
    return parseWhole(bytes);
  }
  const list = (root as Record<string, unknown>)[listKey];
  if (!Array.isArray(list) || list.length !== 0) return parseWhole(bytes);
  const { items, lineBreaks } = layout;
  for (let k = 0; k < items.length; k += 2) {
    const start = items[k]!;
    const end = items[k + 1]!;
    const text = bytes.toString('utf8', start, end);
    let record: JsonObject;
    try {
      record = JSON.parse(text) as JsonObject;
    } catch (error) {
      throw new BodyNotJsonError(`item ${k / 2} of "${listKey}" is not valid JSON`, { cause: error });
    }
    list.push(record);
    if (!keepRaw) continue;
    // U+FFFD may stand for bytes that were not UTF-8; a line break means a pretty-printed item, which
    // would break a JSON-lines file. Such items are written re-serialised instead.
    if (text.indexOf('\uFFFD') === -1 && !(lineBreaks && hasLineBreak(bytes, start, end))) {
      RAW.set(record, bytes.subarray(start, end));
    }
  }
  return root;
}

function hasLineBreak(bytes: Uint8Array, start: number, end: number): boolean {
  for (let k = start; k < end; k += 1) {
    const c = bytes[k];
    if (c === 0x0a || c === 0x0d) return true;
  }
  return false;
}

/** Whole-body parse, the fallback and the path for non-list bodies. */
export function parseWhole(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw new BodyNotJsonError(`a body that is not complete JSON (${bytes.length} bytes)`, { cause: error });
  }
}

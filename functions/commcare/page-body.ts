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
 *
 * A caller that reads only some parts of each item names them as key paths (`recordKeys`), and an item
 * is then parsed from those parts alone: its members with the paths' first keys, and inside an object a
 * path goes on into, only the members the paths name there (`projectObject`). A form's `metadata`,
 * `attachments`, a dozen small fields, and the case blocks and most of `meta` inside `form` are never
 * decoded nor parsed. The scanner checks the literals of the members it leaves out (`true`, `false`,
 * `null`, numbers), and a body with anything else where a token belongs is read whole, so a broken record
 * still fails when it is read; what it cannot see in a member left out is a slip of grammar between
 * well-formed tokens (a missing comma), which nothing reads either.
 */
import type { JsonObject, JsonValue } from '../common/json';
import { type KeyTree, keyTreeOf } from './key-paths';
import type { RecordKeyPath } from './types';

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
  /**
   * Where the string value of each asked-for top-level field of each item is: for item k and field f,
   * [start, end) of the string's bytes between its quotes at `2 * (k * fields + f)`. `start` is
   * `FIELD_ABSENT` when the item has no such key, `FIELD_NOT_PLAIN` when its value is not a string
   * without escapes (read it from the parsed record instead). The last occurrence of a repeated key wins,
   * as in JSON.parse.
   */
  readonly fields: Int32Array;
  /**
   * With kept paths (`scanList`'s `keep`), the byte ranges of each item's kept members, flattened: a
   * member is `"key": value`, from its key's opening quote to the end of its value, and members next to
   * each other are one range (their comma inside). A member read in part is a range from its key through
   * its value's `{`, the ranges of the members kept inside, and a range from its `}` (`keptText` puts no
   * comma after a `{` nor before a `}`). Item k's ranges are
   * `members[memberStarts[k]..memberStarts[k + 1])`, two numbers each, in the item's order, counted from
   * the item's first byte: 16 bits each when every item is shorter than 64 KiB, which halves what a
   * page waiting to be written holds for them. Null when every key is kept.
   */
  readonly members: Uint16Array | Int32Array | null;
  readonly memberStarts: Int32Array | null;
}

/** See `ListLayout.fields`. */
export const FIELD_ABSENT = -1;
/** See `ListLayout.fields`. */
export const FIELD_NOT_PLAIN = -2;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;

/** True when `byte` occurs in `bytes[start..end)` (a field's value: a short range, no view needed). */
function hasByte(bytes: Uint8Array, start: number, end: number, byte: number): boolean {
  for (let k = start; k < end; k += 1) if (bytes[k] === byte) return true;
  return false;
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/**
 * Finds the array stored under `key` in the top-level object of `bytes` and the byte range of each of its
 * items. Null when the body is not laid out as `{ ..., "<key>": [ {..}, {..} ], ... }` with every item an
 * object and the key present once (the caller then parses the whole body). With `keep` (key paths), it
 * also notes where each item's kept members (and the `fieldNames`) are (`ListLayout.members`); a key
 * written with an escape is kept whole whatever it is, as its bytes cannot be compared with a name.
 */
export function scanList(
  bytes: Uint8Array,
  key: string,
  fieldNames: readonly string[] = [],
  keep: readonly RecordKeyPath[] | null = null,
): ListLayout | null {
  const { keys, children } = itemProjection(key, fieldNames, keep ?? []);
  const nFields = fieldNames.length;
  const n = bytes.length;
  const items: number[] = [];
  const fieldSpans: number[] = [];
  // Cleared for the rest of the body at the first byte outside strings that is no JSON token.
  let projecting = keep !== null;
  // Kept ranges go to `MEMBER_SCRATCH` (`pushRange`, `openRange`), reused from body to body and copied out
  // at the end; each item's first range index goes to `memberStarts`, a growable scratch array too.
  MEMBER_SCRATCH.count = 0;
  let memberStarts = MEMBER_SCRATCH.starts;
  let itemCount = 0;
  // Where the current item's kept member starts (its key's opening quote), -1 while none is open.
  let memberStart = -1;
  // Inside an item (depth 3): whether the next string is one of its keys, which asked-for field that key
  // was (-1: none), and whether its value comes next.
  let itemExpectKey = false;
  let itemField = -1;
  let itemAfterColon = false;
  // How the value of the current item key is kept when it is an object: in part (`projectObject`), or
  // whole (null).
  let itemChild: Projection | null = null;
  let itemBase = 0;
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
      const j = stringEnd(bytes, start);
      if (j === -1) return null;
      if (depth === 1 && expectKey) {
        keyMatched = equalKey(bytes, start, j, keys, 0);
        expectKey = false;
      } else if (depth === 1) {
        keyMatched = false;
      } else if (depth === 3) {
        if (itemExpectKey) {
          const named = fieldIndex(bytes, start, j, keys);
          itemField = named < nFields ? named : -1;
          itemChild = named >= 0 ? children[named]! : null;
          if (projecting && (named >= 0 || hasByte(bytes, start, j, BACKSLASH)))
            memberStart = openRange(bytes, start - 1, memberStarts[itemCount - 1]!);
          itemExpectKey = false;
        } else if (itemAfterColon && itemField >= 0) {
          const at = itemBase + 2 * itemField;
          const plain = !hasByte(bytes, start, j, BACKSLASH);
          fieldSpans[at] = plain ? start : FIELD_NOT_PLAIN;
          fieldSpans[at + 1] = j;
        }
        itemAfterColon = false;
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
        if (projecting) {
          if (itemCount === memberStarts.length) memberStarts = grown(memberStarts);
          memberStarts[itemCount++] = MEMBER_SCRATCH.count;
        }
        memberStart = -1;
        wantItem = false;
        depth = 3;
        itemExpectKey = true;
        itemField = -1;
        itemAfterColon = false;
        itemBase = fieldSpans.length;
        for (let f = 0; f < nFields; f += 1) fieldSpans.push(FIELD_ABSENT, FIELD_ABSENT);
        i += 1;
        continue;
      }
      if (c !== COMMA) return null;
      wantItem = true;
      i += 1;
      continue;
    }
    if (depth === 3 && itemAfterColon) {
      // An asked-for field whose value is not a string: read it from the parsed record.
      if (itemField >= 0) fieldSpans[itemBase + 2 * itemField] = FIELD_NOT_PLAIN;
      itemAfterColon = false;
      if (c === OPEN_BRACE && itemChild !== null && projecting && memberStart >= 0) {
        // A kept member read in part: its key through the brace is a range, then the value's kept members.
        const itemFirst = memberStarts[itemCount - 1]!;
        pushRange(memberStart, i + 1);
        MEMBER_SCRATCH.lineBreaks = false;
        const end = projectObject(bytes, i, itemChild, itemFirst);
        if (end !== -1) {
          if (MEMBER_SCRATCH.lineBreaks) lineBreaks = true;
          // The closing brace starts the range that the next comma or the item's end closes.
          memberStart = openRange(bytes, end - 1, itemFirst);
          i = end;
          continue;
        }
        // Something the projection does not take: the body is read without kept keys (see `literalEnd`).
        projecting = false;
      }
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
      if (inList && depth === 2) {
        items.push(itemStart, i + 1);
        if (memberStart >= 0) pushRange(memberStart, i);
        memberStart = -1;
      }
      if (depth === 0) {
        // Only whitespace may follow the top-level object.
        if (!onlySpace(bytes, i + 1, n)) return null;
        if (open === -1 || close === -1) return null;
        let kept: Uint16Array | Int32Array | null = null;
        let keptStarts: Int32Array | null = null;
        if (projecting) {
          if (itemCount === memberStarts.length) memberStarts = grown(memberStarts);
          memberStarts[itemCount++] = MEMBER_SCRATCH.count;
          kept = relativeMembers(MEMBER_SCRATCH.members, memberStarts, itemCount, items);
          keptStarts = memberStarts.slice(0, itemCount);
        }
        MEMBER_SCRATCH.starts = memberStarts;
        return {
          open,
          close,
          items,
          lineBreaks,
          fields: Int32Array.from(fieldSpans),
          members: kept,
          memberStarts: keptStarts,
        };
      }
    } else if (depth === 3) {
      if (c === COMMA) {
        itemExpectKey = true;
        itemField = -1;
        if (memberStart >= 0) pushRange(memberStart, i);
        memberStart = -1;
      } else if (c === COLON) {
        itemAfterColon = true;
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
    if (projecting && c !== COMMA && c !== COLON && c !== OPEN_BRACE && c !== OPEN_BRACKET) {
      if (c !== CLOSE_BRACE && c !== CLOSE_BRACKET) {
        // A member left out is never parsed, so its literals are checked here: a body with anything
        // else where a token belongs is read whole, and its broken record fails when it is read.
        const end = literalEnd(bytes, i);
        if (end === -1) projecting = false;
        else {
          i = end;
          continue;
        }
      }
    }
    i += 1;
  }
  return null;
}

/**
 * Where `scanList` notes kept members while it scans, kept from one body to the next: typed arrays, whose
 * memory is outside the JavaScript heap. Plain arrays of a 5,000-case page's members grew past the size
 * V8 keeps in the young generation, and each page's then waited in the old generation for the next full
 * collection: 1,000,000 forms peaked 5–7 MB higher with them than without kept keys, 3 MB with these.
 */
const MEMBER_SCRATCH: { members: Int32Array; starts: Int32Array; count: number; lineBreaks: boolean } = {
  members: new Int32Array(1 << 14),
  starts: new Int32Array(1 << 12),
  // How many range bounds `members` holds; whether `projectObject` met a line break.
  count: 0,
  lineBreaks: false,
};

/**
 * The end of the string whose contents start at `start` (the index of its closing quote), or -1 when it
 * does not end: memchr for a quote, and a quote preceded by an odd run of backslashes is escaped.
 */
function stringEnd(bytes: Uint8Array, start: number): number {
  let j = bytes.indexOf(QUOTE, start);
  for (;;) {
    if (j === -1) return -1;
    let slashes = 0;
    while (bytes[j - 1 - slashes] === BACKSLASH) slashes += 1;
    if ((slashes & 1) === 0) return j;
    j = bytes.indexOf(QUOTE, j + 1);
  }
}

/**
 * True when a range starting at `start` can join the last one, which ends (exclusive) at `lastEnd`:
 * the byte at `lastEnd` is the comma, the brace or the first byte of the next range, and only
 * whitespace follows it up to `start`.
 */
function joinsLast(bytes: Uint8Array, lastEnd: number, start: number): boolean {
  return onlySpace(bytes, lastEnd + 1, start);
}

/** Adds the range [start, end) to `MEMBER_SCRATCH`. */
function pushRange(start: number, end: number): void {
  const scratch = MEMBER_SCRATCH;
  if (scratch.count + 2 > scratch.members.length) scratch.members = grown(scratch.members);
  scratch.members[scratch.count++] = start;
  scratch.members[scratch.count++] = end;
}

/**
 * Where a range starting at `start` begins: there, or at the start of the item's last range, removed
 * from `MEMBER_SCRATCH`, when only a comma and whitespace lie between them (`joinsLast`).
 */
function openRange(bytes: Uint8Array, start: number, itemFirst: number): number {
  const scratch = MEMBER_SCRATCH;
  if (scratch.count > itemFirst && joinsLast(bytes, scratch.members[scratch.count - 1]!, start)) {
    scratch.count -= 2;
    return scratch.members[scratch.count]!;
  }
  return start;
}

/**
 * Scans the object that opens at `open`, the value of a kept member read in part, and adds to
 * `MEMBER_SCRATCH` the ranges of its members with `projection`'s keys (objects among them read in part
 * in turn), the item's ranges starting at `itemFirst`. Returns the index after its closing brace, or -1
 * when the body ends first or holds something that is no JSON token where one belongs. Like the rest of
 * the scanner it checks the literals of what it leaves out and leaves the grammar to JSON.parse.
 */
function projectObject(bytes: Uint8Array, open: number, projection: Projection, itemFirst: number): number {
  const { keys, children } = projection;
  const n = bytes.length;
  let depth = 1;
  let expectKey = true;
  let afterColon = false;
  let child: Projection | null = null;
  let memberStart = -1;
  let i = open + 1;
  while (i < n) {
    const c = bytes[i]!;
    if (c === QUOTE) {
      const j = stringEnd(bytes, i + 1);
      if (j === -1) return -1;
      if (depth === 1 && expectKey) {
        const named = fieldIndex(bytes, i + 1, j, keys);
        if (named >= 0 || hasByte(bytes, i + 1, j, BACKSLASH)) memberStart = openRange(bytes, i, itemFirst);
        child = named >= 0 ? children[named]! : null;
        expectKey = false;
      } else if (depth === 1) afterColon = false;
      i = j + 1;
      continue;
    }
    if (isSpace(c)) {
      if (c === 0x0a || c === 0x0d) MEMBER_SCRATCH.lineBreaks = true;
      i += 1;
      continue;
    }
    if (depth === 1 && afterColon) {
      afterColon = false;
      if (c === OPEN_BRACE && child !== null && memberStart >= 0) {
        pushRange(memberStart, i + 1);
        const end = projectObject(bytes, i, child, itemFirst);
        if (end === -1) return -1;
        memberStart = openRange(bytes, end - 1, itemFirst);
        i = end;
        continue;
      }
    }
    if (c === OPEN_BRACE || c === OPEN_BRACKET) depth += 1;
    else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth -= 1;
      if (depth === 0) {
        if (memberStart >= 0) pushRange(memberStart, i);
        return i + 1;
      }
    } else if (c === COMMA) {
      if (depth === 1) {
        if (memberStart >= 0) pushRange(memberStart, i);
        memberStart = -1;
        expectKey = true;
        child = null;
      }
    } else if (c === COLON) {
      if (depth === 1) afterColon = true;
    } else {
      const end = literalEnd(bytes, i);
      if (end === -1) return -1;
      i = end;
      continue;
    }
    i += 1;
  }
  return -1;
}

/** True when `bytes[from..to)` is whitespace only. */
function onlySpace(bytes: Uint8Array, from: number, to: number): boolean {
  for (let k = from; k < to; k += 1) if (!isSpace(bytes[k]!)) return false;
  return true;
}

/**
 * The members' ranges counted from their item's first byte (see `ListLayout.members`); `starts` holds
 * `items + 1` entries, the last one the number of range bounds.
 */
function relativeMembers(
  members: Int32Array,
  starts: Int32Array,
  itemsPlusOne: number,
  items: readonly number[],
): Uint16Array | Int32Array {
  let longest = 0;
  for (let k = 0; 2 * k < items.length; k += 1)
    longest = Math.max(longest, items[2 * k + 1]! - items[2 * k]!);
  const out =
    longest < 0x10000
      ? new Uint16Array(starts[itemsPlusOne - 1]!)
      : new Int32Array(starts[itemsPlusOne - 1]!);
  for (let k = 0; k + 1 < itemsPlusOne; k += 1) {
    const base = items[2 * k]!;
    for (let m = starts[k]!; m < starts[k + 1]!; m += 1) out[m] = members[m]! - base;
  }
  return out;
}

/** `array` copied into one twice its size. */
function grown(array: Int32Array): Int32Array {
  const next = new Int32Array(array.length * 2);
  next.set(array);
  return next;
}

const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;

function isDigit(c: number | undefined): boolean {
  return c !== undefined && c >= DIGIT_0 && c <= DIGIT_9;
}

/**
 * The text of the top-level string `field` of the first item of the list `listKey`, read by walking the
 * body's structure only as far as that item (the envelope's members before the list, then one item, not
 * the page's thousand): what a caller planning from a page's first record needs before the page is read.
 * Null when the body is not laid out as `scanList` expects that far, the list is empty, or the value is
 * not a string without escapes (read the page instead). A key written with an escape is not `field`.
 * The last occurrence of a repeated key wins, as in JSON.parse. Nothing after the first item is looked
 * at, so a body broken further on still peeks (and fails when it is read).
 */
export function peekFirstItemField(bytes: Buffer, listKey: string, field: string): string | null {
  const n = bytes.length;
  let i = spaceEnd(bytes, 0, n);
  if (bytes[i] !== OPEN_BRACE) return null;
  i += 1;
  for (;;) {
    const member = memberAt(bytes, spaceEnd(bytes, i, n), listKey);
    if (member === null) return null;
    i = member.value;
    if (member.named) {
      if (bytes[i] !== OPEN_BRACKET) return null;
      i = spaceEnd(bytes, i + 1, n);
      return bytes[i] === OPEN_BRACE ? itemStringField(bytes, i, field) : null;
    }
    i = valueEnd(bytes, i);
    if (i === -1) return null;
    i = spaceEnd(bytes, i, n);
    if (bytes[i] !== COMMA) return null;
    i += 1;
  }
}

/** `peekFirstItemField` inside the item whose `{` is at `open`. */
function itemStringField(bytes: Buffer, open: number, field: string): string | null {
  const n = bytes.length;
  let found: string | null = null;
  let i = spaceEnd(bytes, open + 1, n);
  if (bytes[i] === CLOSE_BRACE) return null;
  for (;;) {
    const member = memberAt(bytes, i, field);
    if (member === null) return null;
    i = member.value;
    const end = valueEnd(bytes, i);
    if (end === -1) return null;
    if (member.named) {
      found =
        bytes[i] === QUOTE && !hasByte(bytes, i + 1, end - 1, BACKSLASH)
          ? bytes.toString('utf8', i + 1, end - 1)
          : null;
    }
    i = spaceEnd(bytes, end, n);
    if (bytes[i] === CLOSE_BRACE) return found;
    if (bytes[i] !== COMMA) return null;
    i = spaceEnd(bytes, i + 1, n);
  }
}

/**
 * The member whose key's opening quote is at `at`: whether its key is `word`, and where its value starts;
 * null when no `"key":` is there.
 */
function memberAt(bytes: Uint8Array, at: number, word: string): { named: boolean; value: number } | null {
  if (bytes[at] !== QUOTE) return null;
  const keyEnd = stringEnd(bytes, at + 1);
  if (keyEnd === -1) return null;
  const colon = spaceEnd(bytes, keyEnd + 1, bytes.length);
  if (bytes[colon] !== COLON) return null;
  return { named: isWord(bytes, at + 1, keyEnd, word), value: spaceEnd(bytes, colon + 1, bytes.length) };
}

/**
 * The end (exclusive) of the JSON value at `i`: a string, an object or array (its strings and nesting
 * followed), or a literal; -1 when it does not end or is no value.
 */
function valueEnd(bytes: Uint8Array, i: number): number {
  const c = bytes[i];
  if (c === QUOTE) {
    const j = stringEnd(bytes, i + 1);
    return j === -1 ? -1 : j + 1;
  }
  if (c !== OPEN_BRACE && c !== OPEN_BRACKET) return literalEnd(bytes, i);
  let depth = 0;
  for (let k = i; k < bytes.length; k += 1) {
    const b = bytes[k];
    if (b === QUOTE) {
      const j = stringEnd(bytes, k + 1);
      if (j === -1) return -1;
      k = j;
    } else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
      depth += 1;
    } else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
      depth -= 1;
      if (depth === 0) return k + 1;
    }
  }
  return -1;
}

/** The first index at or after `from` (below `to`) that is not whitespace. */
function spaceEnd(bytes: Uint8Array, from: number, to: number): number {
  let k = from;
  while (k < to && isSpace(bytes[k]!)) k += 1;
  return k;
}

/** True when `bytes[start..end)` is `word` in UTF-8 (as written, without escapes). */
function isWord(bytes: Uint8Array, start: number, end: number, word: string): boolean {
  const written = Buffer.from(word);
  if (end - start !== written.length) return false;
  for (let k = 0; k < written.length; k += 1) if (bytes[start + k] !== written[k]) return false;
  return true;
}

/** True when `bytes[at..]` starts with the ASCII `word`. */
function startsWith(bytes: Uint8Array, at: number, word: string): boolean {
  for (let k = 0; k < word.length; k += 1) if (bytes[at + k] !== word.charCodeAt(k)) return false;
  return true;
}

/** The end of the JSON literal (`true`, `false`, `null` or a number) at `i`, or -1 when there is none. */
function literalEnd(bytes: Uint8Array, i: number): number {
  const c = bytes[i];
  if (c === 0x74) return startsWith(bytes, i, 'true') ? i + 4 : -1;
  if (c === 0x66) return startsWith(bytes, i, 'false') ? i + 5 : -1;
  if (c === 0x6e) return startsWith(bytes, i, 'null') ? i + 4 : -1;
  let k = i;
  if (bytes[k] === 0x2d) k += 1; // -
  if (bytes[k] === DIGIT_0) k += 1;
  else if (isDigit(bytes[k])) while (isDigit(bytes[k])) k += 1;
  else return -1;
  if (bytes[k] === 0x2e) {
    // .
    k += 1;
    if (!isDigit(bytes[k])) return -1;
    while (isDigit(bytes[k])) k += 1;
  }
  if (bytes[k] === 0x65 || bytes[k] === 0x45) {
    // e, E
    k += 1;
    if (bytes[k] === 0x2b || bytes[k] === 0x2d) k += 1;
    if (!isDigit(bytes[k])) return -1;
    while (isDigit(bytes[k])) k += 1;
  }
  return k;
}

/**
 * The list's key, the asked-for field names and the other kept keys as UTF-8, in one byte array: key k
 * is `bytes[ends[k]..ends[k + 1])`, the list's key first. Typed arrays, so the scanner always sees the
 * same object shapes whatever fields a caller asks for (arrays of a different length or element kind
 * made V8 throw its optimized scanner away and compile it again).
 */
interface KeyTable {
  readonly bytes: Uint8Array;
  readonly ends: Int32Array;
  /**
   * The byte lengths of keys 1 on (not the list's key), as bits: bit n for a length n under 31, bit 31 for
   * any longer. Most keys of an item are none of the table's, and most of those have a length none has.
   */
  readonly lengths: number;
}

/** `KeyTable.lengths`' bit for a key of `length` bytes. */
function lengthBit(length: number): number {
  return length < 31 ? 1 << length : 1 << 31;
}

const KEY_TABLES = new Map<string, KeyTable>();

function keyTable(listKey: string, fieldNames: readonly string[], kept: readonly string[]): KeyTable {
  // JSON, not names joined with a separator: no kept keys and one empty key must not share a table.
  const id = JSON.stringify([listKey, fieldNames, kept]);
  let table = KEY_TABLES.get(id);
  if (table === undefined) {
    const parts = [listKey, ...fieldNames, ...kept].map((name) => Buffer.from(name, 'utf8'));
    const ends = new Int32Array(parts.length + 1);
    for (let k = 0; k < parts.length; k += 1) ends[k + 1] = ends[k]! + parts[k]!.length;
    let lengths = 0;
    for (let k = 1; k < parts.length; k += 1) lengths |= lengthBit(parts[k]!.length);
    table = { bytes: new Uint8Array(Buffer.concat(parts)), ends, lengths };
    if (KEY_TABLES.size < 100) KEY_TABLES.set(id, table);
  }
  return table;
}

/**
 * How the members of an object are kept: those whose keys are in `keys` (from entry 1 on; entry 0 is the
 * list's key at the top level and unused below it), each key's value whole (`children` null at the key's
 * index, as `fieldIndex` gives it) or, when it is an object, in part as its own projection says.
 */
interface Projection {
  readonly keys: KeyTable;
  readonly children: readonly (Projection | null)[];
}

const ITEM_PROJECTIONS = new Map<string, Projection>();

/**
 * The projection of a list's items: the asked-for fields and the kept paths' first keys, in a key table
 * with the list's key (see `keyTable`), and below them what the paths keep.
 */
function itemProjection(
  listKey: string,
  fieldNames: readonly string[],
  keep: readonly RecordKeyPath[],
): Projection {
  const id = JSON.stringify([listKey, fieldNames, keep]);
  let projection = ITEM_PROJECTIONS.get(id);
  if (projection === undefined) {
    const tree = keyTreeOf(keep);
    const kept = [...tree.keys()].filter((name) => !fieldNames.includes(name));
    projection = {
      keys: keyTable(listKey, fieldNames, kept),
      children: [...fieldNames, ...kept].map((name) => projectionOf(tree.get(name))),
    };
    if (ITEM_PROJECTIONS.size < 100) ITEM_PROJECTIONS.set(id, projection);
  }
  return projection;
}

/** The projection of a value kept in part (`tree`), or null for a value kept whole or not named at all. */
function projectionOf(tree: KeyTree | null | undefined): Projection | null {
  if (tree === null || tree === undefined) return null;
  const names = [...tree.keys()];
  return { keys: keyTable('', [], names), children: names.map((name) => projectionOf(tree.get(name))) };
}

/** Index of the asked-for field or kept key (after the fields) whose name is `bytes[start..end)`, or -1. */
function fieldIndex(bytes: Uint8Array, start: number, end: number, keys: KeyTable): number {
  if ((keys.lengths & lengthBit(end - start)) === 0) return -1;
  const n = keys.ends.length - 1;
  for (let k = 1; k < n; k += 1) if (equalKey(bytes, start, end, keys, k)) return k - 1;
  return -1;
}

/** True when `bytes[start..end)` is key `k` of `keys`. */
function equalKey(bytes: Uint8Array, start: number, end: number, keys: KeyTable, k: number): boolean {
  const from = keys.ends[k]!;
  const length = keys.ends[k + 1]! - from;
  if (end - start !== length) return false;
  const name = keys.bytes;
  for (let i = 0; i < length; i += 1) if (bytes[start + i] !== name[from + i]) return false;
  return true;
}

/**
 * Bodies whose whole ArrayBuffer nothing else uses: those http.ts `readBody` allocated itself (never a
 * chunk a socket or a pool handed out). Only these are freed by `ListItems.release`.
 */
const OWN_BODIES = new WeakSet<Buffer>();

/** Marks `bytes` as a body in a buffer of its own (see `OWN_BODIES`); returns it. */
export function ownBody(bytes: Buffer): Buffer {
  if (bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.length) OWN_BODIES.add(bytes);
  return bytes;
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
 * The records of a list body, each parsed when it is read, so that a page is held as its bytes (about a
 * fifth of its parsed size) and a parsed record lives only while it is turned into rows: V8 then frees it
 * in the young generation instead of promoting a whole page of objects. A few top-level string fields
 * (`indexed_on`, the id) are read straight from the bytes, for paging without parsing.
 *
 * A body the scanner cannot lay out is parsed whole; its records are then held parsed, as before.
 */
export class ListItems {
  readonly length: number;

  private constructor(
    private bytes: Buffer | null,
    private readonly layout: ListLayout | null,
    private readonly parsed: readonly JsonObject[] | null,
    private readonly fieldNames: readonly string[],
    private readonly keepRaw: boolean,
    private readonly listKey: string,
    private readonly origin: string | null,
  ) {
    this.length = parsed === null ? layout!.items.length / 2 : parsed.length;
  }

  static ofBytes(
    bytes: Buffer,
    layout: ListLayout,
    fieldNames: readonly string[],
    keepRaw: boolean,
    listKey: string,
    origin: string | null = null,
  ) {
    return new ListItems(bytes, layout, null, fieldNames, keepRaw, listKey, origin);
  }

  static ofRecords(records: readonly JsonObject[], fieldNames: readonly string[] = []): ListItems {
    return new ListItems(null, null, records, fieldNames, false, '', null);
  }

  /** True when `field` was asked for when the body was read, so `field(k, field)` may be called. */
  reads(field: string): boolean {
    return this.fieldNames.includes(field);
  }

  /**
   * Item `k`'s top-level `field` (one of the names it was read with), as JSON.parse would give it:
   * straight from the bytes when it is a string without escapes, else from the parsed item.
   */
  field(k: number, field: string): JsonValue | undefined {
    const f = this.fieldNames.indexOf(field);
    if (f === -1) throw new Error(`field "${field}" was not asked for when the body was read`);
    if (this.parsed !== null) return this.parsed[k]![field];
    const spans = this.layout!.fields;
    const at = 2 * (k * this.fieldNames.length + f);
    const start = spans[at]!;
    if (start === FIELD_ABSENT) return undefined;
    if (start === FIELD_NOT_PLAIN) return this.record(k)[field];
    return this.heldBytes().toString('utf8', start, spans[at + 1]!);
  }

  /**
   * Item `k`, parsed (a new object at each call for a body held as bytes): with kept paths, only the
   * members they keep (`ListLayout.members`), the others never decoded.
   */
  record(k: number): JsonObject {
    if (this.parsed !== null) return this.parsed[k]!;
    const bytes = this.heldBytes();
    const { items, lineBreaks, members, memberStarts } = this.layout!;
    const start = items[2 * k]!;
    const end = items[2 * k + 1]!;
    const text =
      members === null
        ? bytes.toString('utf8', start, end)
        : keptText(bytes, start, members, memberStarts!, k);
    let record: JsonObject;
    try {
      record = JSON.parse(text) as JsonObject;
    } catch (error) {
      const where = this.origin === null ? '' : ` in the answer to ${this.origin}`;
      throw new BodyNotJsonError(`item ${k} of "${this.listKey}"${where} is not valid JSON`, {
        cause: error,
      });
    }
    // U+FFFD may stand for bytes that were not UTF-8; a line break means a pretty-printed item, which
    // would break a JSON-lines file. Such items are written re-serialised instead.
    if (this.keepRaw && text.indexOf('\uFFFD') === -1 && !(lineBreaks && hasLineBreak(bytes, start, end))) {
      RAW.set(record, bytes.subarray(start, end));
    }
    return record;
  }

  private heldBytes(): Buffer {
    if (this.bytes === null)
      throw new Error(`the records of "${this.listKey}" were read after their page was released`);
    return this.bytes;
  }

  /**
   * Lets go of the body: nothing reads the items afterwards (`record` and `field` throw). A body in a
   * buffer of its own (`ownBody`: what http.ts `readBody` allocates for a page) has that memory freed
   * at the next young-generation collection, by moving its backing store to a new, unreferenced
   * ArrayBuffer (`structuredClone` with `transfer` detaches the old one), instead of at the next full
   * collection. Measured on 1,000,000 forms to csv (3 runs each, interleaved): peak RSS 119–123 →
   * 110–114 MB and CPU 34–37 → 30–31 s, the collector no longer carrying tens of MB of done pages.
   * Not done while records keep views of the bytes (`keepRaw`: `rawJsonOf`), nor for any other body
   * (a socket's chunk, a slice of a pool), whose memory may not be ours alone.
   */
  release(): void {
    const bytes = this.bytes;
    if (bytes === null) return;
    this.bytes = null;
    const whole = bytes.buffer;
    if (this.keepRaw || !OWN_BODIES.has(bytes) || !(whole instanceof ArrayBuffer)) return;
    try {
      structuredClone(whole, { transfer: [whole] });
    } catch {
      // Not transferable (marked so by its owner): the collector frees it as before.
    }
  }

  /** The items at `indexes` (ascending or not), in that order, each parsed as it is iterated. */
  select(indexes: readonly number[]): LazyRecords {
    return new LazyRecords(this, indexes);
  }
}

/** `{` item k's kept members `}` as text, the item starting at `base` (see `ListLayout.members`). */
function keptText(
  bytes: Uint8Array,
  base: number,
  members: Uint16Array | Int32Array,
  memberStarts: Int32Array,
  k: number,
): string {
  const from = memberStarts[k]!;
  const to = memberStarts[k + 1]!;
  // Braces, and a comma between ranges at most.
  let length = 2 + (to - from) / 2;
  for (let m = from; m < to; m += 2) length += members[m + 1]! - members[m]!;
  // An item larger than the scratch buffer gets a buffer of its own, which goes with it.
  const out = length <= TEXT_SCRATCH.length ? TEXT_SCRATCH : Buffer.allocUnsafe(length);
  out[0] = OPEN_BRACE;
  let at = 1;
  for (let m = from; m < to; m += 2) {
    const start = base + members[m]!;
    const end = base + members[m + 1]!;
    // No comma after a range that opens an object read in part, nor before one that closes it.
    if (m > from && out[at - 1] !== OPEN_BRACE && bytes[start] !== CLOSE_BRACE) out[at++] = COMMA;
    for (let b = start; b < end; b += 1) out[at++] = bytes[b]!;
  }
  out[at++] = CLOSE_BRACE;
  return out.toString('utf8', 0, at);
}

/** Where `keptText` assembles an item's kept ranges before decoding them at once (items up to 64 KiB). */
const TEXT_SCRATCH = Buffer.allocUnsafeSlow(1 << 16);

/** Records a page hands out: iterable, with a length, each record parsed when the iteration reaches it. */
export class LazyRecords implements Iterable<JsonObject> {
  readonly length: number;
  constructor(
    private readonly items: ListItems,
    private readonly indexes: readonly number[],
  ) {
    this.length = indexes.length;
  }

  *[Symbol.iterator](): Iterator<JsonObject> {
    for (const k of this.indexes) yield this.items.record(k);
  }

  /** True when `value` can read `field` of every record without parsing the ones that hold it plainly. */
  reads(field: string): boolean {
    return this.items.reads(field);
  }

  /** Record `i`'s top-level `field` (one that `reads`), as JSON.parse would give it. */
  value(i: number, field: string): JsonValue | undefined {
    return this.items.field(this.indexes[i]!, field);
  }

  /** Record `i`, parsed. */
  at(i: number): JsonObject {
    return this.items.record(this.indexes[i]!);
  }

  /** Lets go of the page's body (`ListItems.release`): a page's items are selected once. */
  release(): void {
    this.items.release();
  }
}

/**
 * Reads a list response: the root object (its list emptied when the items stay bytes) and the items.
 * `fields` are top-level string fields of the items to be read without parsing them (`ListItems.field`).
 */
export function readListBody(
  bytes: Buffer,
  listKey: string,
  options: {
    readonly fields?: readonly string[];
    readonly keepRaw?: boolean;
    /** Where the body came from (a URL path), for the error an item that is not JSON raises when read. */
    readonly origin?: string;
    /**
     * The only parts of an item the caller reads, as key paths (with `fields`, read whole): items are
     * parsed without the rest. Not with `keepRaw`, whose items keep all their bytes.
     */
    readonly recordKeys?: readonly RecordKeyPath[] | undefined;
  } = {},
): { readonly root: unknown; readonly items: ListItems | null } {
  const fields = options.fields ?? [];
  const keepRaw = options.keepRaw ?? false;
  const layout = scanList(bytes, listKey, fields, keepRaw ? null : (options.recordKeys ?? null));
  if (layout === null) return { root: parseWhole(bytes), items: null };
  let root: unknown;
  try {
    const envelope = bytes.toString('utf8', 0, layout.open + 1) + bytes.toString('utf8', layout.close);
    root = JSON.parse(envelope);
  } catch {
    return { root: parseWhole(bytes), items: null };
  }
  const list = (root as Record<string, unknown>)[listKey];
  if (!Array.isArray(list) || list.length !== 0) return { root: parseWhole(bytes), items: null };
  const items = ListItems.ofBytes(bytes, layout, fields, keepRaw, listKey, options.origin ?? null);
  return { root, items };
}

/**
 * Parses a list response: the root object with its list holding the records. With `keepRaw`, items keep
 * their bytes (`rawJsonOf`) when the scanner could lay the body out; otherwise the whole body is parsed.
 */
export function parseListBody(bytes: Buffer, listKey: string, keepRaw = true): unknown {
  const { root, items } = readListBody(bytes, listKey, { keepRaw });
  if (items === null) return root;
  const list = (root as Record<string, JsonObject[]>)[listKey]!;
  for (let k = 0; k < items.length; k += 1) list.push(items.record(k));
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

/**
 * Bodies that take each of the scanner's branches (`readyScanner`): fields plain and not, a key written
 * with an escape, members read in part at two depths, lists and literals left out, a line break, and a
 * literal broken where the projection meets it. With `READY_PATHS` and `READY_FIELDS`.
 */
export const READY_BODIES: readonly string[] = [
  '{"meta":{"n":null,"b":[true,false,-1.5e3]},"objects":[{"id":"\\"a","indexed_on":"t","x":"y","k":{"a":1,' +
    '"b":{"c":2,"d":[1]},"e":"q"},"\\u006b":0,"n":{"o":[{"p":null}]}},{"indexed_on":2,\n"k":[1],"id":"b"} ]}',
  '{"objects":[{"id":"a","k":{"a":tru}}]}',
];
export const READY_PATHS: readonly RecordKeyPath[] = [['id'], ['k', 'b', 'c'], ['x']];
export const READY_FIELDS: readonly string[] = ['indexed_on', 'id'];

/**
 * Readies V8's optimizing compiler for the scanner, once, as the module loads. On the DET comparison's
 * 50,000-form run (8 runs each, interleaved) the CPU median went 2.085 → 1.955 s, the scanner compiled
 * twice instead of four to six times (~50 ms of compiling each):
 *
 * - V8 compiles code that reads typed arrays on the assumption that no ArrayBuffer was ever detached (a
 *   process-wide "protector"); the first `ListItems.release` detaches one, and V8 throws away every
 *   optimized function that reads a typed array (the scanner, `keptText`, Buffer's own `toString`) to
 *   compile it again. Detaching a buffer of our own first means they are compiled once, as they will run.
 * - The scanner is optimized while it scans the first page (on-stack replacement), before some of its
 *   branches have run (the end of the body, an escaped key, a member read in part, a broken literal);
 *   each of them, met later, threw the optimized code away. Scanning small bodies that take each branch
 *   gives the compiler their feedback from the start (`READY_BODIES`; a fraction of a millisecond).
 */
function readyScanner(): void {
  const detached = new ArrayBuffer(8);
  structuredClone(detached, { transfer: [detached] });
  for (const text of READY_BODIES) {
    const bytes = Buffer.from(text);
    for (const keep of [READY_PATHS, null]) {
      const layout = scanList(bytes, 'objects', READY_FIELDS, keep);
      if (layout?.members) {
        for (let k = 0; 2 * k < layout.items.length; k += 1)
          keptText(bytes, layout.items[2 * k]!, layout.members, layout.memberStarts!, k);
      }
    }
  }
}

readyScanner();

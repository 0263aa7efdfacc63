import { createHash } from 'node:crypto';
import type { Cell } from '../query/types';

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

/** DET's csv rendering of a datetime (`str(datetime)` without microseconds), in UTC. */
export function formatDetDateTime(d: Date): string {
  return (
    `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`
  );
}

/** `YYYY-MM-DD` in UTC. */
export function formatIsoDate(d: Date): string {
  return `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}

/** JSON for a cell; Dates (also nested ones) become DET date strings rather than ISO with `Z`. */
export function cellToJson(cell: Cell): string {
  // The replacer reads the raw value from its holder because Date.toJSON runs before the replacer.
  return JSON.stringify(cell, function (this: Record<string, unknown>, key: string, value: unknown) {
    const raw = key === '' ? cell : this[key];
    return raw instanceof Date ? formatDetDateTime(raw) : value;
  });
}

/**
 * A cell as text, the way DET's csv writer renders it: null → empty, booleans `True`/`False`
 * (Python's `str`), dates `YYYY-MM-DD HH:MM:SS`; objects and lists as JSON (DET writes Python `repr`,
 * which nothing can parse back).
 */
export function cellToText(cell: Cell): string {
  if (cell === null) return '';
  if (typeof cell === 'string') return cell;
  if (typeof cell === 'number') return String(cell);
  if (typeof cell === 'boolean') return cell ? 'True' : 'False';
  if (cell instanceof Date) return formatDetDateTime(cell);
  return cellToJson(cell);
}

/** Short, stable hex hash for names (not a security boundary). */
export function shortHash(text: string, length = 8): string {
  return createHash('sha256').update(text, 'utf8').digest('hex').slice(0, length);
}

/**
 * A table name or checkpoint key as one path segment of an object key: characters outside a safe set
 * become `_`, and a hash of the original is appended whenever anything changed, so two distinct names
 * never share an object prefix.
 */
export function safeKeySegment(name: string): string {
  let safe = name.replace(/[^\p{L}\p{N}._ -]/gu, '_').trim();
  if (safe === '' || safe === '.' || safe === '..') safe = '_';
  if (Buffer.byteLength(safe, 'utf8') > 200) safe = truncateUtf8(safe, 200);
  return safe === name ? safe : `${safe}-${shortHash(name)}`;
}

/** Cut a string to at most `maxBytes` UTF-8 bytes without splitting a character. */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
  let out = '';
  let bytes = 0;
  for (const ch of text) {
    const size = Buffer.byteLength(ch, 'utf8');
    if (bytes + size > maxBytes) break;
    out += ch;
    bytes += size;
  }
  return out;
}

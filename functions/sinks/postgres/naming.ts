import { shortHash, truncateUtf8 } from '../cells';

/** PostgreSQL's NAMEDATALEN - 1: longer identifiers are silently truncated by the server. */
export const PG_MAX_IDENTIFIER_BYTES = 63;

/**
 * The identifier we use for a table or column name. Names up to 63 bytes are kept as they are
 * (case and punctuation included; they are always quoted). A longer name is cut to 54 bytes on a
 * character boundary and gets `_` plus 8 hex of the full name's hash, so two long names that share
 * their first 63 bytes stay distinct, and the result never depends on which other names exist (a
 * column keeps its name across runs when new columns appear). NUL, which PostgreSQL rejects, becomes `_`.
 */
export function pgName(name: string): string {
  const clean = name.replaceAll('\0', '_');
  if (Buffer.byteLength(clean, 'utf8') <= PG_MAX_IDENTIFIER_BYTES && clean !== '') return clean;
  if (clean === '') return `_${shortHash(name)}`;
  return `${truncateUtf8(clean, PG_MAX_IDENTIFIER_BYTES - 9)}_${shortHash(name)}`;
}

/** A double-quoted identifier, safe for any name (quotes doubled). */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** `"schema"."table"`. */
export function qualified(schema: string, table: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(table)}`;
}

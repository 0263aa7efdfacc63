/** A JSON value as HQ returns it. */
export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;
/** A JSON object (one HQ record, or a nested part of one). */
export interface JsonObject {
  [key: string]: JsonValue;
}

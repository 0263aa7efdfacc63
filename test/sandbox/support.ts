import type { JsonObject } from '../../functions/common/json';

export const DEMO_AUTH = { Authorization: 'ApiKey demo@example.org:sandbox-demo-key' };

export async function getJson(
  url: string,
  headers: Record<string, string> = DEMO_AUTH,
): Promise<{ status: number; body: JsonObject; headers: Headers }> {
  const response = await fetch(url, { headers });
  const text = await response.text();
  return {
    status: response.status,
    body: text ? (JSON.parse(text) as JsonObject) : {},
    headers: response.headers,
  };
}

export function meta(body: JsonObject): JsonObject {
  return body.meta as JsonObject;
}

export function objects(body: JsonObject): JsonObject[] {
  return body.objects as JsonObject[];
}

/** HQ's v1 filters take naive UTC: drop the Z (reference §8). */
export function naive(value: unknown): string {
  const text = String(value);
  return text.endsWith('Z') ? text.slice(0, -1) : text;
}

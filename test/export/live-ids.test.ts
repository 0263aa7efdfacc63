import { describe, expect, it } from 'vitest';
import { readListBody } from '../../functions/commcare/page-body';
import { liveId, liveIds } from '../../functions/export/reconcile';

describe('the ids a reconcile lists', () => {
  const items = [
    '{"id":"f-1","indexed_on":"2024-01-01T00:00:00Z","form":{"id":"inner"}}',
    '{"id":42,"indexed_on":"2024-01-01T00:00:01Z"}',
    '{"case_id":"c-9","indexed_on":"2024-01-01T00:00:02Z"}',
    '{"id":null,"case_id":"c-10","indexed_on":"2024-01-01T00:00:03Z"}',
    '{"id":"a\\"b","indexed_on":"2024-01-01T00:00:04Z"}',
    '{"location_id":"loc-1"}',
    '{"name":"no id at all"}',
    '{"id":"first","id":"last"}',
  ];
  const body = Buffer.from(`{"meta":{},"objects":[${items.join(',')}]}`);
  const parsed = JSON.parse(body.toString()).objects as Record<string, never>[];

  it('are the same read from the bytes as from each parsed record, in order', () => {
    const { items: list } = readListBody(body, 'objects', { fields: ['indexed_on', 'id'] });
    const records = list!.select(parsed.map((_, k) => k));
    const expected = parsed.map((r) => liveId(r)).filter((id) => id !== null);
    expect(expected).toEqual(['f-1', '42', 'c-9', 'c-10', 'a"b', 'loc-1', 'last']);
    expect(liveIds(records)).toEqual(expected);
    expect(liveIds(parsed)).toEqual(expected);
    expect(liveIds(list!.select([7, 0]))).toEqual(['last', 'f-1']);
  });
});

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { type KeyTree, keyTreeOf } from '../../functions/commcare/key-paths';
import {
  BodyNotJsonError,
  FIELD_NOT_PLAIN,
  parseListBody,
  peekFirstItemField,
  READY_BODIES,
  READY_FIELDS,
  READY_PATHS,
  rawJsonOf,
  readListBody,
  scanList,
} from '../../functions/commcare/page-body';
import { JsonLinesSink, rawRecordsPlan } from '../../functions/export/raw-records';

const bytes = (text: string) => Buffer.from(text, 'utf8');
const records = (root: unknown) => (root as { objects: object[] }).objects;

describe('reading a list body from its bytes', () => {
  const bodies: Record<string, string> = {
    compact:
      '{"meta":{"next":null,"total_count":2},"objects":[{"id":"a","n":1},{"id":"b","x":[1,{"y":"]"}]}]}',
    'Python spacing': '{"meta": {"next": "?a=1"}, "objects": [{"id": "a", "v": "x"}, {"id": "b"}]}',
    'quotes, backslashes and brackets in strings':
      '{"objects":[{"id":"q\\"}{[","p":"C:\\\\","z":"\\\\\\"]"}],"meta":{"note":"\\"objects\\": ["}}',
    'non-ASCII text': '{"objects":[{"id":"é","name":"Zoë Müller 😀","k":"\\u00e9"}],"meta":{}}',
    'the list key inside items and meta': '{"meta":{"objects":[1]},"objects":[{"objects":[{"a":1}]}]}',
    'an empty list': '{"meta":{"next":null},"objects":[]}',
    'case v2 envelope': '{"matching_records":1,"cases":[{"case_id":"c1"}],"next":null}',
  };
  for (const [name, text] of Object.entries(bodies)) {
    it(`parses ${name} as JSON.parse does and keeps each item's exact bytes`, () => {
      const key = text.includes('"cases"') ? 'cases' : 'objects';
      const root = parseListBody(bytes(text), key) as Record<string, object[]>;
      expect(root).toEqual(JSON.parse(text));
      const items = root[key]!;
      const layout = scanList(bytes(text), key)!;
      expect(layout.items.length / 2).toBe(items.length);
      for (const [i, item] of items.entries()) {
        const raw = rawJsonOf(item);
        expect(raw, name).toBeDefined();
        expect(JSON.parse(Buffer.from(raw!).toString('utf8'))).toEqual(JSON.parse(text)[key][i]);
      }
    });
  }

  it('keeps the bytes of each item exactly as sent, spacing and escapes included', () => {
    const item = '{"id": "a", "k": "\\u00e9\\/", "n": 1.50}';
    const root = parseListBody(bytes(`{"objects": [ ${item} ], "meta": {}}`), 'objects');
    expect(Buffer.from(rawJsonOf(records(root)[0]!)!).toString()).toBe(item);
  });

  it('falls back to one whole parse for layouts the scanner does not take, with the same result', () => {
    const odd = [
      '{"objects":[1,2]}',
      '{"objects":"none"}',
      '{"objects":[{"a":1}],"objects":[{"b":2}]}',
      '{"meta":{}}',
      '[{"a":1}]',
    ];
    for (const text of odd) {
      expect(scanList(bytes(text), 'objects'), text).toBeNull();
      expect(parseListBody(bytes(text), 'objects')).toEqual(JSON.parse(text));
    }
  });

  it('throws BodyNotJsonError for a truncated or broken body, so the HTTP layer retries it', () => {
    for (const text of [
      '{"meta": {"next": null}, "objects": [',
      '{"objects":[{"a":1}{"b":2}]}',
      '{"objects":[{"a":1},]}',
      '{"objects":[{"a":tru}]}',
      '{"objects":[{"a":1}]} trailing',
      '',
    ]) {
      expect(() => parseListBody(bytes(text), 'objects'), text).toThrow(BodyNotJsonError);
    }
  });

  it('keeps no bytes for a pretty-printed item or one that held invalid UTF-8', () => {
    const pretty = parseListBody(
      bytes('{"objects": [\n  {\n    "id": "a"\n  },\n  {"id": "b"}\n]}'),
      'objects',
    );
    expect(rawJsonOf(records(pretty)[0]!)).toBeUndefined();
    expect(rawJsonOf(records(pretty)[1]!)).toBeDefined();
    const broken = Buffer.concat([bytes('{"objects":[{"id":"'), Buffer.from([0xff, 0xfe]), bytes('"}]}')]);
    const root = parseListBody(broken, 'objects');
    expect(rawJsonOf(records(root)[0]!)).toBeUndefined();
  });
});

describe('reading fields of items held as bytes', () => {
  const fields = ['indexed_on', 'case_id', 'id'];
  const items = [
    '{"id":"a","indexed_on":"2024-01-02T03:04:05.123456Z"}',
    '{"indexed_on": "2024-01-02T03:04:05Z", "form": {"id": "nested", "indexed_on": 5}, "id": "b"}',
    '{"id":"c\\"quoted\\"","indexed_on":"x\\u0041"}',
    '{"id":7,"indexed_on":null}',
    '{"id":{"x":"y"},"case_id":["z"]}',
    '{"id":"first","id":"second","indexed_on":"1","indexed_on":2}',
    '{"n":1,"id":true,"name":"é😀","case_id":"ü"}',
    '{}',
  ];
  const text = `{"meta":{"next":null},"objects":[${items.join(',')}]}`;

  it('gives each asked-for field as JSON.parse does, whatever the value', () => {
    const { items: list } = readListBody(bytes(text), 'objects', { fields });
    const parsed = JSON.parse(text).objects as Record<string, unknown>[];
    expect(list!.length).toBe(parsed.length);
    for (const [k, record] of parsed.entries()) {
      for (const field of fields)
        expect(list!.field(k, field), `${items[k]} ${field}`).toEqual(record[field]);
      expect(list!.record(k)).toEqual(record);
    }
    expect([...list!.select([2, 0])]).toEqual([parsed[2], parsed[0]]);
  });

  it('gives the same fields whichever fields, in whichever order, and list key a body is read with', () => {
    const parsed = JSON.parse(text).objects as Record<string, unknown>[];
    const lists = [
      [],
      ['id'],
      ['case_id', 'indexed_on'],
      ['name', 'id', 'n', 'indexed_on'],
      fields,
      ['i', 'idx'],
    ];
    for (const listKey of ['objects', 'cases']) {
      const body = bytes(listKey === 'objects' ? text : text.replace('"objects"', '"cases"'));
      for (const names of [...lists, ...lists.map((l) => [...l].reverse())]) {
        const { items: list } = readListBody(body, listKey, { fields: names });
        expect(list!.length).toBe(parsed.length);
        for (const [k, record] of parsed.entries())
          for (const field of names)
            expect(list!.field(k, field), `${names} ${field}`).toEqual(record[field]);
      }
    }
  });

  it('parses an item only when it is read: a broken one fails then, with its place', () => {
    const broken = '{"meta":{},"objects":[{"id":"a","indexed_on":"1"},{"id":"b","indexed_on":"2","v":tru}]}';
    const { items: list } = readListBody(bytes(broken), 'objects', { fields });
    expect(list!.field(1, 'id')).toBe('b');
    expect(list!.record(0)).toEqual({ id: 'a', indexed_on: '1' });
    expect(() => list!.record(1)).toThrow(/item 1 of "objects" is not valid JSON/);
  });
});

describe('reading only the kept keys of items', () => {
  const items = [
    '{"id":"a","form":{"id":"inner","x":[1,{"y":"]}"}]},"metadata":{"a":"b,c"},"n":-1.5e3}',
    '{ "metadata" : { "deep" : [ true, false, null ] } , "id" : "b" , "form" : { } }',
    '{"id":"c\\"q\\"","form":"text, with } and ]","skip":"\\\\"}',
    '{"id":"first","form":1,"id":"last"}',
    '{"form":{"metadata":{"id":"nested only"}}}',
    '{"\\u006fther":"escaped key","form":2,"skip":3}',
    '{"id":"é😀","form":{"é":"ü"},"zz":0}',
    '{}',
  ];
  const text = `{"meta":{"next":null,"limit":2},"objects":[${items.join(',')}]}`;
  const parsed = JSON.parse(text).objects as Record<string, unknown>[];
  const keepNames = ['form', 'id'];
  const keep = keepNames.map((name) => [name]);

  it('parses each item as JSON.parse would, then without the keys left out', () => {
    const { items: list } = readListBody(bytes(text), 'objects', { recordKeys: keep });
    expect(list!.length).toBe(parsed.length);
    for (const [k, whole] of parsed.entries()) {
      const record = list!.record(k);
      // Every kept key as JSON.parse gives it (the last of a repeated key wins); no key left out, save
      // one written with an escape, which is kept as its bytes cannot be compared with a name.
      for (const key of keepNames) expect(record[key], items[k]).toEqual(whole[key]);
      const extra = Object.keys(record).filter((key) => !keepNames.includes(key));
      expect(extra, items[k]).toEqual(k === 5 ? ['other'] : []);
    }
    expect(list!.record(1)).toEqual({ id: 'b', form: {} });
    expect(list!.record(4)).toEqual({ form: { metadata: { id: 'nested only' } } });
  });

  it('reads items of 64 KiB and more, whose members lie past 16-bit offsets', () => {
    const long = 'x'.repeat(70_000);
    const body = `{"objects":[{"skip":"${long}","id":"a","form":{"v":"${long}"}},{"id":"b","skip":1}]}`;
    const { items: list } = readListBody(bytes(body), 'objects', { recordKeys: keep });
    expect(list!.record(0)).toEqual({ id: 'a', form: { v: long } });
    expect(list!.record(1)).toEqual({ id: 'b' });
  });

  it('keeps the asked-for fields too, even those not among the kept keys', () => {
    const { items: list } = readListBody(bytes(text), 'objects', {
      recordKeys: [['form']],
      fields: ['n', 'id'],
    });
    expect(list!.field(0, 'n')).toBe(-1500);
    expect(list!.field(2, 'id')).toBe('c"q"');
    expect(list!.record(0)).toEqual({ id: 'a', form: parsed[0]!.form, n: -1500 });
  });

  it('reads items whole when they keep their bytes, or when a byte outside strings is no JSON token', () => {
    const raw = readListBody(bytes(text), 'objects', { recordKeys: keep, keepRaw: true });
    expect(raw.items!.record(0)).toEqual(parsed[0]);
    expect(rawJsonOf(raw.items!.record(0))).toBeDefined();
    const broken = text.replace('"deep" : [ true, false, null ]', '"deep" : [ true, fals, null ]');
    const read = readListBody(bytes(broken), 'objects', { recordKeys: keep });
    expect(read.items!.record(0)).toEqual(parsed[0]);
    expect(() => read.items!.record(1)).toThrow(/item 1 of "objects" is not valid JSON/);
    for (const literal of ['tru', 'nul', '01x', '-', '1.', '1e', '+1', 'NaN']) {
      const body = bytes(`{"objects":[{"id":"a","skip":${literal}}]}`);
      expect(scanList(body, 'objects', [], keep)?.members ?? null, literal).toBeNull();
    }
    for (const literal of ['true', 'false', 'null', '0', '-0.5', '12e+3', '4E-2', '-7']) {
      const body = bytes(`{"objects":[{"id":"a","skip":${literal}}]}`);
      expect(readListBody(body, 'objects', { recordKeys: keep }).items!.record(0), literal).toEqual({
        id: 'a',
      });
    }
  });
});

describe('reading only the kept paths inside kept objects', () => {
  /** What a record read with `paths` must be: JSON.parse's record, each object on a path cut to the keys named. */
  function cut(value: unknown, tree: KeyTree | null): unknown {
    if (tree === null || value === null || typeof value !== 'object' || Array.isArray(value)) return value;
    const out: Record<string, unknown> = {};
    for (const [key, inner] of Object.entries(value)) {
      const sub = tree.get(key);
      if (sub !== undefined) out[key] = cut(inner, sub);
    }
    return out;
  }
  const paths = [['id'], ['form', 'id'], ['form', 'a'], ['form', 'b', 'c'], ['form', 'list'], ['other']];
  const items = [
    '{"id":"1","form":{"z":0,"a":"x","b":{"c":[1,{"d":2}],"e":"f"},"list":[{"a":1,"z":2}],"y":{"a":1}},"zz":{}}',
    '{ "form" : { "b" : { "e" : { "c" : 1 } , "c" : { "q" : true } } , "a" : null } , "id" : "2" }',
    '{"id":"3","form":"not an object","other":{"a":1}}',
    '{"id":"4","form":["a",{"a":1}],"other":2}',
    '{"id":"5","form":{},"zz":1}',
    '{"id":"6","form":{"z":{"a":"}{,\\\\"},"a":"],[","b":{}},"form":{"a":"last wins","b":null}}',
    '{"form":{"a":1,"a":2,"b":{"c":1,"c":{"x":1}}},"id":"7"}',
    '{"id":"8","form":{"a":"é😀","b":{"zz":"ü","c":"日本"}},"other":"ß"}',
    '{"id":"9","form":{"b":{"c":1,"z":[{"b":{"c":2}}]},"id":"inner","a":{"b":{"c":3}}}}',
    '{"form":\n {"a":\n 1,\n "z": 2}, "id": "10"}',
  ];
  const text = `{"meta":{"limit":10},"objects":[${items.join(',')}]}`;
  const parsed = JSON.parse(text).objects as unknown[];

  it('gives each item as JSON.parse would, cut to the paths, each object on a path to the keys it names', () => {
    const { items: list } = readListBody(bytes(text), 'objects', { recordKeys: paths });
    const tree = keyTreeOf(paths);
    expect(list!.length).toBe(parsed.length);
    for (const [k, whole] of parsed.entries()) expect(list!.record(k), items[k]).toEqual(cut(whole, tree));
    // Not a vacuous comparison: cut values differ from whole ones.
    expect(list!.record(0)).toEqual({
      id: '1',
      form: { a: 'x', b: { c: [1, { d: 2 }] }, list: [{ a: 1, z: 2 }] },
    });
    expect(list!.record(9)).toEqual({ form: { a: 1 }, id: '10' });
    // A member whose key is written with an escape is kept whole, as its bytes cannot be compared with a name.
    const escaped = '{"objects":[{"form":{"\\u0061":{"z":1},"z":2}}]}';
    expect(readListBody(bytes(escaped), 'objects', { recordKeys: paths }).items!.record(0)).toEqual({
      form: { a: { z: 1 } },
    });
  });

  it('reads the body without kept paths when a byte left out is no JSON token, so a broken item still fails', () => {
    const broken = text.replace('"y":{"a":1}', '"y":{"a":tru}');
    const { items: list } = readListBody(bytes(broken), 'objects', { recordKeys: paths });
    expect(() => list!.record(0)).toThrow(/item 0 of "objects" is not valid JSON/);
    expect(list!.record(1)).toEqual(parsed[1]);
    expect(scanList(bytes(broken), 'objects', [], paths)?.members ?? null).toBeNull();
    const unterminated = bytes('{"objects":[{"id":"1","form":{"z":"never closed}]}');
    expect(() => readListBody(unterminated, 'objects', { recordKeys: paths })).toThrow(BodyNotJsonError);
  });
});

describe('kept paths over any JSON', () => {
  /** JSON.parse's record with each object on a path cut to the keys named there; keys written with an escape stay. */
  function cutAsRead(value: unknown, tree: KeyTree | null): unknown {
    if (tree === null || value === null || typeof value !== 'object' || Array.isArray(value)) return value;
    const out: Record<string, unknown> = {};
    for (const [key, inner] of Object.entries(value)) {
      const escaped = JSON.stringify(key) !== `"${key}"`;
      const sub = tree.get(key);
      if (escaped) out[key] = inner;
      else if (sub !== undefined) out[key] = cutAsRead(inner, sub);
    }
    return out;
  }
  const key = fc.constantFrom('a', 'b', 'id', 'é', 'q"t', 'b\\s', 'form', '');
  const json = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: 'small' },
      fc.string({ maxLength: 6 }),
      fc.constantFrom('"', '\\', '}', ']', '{"a":1}', 'é😀', '\u2028'),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      fc.array(tie('value'), { maxLength: 3 }),
      fc.dictionary(key, tie('value'), { maxKeys: 4 }),
    ),
  })).value;
  const record = fc.dictionary(key, json, { maxKeys: 5 });
  const path = fc.array(key, { minLength: 1, maxLength: 3 });

  it('gives what JSON.parse gives, cut to the paths, whatever the records, paths and spacing', () => {
    fc.assert(
      fc.property(
        fc.array(record, { maxLength: 4 }),
        fc.array(path, { maxLength: 4 }),
        fc.boolean(),
        (records, paths, pretty) => {
          const text = JSON.stringify({ meta: { n: 1 }, objects: records }, null, pretty ? 1 : undefined);
          const { items } = readListBody(bytes(text), 'objects', { recordKeys: paths });
          const tree = keyTreeOf(paths);
          const parsed = JSON.parse(text).objects as unknown[];
          expect(items!.length).toBe(parsed.length);
          for (const [k, whole] of parsed.entries()) expect(items!.record(k)).toEqual(cutAsRead(whole, tree));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("peeks at the first item's string field as JSON.parse reads it, without the items after it", () => {
    fc.assert(
      fc.property(fc.array(record, { maxLength: 3 }), key, fc.boolean(), (records, field, pretty) => {
        const text = JSON.stringify(
          { meta: { n: [1, '}'] }, objects: records },
          null,
          pretty ? 1 : undefined,
        );
        const first = (JSON.parse(text).objects as Record<string, unknown>[])[0];
        const value = first?.[field];
        const plain = typeof value === 'string' && !JSON.stringify(value).slice(1, -1).includes('\\');
        // A key written with an escape is not compared, as in the scanner.
        if (JSON.stringify(field).includes('\\')) return;
        expect(peekFirstItemField(bytes(text), 'objects', field)).toBe(plain ? value : null);
      }),
      { numRuns: 2000 },
    );
    const body = '{"objects": [{"indexed_on": "a", "x": {"y": "]}"}, "indexed_on": "b"}, {"indexed_on": ';
    expect(peekFirstItemField(bytes(body), 'objects', 'indexed_on')).toBe('b');
    expect(peekFirstItemField(bytes('{"objects": [], "meta": {}}'), 'objects', 'indexed_on')).toBeNull();
    expect(peekFirstItemField(bytes('[{"indexed_on": "a"}]'), 'objects', 'indexed_on')).toBeNull();
    expect(peekFirstItemField(bytes('{"objects": ["a"]}'), 'objects', 'indexed_on')).toBeNull();
    expect(
      peekFirstItemField(bytes('{"objects": [{"indexed_on": "a\\"b"}]}'), 'objects', 'indexed_on'),
    ).toBeNull();
  });
});

describe('the bodies that ready the scanner', () => {
  it('take the branches they are there for', () => {
    const [whole, broken] = READY_BODIES.map((text) => bytes(text));
    const layout = scanList(whole!, 'objects', READY_FIELDS, READY_PATHS)!;
    expect(layout.members).not.toBeNull();
    expect(layout.lineBreaks).toBe(true);
    // indexed_on plain and id written with an escape; then indexed_on a number and id plain.
    expect(layout.fields[0]).toBeGreaterThan(0);
    expect(layout.fields[2]).toBe(FIELD_NOT_PLAIN);
    expect(layout.fields[4]).toBe(FIELD_NOT_PLAIN);
    expect(layout.fields[6]).toBeGreaterThan(0);
    const { items } = readListBody(whole!, 'objects', { fields: READY_FIELDS, recordKeys: READY_PATHS });
    // `k` read in part, then again under a key written with an escape, kept whole (the last one wins).
    expect(items!.record(0)).toEqual({ id: '"a', indexed_on: 't', x: 'y', k: 0 });
    expect(items!.record(1)).toEqual({ indexed_on: 2, k: [1], id: 'b' });
    // A broken literal where the projection meets it: the body is read whole and the item fails.
    expect(scanList(broken!, 'objects', READY_FIELDS, READY_PATHS)?.members ?? null).toBeNull();
    const read = readListBody(broken!, 'objects', { recordKeys: READY_PATHS });
    expect(() => read.items!.record(0)).toThrow(BodyNotJsonError);
  });
});

describe('JSON lines output', () => {
  let dir: string | null = null;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = null;
  });

  it('writes client records as their original bytes and anything else re-serialised, one per line', async () => {
    dir = mkdtempSync(join(tmpdir(), 'jsonl-'));
    const original = '{"id": "a", "name": "Zoë"}';
    const root = parseListBody(bytes(`{"objects":[${original}]}`), 'objects');
    const plan = rawRecordsPlan('form');
    const sink = new JsonLinesSink(dir);
    await sink.begin(plan.tables, {
      runId: 'run-1',
      checkpointKey: 'raw:form',
      project: 'p',
      snapshot: true,
    });
    const big = { id: 'big', text: 'x'.repeat(3 << 20) };
    for (const record of [records(root)[0]!, { id: 'b', nested: { ok: true } }, big]) {
      await sink.writeRows('form', plan.tables[0]!.rowsFor(record as never));
    }
    await sink.writeRows('form', [[1, 'two']]);
    await sink.finish();
    const lines = readFileSync(join(dir, 'form.jsonl'), 'utf8').split('\n');
    expect(lines[0]).toBe(original);
    expect(lines[1]).toBe('{"id":"b","nested":{"ok":true}}');
    expect(JSON.parse(lines[2]!)).toEqual(big);
    expect(lines[3]).toBe('[1,"two"]');
    expect(lines[4]).toBe('');
    expect(lines).toHaveLength(5);
  });
});

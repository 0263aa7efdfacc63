import { describe, expect, it } from 'vitest';
import { compileMiniLinq, QueryFileError } from '../../functions/query/index';

const opts = { baseUrl: 'https://www.commcarehq.org' };
const api = (res: string, filters?: unknown) => ({
  Apply: {
    fn: { Ref: 'api_data' },
    args: [{ Lit: res }, { Ref: 'checkpoint_manager' }, ...(filters ? [{ Lit: filters }] : [])],
  },
});
const cm = (body: unknown) => ({
  Bind: {
    name: 'checkpoint_manager',
    value: { Apply: { fn: { Ref: 'get_checkpoint_manager' }, args: [{ Lit: 'form' }, { Lit: ['t'] }] } },
    body,
  },
});

describe('compileMiniLinq', () => {
  it('runs the single-emit shape with a FlatMap child path (as excel_query.get_single_emit_query builds it)', () => {
    const q = compileMiniLinq(
      cm({
        Emit: {
          table: 'kids',
          headings: [{ Lit: 'id' }, { Lit: 'form_id' }, { Lit: 'baz' }, { Lit: 'parent_name' }],
          source: {
            Map: {
              source: { FlatMap: { source: api('form', { app_id: ['a'] }), body: { Ref: 'bar.[*]' } } },
              body: { List: [{ Ref: 'id' }, { Ref: '$.id' }, { Ref: 'baz' }, { Ref: '$.foo.name' }] },
            },
          },
        },
      }),
      opts,
    );
    expect(q.sources[0]).toMatchObject({ resource: 'form', params: { app_id: ['a'] } });
    // tests/test_minilinq.py::test_eval_auto_id_reference_nested
    const rows = q.sources[0]!.tables[0]!.rowsFor({
      id: 1,
      foo: { id: 'bid', name: 'bob' },
      bar: [{ baz: 'a1' }, { baz: 'a2', id: 'bazzer' }],
    });
    expect(rows).toEqual([
      ["1.bar.'1.bar.[0]'", '1', 'a1', 'bob'],
      ['1.bar.bazzer', '1', 'a2', 'bob'],
    ]);
  });

  it('runs the multi-emit shape as one source with several tables (tests/test_minilinq.py::test_emit_multi_different_query)', () => {
    const q = compileMiniLinq(
      cm({
        Filter: {
          body: { Apply: { fn: { Ref: 'filter_empty' }, args: [{ Ref: '$' }] } },
          source: {
            Map: {
              source: api('case'),
              body: {
                List: [
                  {
                    Emit: {
                      table: 't1',
                      headings: [{ Lit: 'id' }],
                      source: { Map: { source: { Ref: '`this`' }, body: { List: [{ Ref: 'id' }] } } },
                    },
                  },
                  {
                    Emit: {
                      table: 't2',
                      headings: [{ Lit: 'id' }, { Lit: 'a' }],
                      source: {
                        Map: {
                          source: { Ref: 'actions[*]' },
                          body: { List: [{ Ref: '$.id' }, { Ref: 'a' }] },
                        },
                      },
                    },
                  },
                ],
              },
            },
          },
        },
      }),
      opts,
    );
    expect(q.sources).toHaveLength(1);
    const [t1, t2] = q.sources[0]!.tables;
    const doc = { id: 1, actions: [{ a: 3 }, { a: 4 }] };
    expect(t1!.rowsFor(doc)).toEqual([['1']]);
    expect(t2!.rowsFor(doc)).toEqual([
      ['1', 3],
      ['1', 4],
    ]);
  });

  it('evaluates Filter, Bind, Apply, List and Lit inside a table body, with missing_value', () => {
    const q = compileMiniLinq(
      {
        Emit: {
          table: 't',
          headings: [{ Lit: 'n' }, { Lit: 'double' }, { Lit: 'missing' }],
          missing_value: '---',
          source: {
            Map: {
              source: {
                Filter: {
                  source: { FlatMap: { source: api('form'), body: { Ref: 'items[*]' } } },
                  predicate: { Apply: { fn: { Ref: '>' }, args: [{ Ref: 'n' }, { Lit: 1 }] } },
                },
              },
              body: {
                Bind: {
                  name: 'k',
                  value: { Lit: 2 },
                  body: {
                    List: [
                      { Ref: 'n' },
                      { Apply: { fn: { Ref: '*' }, args: [{ Ref: 'n' }, { Ref: 'k' }] } },
                      { Ref: 'nope' },
                    ],
                  },
                },
              },
            },
          },
        },
      },
      opts,
    );
    expect(q.sources[0]!.tables[0]!.rowsFor({ id: 'x', items: [{ n: 1 }, { n: 2 }, { n: 3 }] })).toEqual([
      [2, 4, '---'],
      [3, 6, '---'],
    ]);
  });

  it('exports the root when the child path is empty (tests/test_minilinq.py::test_value_or_root)', () => {
    const q = compileMiniLinq(
      {
        Emit: {
          table: 't',
          headings: [{ Lit: 'id' }, { Lit: 'baz' }, { Lit: 'foo' }, { Lit: 'plain_foo' }],
          source: {
            Map: {
              source: {
                FlatMap: {
                  source: api('form'),
                  body: {
                    Apply: {
                      fn: { Ref: '_or_raw' },
                      args: [
                        { Ref: 'bar.[*]' },
                        { Bind: { name: '__root_only', value: { Lit: true }, body: { Ref: '$' } } },
                      ],
                    },
                  },
                },
              },
              body: { List: [{ Ref: 'id' }, { Ref: 'baz' }, { Ref: '$.foo' }, { Ref: 'foo' }] },
            },
          },
        },
      },
      opts,
    );
    const t = q.sources[0]!.tables[0]!;
    expect(t.rowsFor({ id: 1, foo: 'I am foo', bar: [] })).toEqual([['1', null, 'I am foo', null]]);
    expect(t.rowsFor({ id: 1, bar: [{ baz: 'a1' }] })).toEqual([["1.bar.'1.bar.[0]'", 'a1', null, null]]);
  });

  it('fails on unknown functions and node types with QueryFileError', () => {
    expect(() =>
      compileMiniLinq(
        {
          Emit: {
            table: 't',
            headings: [],
            source: {
              Map: { source: api('form'), body: { List: [{ Apply: { fn: { Ref: 'nope' }, args: [] } }] } },
            },
          },
        },
        opts,
      ),
    ).toThrow(/unknown function "nope"/);
    expect(() => compileMiniLinq({ Nope: 1 }, opts)).toThrow(QueryFileError);
  });
});

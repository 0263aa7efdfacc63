import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { JsonPathSyntaxError } from '../../functions/query/errors';
import {
  childOf,
  compilePath,
  type Datum,
  datumValue,
  idPseudopath,
  injectedIdOf,
  isDict,
  type PathNode,
  parsePath,
  pathToString,
  pyStr,
  type Seg,
  SLOW,
  safeSourceField,
} from '../../functions/query/jsonpath';

const values = (path: string, data: unknown) => compilePath(path).find(data).map(datumValue);

describe('jsonpath-ng 1.6 dialect', () => {
  it('auto-quotes segments that do not parse (tests/test_excel_query.py::test_get_safe_source_field)', () => {
    expect(safeSourceField('foo.bar.baz')).toBe('foo.bar.baz');
    expect(safeSourceField('foo[*].baz')).toBe('foo[*].baz');
    expect(safeSourceField('foo..baz[*]')).toBe('foo..baz[*]');
    expect(safeSourceField('foo.#baz')).toBe('foo."#baz"');
    expect(safeSourceField('foo.bar[*]..%baz')).toBe('foo.bar[*].."%baz"');
    expect(safeSourceField('foo.bar:1.baz')).toBe('foo."bar:1".baz');
  });

  it('fails on a trailing dot', () => {
    expect(() => safeSourceField('foo.bar.')).toThrow(JsonPathSyntaxError);
  });

  it('reads fields, @-names, indexes, slices, descendants, root and this', () => {
    const doc = {
      id: 'F',
      form: { '@name': 'N', child: [{ n: 'a' }, { n: 'b' }], g: { case: { x: 1 } }, case: { x: 2 } },
    };
    expect(values('form.@name', doc)).toEqual(['N']);
    expect(values('form.child[*].n', doc)).toEqual(['a', 'b']);
    expect(values('form.child[1].n', doc)).toEqual(['b']);
    expect(values('form.child[-1].n', doc)).toEqual(['b']);
    expect(values('form.child[0:1].n', doc)).toEqual(['a']);
    expect(values('form..x', doc)).toEqual([1, 2]);
    expect(values('form.$.id', doc)).toEqual(['F']);
    expect(values('`this`.form.@name', doc)).toEqual(['N']);
    expect(values("form.'@name'", doc)).toEqual(['N']);
  });

  it('treats a single object under [*] as a one-item list (tests/test_minilinq.py::test_eval_collapsed_list)', () => {
    expect(values('foo[*]', { foo: 2 })).toEqual([2]);
    expect(values('foo[*].a', { foo: { a: 1 } })).toEqual([1]);
    expect(values('foo[*]', { foo: '' })).toEqual([]);
  });

  it('gives auto ids: a string for a top-level id, the path for others (tests/test_minilinq.py::test_eval_auto_id_reference)', () => {
    expect(values('foo.id', { foo: [2] })).toEqual(['foo']);
    expect(values('foo.id', { foo: { id: 2 } })).toEqual(['2']);
  });

  it('fails on malformed paths with its own error class only', () => {
    for (const bad of ['', 'a.', '..a', 'a[', 'a[0', '#x', 'a b', 'a.`nope`', '"open']) {
      expect(() => parsePath(bad), bad).toThrow(JsonPathSyntaxError);
    }
  });
});

describe('path properties', () => {
  it('parsing never throws anything but JsonPathSyntaxError', () => {
    const alphabet = fc.constantFrom(...'ab@_.-[]*$,:|&()0123456789 `\'"#%'.split(''));
    fc.assert(
      fc.property(fc.array(alphabet, { maxLength: 16 }), (chars) => {
        try {
          parsePath(chars.join(''));
        } catch (e) {
          expect(e).toBeInstanceOf(JsonPathSyntaxError);
        }
      }),
      { numRuns: 3000 },
    );
  });

  // A reference walker written independently: fields and [*] (with the one-object rule) over plain JSON.
  function walk(steps: { f?: string; star?: boolean }[], data: unknown): unknown[] {
    let cur: unknown[] = [data];
    for (const s of steps) {
      const next: unknown[] = [];
      for (const v of cur) {
        if (s.star) {
          if (
            !v ||
            (Array.isArray(v) && v.length === 0) ||
            (typeof v === 'object' && !Array.isArray(v) && Object.keys(v as object).length === 0)
          )
            continue;
          next.push(...(Array.isArray(v) ? v : [v]));
        } else if (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.hasOwn(v, s.f!)) {
          next.push((v as Record<string, unknown>)[s.f!]);
        }
      }
      cur = next;
    }
    return cur;
  }

  it('evaluating a compiled path equals a simple reference walker', () => {
    const key = fc.constantFrom('a', 'b', 'c');
    const json = fc.letrec((tie) => ({
      v: fc.oneof(
        { depthSize: 'small' },
        fc.string({ maxLength: 3 }),
        fc.integer(),
        fc.constant(null),
        fc.array(tie('v'), { maxLength: 3 }),
        fc.dictionary(key, tie('v'), { maxKeys: 3 }),
      ),
    })).v;
    const step: fc.Arbitrary<{ f?: string; star?: boolean }> = fc.oneof(
      key.map((f): { f?: string; star?: boolean } => ({ f })),
      fc.constant<{ f?: string; star?: boolean }>({ star: true }),
    );
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 4 }), json, (steps, data) => {
        const src = steps.map((s, i) => (s.star ? '[*]' : `${i === 0 ? '' : '.'}${s.f}`)).join('');
        const got = compilePath(src)
          .find(data)
          .map((d: Datum) => d.value);
        expect(got).toEqual(walk(steps, data));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('auto ids', () => {
  // jsonpath-ng's `id_pseudopath` built as path nodes and printed with `str()` (`pathToString`), the way
  // the ids were rendered before they were written as text directly: each datum's own id where it has
  // one (or the id a lookup injected), else its path segment, folded with `JSONPath.child`.
  const segNode = (s: Seg): PathNode =>
    s.t === 'field'
      ? { t: 'fields', names: [s.name] }
      : s.t === 'index'
        ? { t: 'index', i: s.i }
        : { t: s.t };
  const ownNode = (d: Datum): PathNode => {
    const v = d.value;
    if (isDict(v)) {
      if (Object.hasOwn(v, 'id')) return { t: 'fields', names: [pyStr(v.id)] };
      const injected = injectedIdOf(v);
      if (injected !== undefined) return { t: 'fields', names: [injected] };
    }
    return segNode(d.seg);
  };
  const pseudoNode = (d: Datum): PathNode =>
    d.parent ? childOf(pseudoNode(d.parent), ownNode(d)) : ownNode(d);
  const injectedNode = (d: Datum): PathNode =>
    d.parent ? childOf(pseudoNode(d.parent), segNode(d.seg)) : segNode(d.seg);

  it('renders id pseudopaths and injected ids as str() of the path nodes, quoting included', () => {
    const key = fc.constantFrom('a', 'b', 'x.y', '$', 'id');
    const id = fc.oneof(fc.constantFrom('p', 'q.r', 'a[0]', '$', "it's"), fc.integer({ min: 0, max: 9 }));
    const json = fc.letrec((tie) => ({
      v: fc.oneof(
        { depthSize: 'small' },
        fc.constant('s'),
        fc.array(tie('v'), { maxLength: 3 }),
        fc.dictionary(key, tie('v'), { maxKeys: 3 }),
        fc.record({ id, a: tie('v') }),
      ),
    })).v;
    const step = fc.constantFrom('a', 'b', "'x.y'", '[*]', '[0]', '[-1]');
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 4 }), json, (steps, data) => {
        const path = steps.map((s, i) => (s.startsWith('[') || i === 0 ? s : `.${s}`)).join('');
        for (const prefix of ['', '$.', '`this`.']) {
          const matches = compilePath(prefix + path).find(data);
          for (const m of matches) {
            expect(idPseudopath(m), `${prefix}${path}`).toBe(pathToString(pseudoNode(m)));
            const v = m.value;
            if (isDict(v) && !Object.hasOwn(v, 'id') && injectedIdOf(v) !== undefined) {
              expect(injectedIdOf(v)).toBe(pathToString(injectedNode(m)));
            }
          }
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('answers `id` and `$.id` of a record without building its matches, as the matches give it', () => {
    const id = fc.oneof(
      fc.constantFrom('p', 'q.r', 'a[0]', '$', "it's", ''),
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
    );
    const doc = fc.oneof(
      fc.record({ id, a: fc.constant(1) }),
      fc.record({ a: fc.constant(1) }),
      fc.constant('s'),
      fc.constant([1]),
    );
    fc.assert(
      fc.property(doc, (data) => {
        for (const path of ['id', '$.id']) {
          const compiled = compilePath(path);
          const quick = compiled.quick!(data);
          if (quick !== SLOW) expect([quick], path).toEqual(compiled.find(data).map(datumValue));
        }
      }),
      { numRuns: 300 },
    );
    // Not vacuous: a record's id is answered quick; an item inside one is left to the matches.
    expect(compilePath('id').quick!({ id: 'a.b' })).toBe("'a.b'");
    const member = compilePath('form.members[*]').find({ id: 'F', form: { members: [{ id: 'M' }] } })[0]!;
    expect(compilePath('id').quick!(member)).toBe(SLOW);
    expect(compilePath('$.id').quick!(member)).toBe('F');
    expect(compilePath('$.id').find(member).map(datumValue)).toEqual(['F']);
  });

  it('gives the path from the form id down, as jsonpath-ng 1.6 prints it', () => {
    const form = { id: 'F.1', form: { members: [{ name: 'a' }, { name: 'b', id: 'M' }] } };
    expect(values('form.members[*].id', form)).toEqual(["'F.1'.form.members.[0]", "'F.1'.form.members.M"]);
    expect(values('$.id', form.form)).toEqual(['$']);
    expect(values('id', form)).toEqual(["'F.1'"]);
  });
});

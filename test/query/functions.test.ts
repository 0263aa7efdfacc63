import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileMapFormatVia } from '../../functions/query/excel';
import * as f from '../../functions/query/functions';
import { Ref } from '../../functions/query/minilinq';
import { pad, timestampTexts } from '../support/timestamp-text';

// Expected values are those of tests/test_minilinq.py::test_eval_collapsed_list / test_substr / test_template
// unless a comment says otherwise.
describe('Map Via functions', () => {
  it('converts like DET str2bool, str2num and bool2int', () => {
    expect(['true', 't', '1', '0', 'false', '日本'].map(f.str2bool)).toEqual([
      true,
      true,
      true,
      false,
      false,
      false,
    ]);
    expect(f.str2bool(null)).toBe(false);
    expect(f.str2num('10')).toBe(10);
    expect(f.str2num('10.56')).toBe(10.56);
    expect(f.str2num('')).toBeNull();
    expect(f.str2num('abc')).toBeNull();
    expect(f.bool2int('t')).toBe(1);
  });

  it('parses dates like DET str2date, converting zones to UTC and dropping microseconds', () => {
    const d = (s: string) => f.str2date(s)?.toISOString() ?? null;
    expect(d('2015-01-01')).toBe('2015-01-01T00:00:00.000Z');
    expect(d('2015-01-01T18:32:57')).toBe('2015-01-01T18:32:57.000Z');
    expect(d('2015-01-01T18:32:57.001200')).toBe('2015-01-01T18:32:57.000Z');
    expect(d('2015-01-01T18:32:57.001200Z')).toBe('2015-01-01T18:32:57.000Z');
    expect(d('2015-01-01T18:32:57+02:00')).toBe('2015-01-01T16:32:57.000Z');
    expect(d('日')).toBeNull();
    expect(d('')).toBeNull();
  });

  it("reads HQ's timestamp shape without its regular expressions, as the general rules read it", () => {
    // The same text with its zone after a space (` Z`; none is UTC) only the general rules read.
    const general = (s: string) => {
      const zone = /[Zz]$/.test(s) ? s.slice(-1) : 'Z';
      return f.str2date(`${/[Zz]$/.test(s) ? s.slice(0, -1) : s} ${zone}`)?.getTime() ?? null;
    };
    const text = timestampTexts({ fraction: /^([.,][0-9]{0,8})?$/, zones: ['', 'Z', 'z'] });
    fc.assert(
      fc.property(text, (s) => {
        expect(f.str2date(s)?.getTime() ?? null, s).toBe(general(s));
      }),
      { numRuns: 5000 },
    );
    // The last day of each month, counted the way Date.UTC counts it (years 0-99 as 1900-1999).
    for (const year of [0, 4, 99, 100, 1900, 2000, 2023, 2024]) {
      for (let month = 1; month <= 12; month += 1) {
        const last = new Date(Date.UTC(year, month, 0)).getUTCDate();
        const day = (d: number) => `${pad(year, 4)}-${pad(month, 2)}-${pad(d, 2)}T00:00:00`;
        expect(f.str2date(day(last)), day(last)).not.toBeNull();
        expect(f.str2date(day(last + 1)), day(last + 1)).toBeNull();
      }
    }
  });

  it('formats uuids and rejects short ones', () => {
    expect(f.formatUuid(0xf00)).toBeNull();
    expect(f.formatUuid('f00')).toBeNull();
    expect(f.formatUuid('00a3e019-4ce1-4587-94c5-0971dee2de22')).toBe('00a3e019-4ce1-4587-94c5-0971dee2de22');
    expect(f.formatUuid('00a3e0194ce1458794c50971dee2de22')).toBe('00a3e019-4ce1-4587-94c5-0971dee2de22');
  });

  it('handles multi-select answers', () => {
    expect(f.selectedAt('a b c', '1')).toBe('b');
    expect(f.selectedAt('a b 日', '-1')).toBe('日');
    expect(f.selectedAt('a b c', '5')).toBeNull();
    expect(f.selectedAt('a b c', 'x')).toBe('Error: index must be an integer');
    expect(f.selected('a b c', 'b')).toBe(true);
    expect(f.selected('a b 日本', 'd')).toBe(false);
    expect(f.selected('a bb 日本', 'b')).toBe(false);
    expect(f.selected('a bb 日本', '日本')).toBe(true);
    expect(f.selected('', 'b')).toBeNull();
    expect(f.countSelected('a bb 日本')).toBe(3);
  });

  it('hashes like DET sha1', () => {
    expect(f.sha1('a bb 日本')).toBe('e25a54025417b06d88d40baa8c71f6eee9c07fb1');
    expect(f.sha1(2015)).toBe('9cdda67ded3f25811728276cefa76b80913b4c54');
    expect(f.sha1(null)).toBeNull();
  });

  it('cuts substrings by code point and refuses negative bounds', () => {
    expect(f.substr('abcdefghijklmnopqrstuvwxyz', -4, 30)).toBeNull();
    expect(f.substr('abcdefghijklmnopqrstuvwxyz', 10, 16)).toBe('klmnop');
    expect(f.substr('abcdefghijklmnopqrstuvwxyz', 14, 13)).toBe('');
    expect(f.substr('αβγδεζηθικλμνξοπρςστυφχψω', 10, 15)).toBe('λμνξο');
    expect(f.substr(123456, 2, 4)).toBe('34');
    expect(f.substr(123456, 5, -1)).toBeNull();
  });

  it('renders templates and JSON as Python does', () => {
    expect(f.template('{}.{}', '1', '2')).toBe('1.2');
    expect(f.json2str({ a: 'é', b: [1, null, true] })).toBe('{"a": "\\u00e9", "b": [1, null, true]}');
    expect(f.json2str('text')).toBe('text');
  });

  it('joins, defaults and ors like BuiltInEnv', () => {
    const ctx = { baseUrl: 'https://x', lookup: () => [] };
    expect(f.BUILTINS.join!(ctx, ['.', 'a', 'b', 'c'])).toBe('a.b.c');
    expect(f.BUILTINS.join!(ctx, ['.', 'a', 1])).toBe('""');
    expect(f.BUILTINS.default!(ctx, [null, 'a'])).toBe('a');
    expect(f.BUILTINS.default!(ctx, ['b', 'a'])).toBe('b');
    expect(f.BUILTINS.or!(ctx, [null, 2])).toBe(2);
    expect(f.BUILTINS.or!(ctx, ['', 2])).toBe('');
    expect(f.BUILTINS['*']!(ctx, [2, 3])).toBe(6);
    expect(f.BUILTINS['>']!(ctx, [56, 23.5])).toBe(true);
    expect(f.BUILTINS.len!(ctx, [[1, 2, 3]])).toBe(3);
    expect(f.BUILTINS.bool!(ctx, ['a'])).toBe(true);
    expect(f.BUILTINS.bool!(ctx, [''])).toBe(false);
    expect(f.BUILTINS.unique!(ctx, [[1, 2, 3, 2]])).toEqual([1, 2, 3]);
  });
});

describe('Map Via parsing (commcare_export/map_format.py, tests/test_excel_query.py 003 fixture)', () => {
  const v = Ref('dangers');
  it('writes DET literal error strings for malformed arguments', () => {
    expect(compileMapFormatVia(v, 'selected-at(abc)').literalError).toBe(
      'Error: selected-at index must be an integer: selected-at(abc)',
    );
    expect(compileMapFormatVia(v, 'selected(fever').literalError).toBe(
      'Error: Unable to parse: selected(fever',
    );
    expect(compileMapFormatVia(v, 'substr(a, b)').literalError).toBe(
      'Error: both substr arguments must be non-negative integers: substr(a, b)',
    );
    expect(compileMapFormatVia(v, 'substr(-1, 10)').literalError).toBe(
      'Error: both substr arguments must be non-negative integers: substr(-1, 10)',
    );
    expect(compileMapFormatVia(v, 'template()').literalError).toBe(
      'Error: template function requires the format template: template()',
    );
  });

  it('keeps nested parentheses in selected() and flags unknown names', () => {
    const r = compileMapFormatVia(v, 'selected(Other_(Specify))');
    expect(r.node).toMatchObject({ t: 'Apply', args: [v, { t: 'Lit', v: 'Other_(Specify)' }] });
    expect(compileMapFormatVia(v, 'FormatDate').unknownFunction).toBe('FormatDate');
  });
});

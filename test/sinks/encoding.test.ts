import { describe, expect, it } from 'vitest';
import { formatDetDateTime, formatUtcDateTime } from '../../functions/sinks/cells';
import { columnLetters, xmlText } from '../../functions/sinks/formats/xlsx';
import { CopyLines, copyField, encodeRow } from '../../functions/sinks/postgres/copy-csv';

describe('cell encodings', () => {
  it('formats UTC date-times like toISOString for every kind of date, with milliseconds only when asked', () => {
    const samples = [
      Date.UTC(1970, 0, 1),
      Date.UTC(1969, 11, 31, 23, 59, 59, 999),
      Date.UTC(2000, 1, 29, 12),
      Date.UTC(1900, 2, 1),
      Date.UTC(1000, 0, 1),
      Date.UTC(9999, 11, 31, 23, 59, 59, 999),
      Date.UTC(2024, 5, 6, 7, 8, 9, 120),
    ];
    for (let n = 0; n < 2000; n++) samples.push(Date.UTC(1600, 0, 1) + n * 7_654_321_987);
    for (const ms of samples) {
      const iso = new Date(ms).toISOString();
      expect(formatUtcDateTime(ms, true)).toBe(
        iso.slice(0, 19).replace('T', ' ') + (iso.endsWith('.000Z') ? '' : iso.slice(19, 23)),
      );
      expect(formatDetDateTime(new Date(ms))).toBe(iso.slice(0, 19).replace('T', ' '));
    }
    expect(formatUtcDateTime(Date.UTC(12_000, 0, 1))).toBe('12000-01-01 00:00:00');
  });

  it('writes COPY fields that PostgreSQL reads back as the same value', () => {
    expect(copyField(null, 'text')).toBe('');
    expect(copyField('', 'text')).toBe('""');
    expect(copyField('plain', 'text')).toBe('plain');
    expect(copyField('a,"b"', 'text')).toBe('"a,""b"""');
    expect(copyField('\\.', 'text')).toBe('"\\."');
    expect(copyField('x\0y', 'text')).toBe('"xy"');
    expect(copyField(true, 'boolean')).toBe('true');
    expect(copyField(false, 'text')).toBe('false');
    expect(copyField(new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 6)), 'timestamp')).toBe(
      '2024-01-02 03:04:05.006',
    );
    expect(copyField(new Date(Date.UTC(2024, 0, 2, 3, 4, 5)), 'date')).toBe('2024-01-02');
    expect(copyField('text', 'jsonb')).toBe('"""text"""');
    expect(copyField({ a: [1, 'x'] }, 'text')).toBe('"{""a"":[1,""x""]}"');
  });

  it('refuses to encode a row whose value has no column yet or does not fit its column', () => {
    const fields: string[] = [];
    const types = ['text', 'integer', undefined] as const;
    expect(encodeRow(['a', 1, null], 'a', 0, types, fields)).toBe('a,1');
    expect(encodeRow(['a', 1, 'new'], 'a', 0, types, fields)).toBeNull();
    expect(encodeRow(['a', 'one', null], 'a', 0, types, fields)).toBeNull();
    expect(encodeRow([7, null], '7', 0, types, fields)).toBe('7,');
  });

  it('splits encoded lines by id even when a value holds a line break', () => {
    const lines = new CopyLines();
    for (let i = 0; i < 600; i++) lines.push(i % 3 === 0 ? `${i},"two\nlines"` : `${i},x`, `id${i}`);
    const { yes, no } = lines.split((id) => Number(id.slice(2)) % 2 === 0);
    const even = yes.join('');
    const odd = no.join('');
    expect(even.startsWith('0,"two\nlines"\n2,x\n')).toBe(true);
    expect(odd.startsWith('1,x\n3,"two\nlines"\n')).toBe(true);
    expect(even.length + odd.length).toBe(lines.body().join('').length);
  });

  it('escapes xlsx text and drops characters XML cannot hold, keeping emoji whole', () => {
    expect(xmlText('a & <b> "c"')).toBe('a &amp; &lt;b&gt; &quot;c&quot;');
    expect(xmlText('bell\u0007 tab\t ok 😀 lone\ud800')).toBe('bell tab\t ok 😀 lone');
    expect([0, 25, 26, 701, 702].map(columnLetters)).toEqual(['A', 'Z', 'AA', 'ZZ', 'AAA']);
  });
});

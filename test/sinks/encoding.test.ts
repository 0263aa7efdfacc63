import { describe, expect, it } from 'vitest';
import type { Cell } from '../../functions/query/types';
import { formatDetDateTime, formatUtcDateTime } from '../../functions/sinks/cells';
import { columnLetters, xmlText } from '../../functions/sinks/formats/xlsx';
import { type ColumnType, CopyLines, copyField } from '../../functions/sinks/postgres/copy-csv';
import { fits } from '../../functions/sinks/postgres/types';

/** The COPY body of rows encoded into one CopyLines (ids from the first cell), or null for a row that does not fit. */
function encode(rows: readonly Cell[][], types: readonly (ColumnType | undefined)[]): (string | null)[] {
  return rows.map((row) => {
    const lines = new CopyLines();
    return lines.row(row, String(row[0]), 0, types) ? Buffer.concat(lines.body()).toString('utf8') : null;
  });
}

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
    const types = ['text', 'integer', undefined] as const;
    expect(encode([['a', 1, null]], types)).toEqual(['a,1\n']);
    expect(encode([['a', 1, 'new']], types)).toEqual([null]);
    expect(encode([['a', 'one', null]], types)).toEqual([null]);
    expect(encode([[7, null]], types)).toEqual(['7,\n']);
    const lines = new CopyLines();
    expect(lines.row(['a', 1, null], 'a', 0, types)).toBe(true);
    expect(lines.row(['b', 'one', null], 'b', 0, types)).toBe(false);
    expect(lines.row(['c', null, null], 'c', 0, types)).toBe(true);
    expect(Buffer.concat(lines.body()).toString()).toBe('a,1\nc,\n');
    expect(lines.ids).toEqual(['a', 'c']);
  });

  it('writes every row as bytes exactly as copyField spells its cells', () => {
    const texts = [
      '',
      'plain',
      'a,"b"',
      '\\.',
      'x\0y',
      'é ü 😀',
      'lone \ud800',
      'two\nlines',
      'cr\r',
      'x'.repeat(300),
      `${'y'.repeat(299)},`,
      `ü${'z'.repeat(400)}`,
    ];
    const numbers = [
      0,
      -0,
      7,
      -7,
      2_147_483_647,
      -2_147_483_648,
      2_147_483_648,
      1.5,
      -1e-7,
      1e21,
      Number.NaN,
      Infinity,
      2 ** 53 + 2,
    ];
    const dates = [
      Date.UTC(2024, 0, 2, 3, 4, 5, 6),
      Date.UTC(2024, 0, 2, 3, 4, 5, 60),
      Date.UTC(1999, 11, 31, 23, 59, 59, 999),
      Date.UTC(1000, 0, 1),
      Date.UTC(999, 11, 31),
      Date.UTC(12_000, 0, 1),
      Date.UTC(1969, 6, 20, 20, 17),
    ];
    for (let n = 0; n < 200; n++) dates.push(Date.UTC(1600, 0, 1) + n * 76_543_219_873);
    const cells: Cell[] = [
      ...texts,
      ...numbers,
      true,
      false,
      null,
      { a: [1, 'x'], d: 'q"' },
      ['é', 2],
      ...dates.map((ms) => new Date(ms)),
    ];
    for (const type of [
      'text',
      'other',
      'jsonb',
      'date',
      'timestamp',
      'integer',
      'bigint',
      'boolean',
    ] as const) {
      const rows = cells.map((cell, n) => [`id-${n}`, cell, n % 2 === 0 ? null : 'z']);
      const types = ['text', type, 'text'] as const;
      const expected = rows.map((row) => {
        const cell = row[1] ?? null;
        const fit = cell === null || ['text', 'other', 'jsonb'].includes(type) || fits(cell, type);
        const line = `${[copyField(row[0], 'text'), copyField(cell, type), copyField(row[2], 'text')].join(',')}\n`;
        // Through UTF-8 as the socket took the text before (a lone surrogate becomes U+FFFD).
        return fit ? Buffer.from(line, 'utf8').toString('utf8') : null;
      });
      expect(encode(rows, types)).toEqual(expected);
    }
  });

  it('splits encoded lines by id even when a value holds a line break or a line outgrows a chunk', () => {
    const lines = new CopyLines();
    const types = ['text', 'text'] as const;
    const big = 'w'.repeat(70_000);
    for (let i = 0; i < 3000; i++) {
      const value = i === 1500 ? big : i % 3 === 0 ? 'two\nlines' : 'x';
      expect(lines.row([`id${i}`, value], `id${i}`, 0, types)).toBe(true);
    }
    const whole = Buffer.concat(lines.body()).toString();
    const { yes, no } = lines.split((id) => Number(id.slice(2)) % 2 === 0);
    const even = Buffer.concat(yes).toString();
    const odd = Buffer.concat(no).toString();
    expect(even.startsWith('id0,"two\nlines"\nid2,x\n')).toBe(true);
    expect(odd.startsWith('id1,x\nid3,"two\nlines"\n')).toBe(true);
    expect(even).toContain(`\nid1500,${big}\n`);
    expect(even.length + odd.length).toBe(whole.length);
    expect(whole.split('\n').length).toBe(3000 + 999 + 1); // every third value has a line break, except the big one
    // Every chunk ends at a line end, so a chunk is whole lines.
    for (const chunk of [...lines.body(), ...yes, ...no]) expect(chunk[chunk.length - 1]).toBe(0x0a);
  });

  it('escapes xlsx text and drops characters XML cannot hold, keeping emoji whole', () => {
    expect(xmlText('a & <b> "c"')).toBe('a &amp; &lt;b&gt; &quot;c&quot;');
    expect(xmlText('bell\u0007 tab\t ok 😀 lone\ud800')).toBe('bell tab\t ok 😀 lone');
    expect([0, 25, 26, 701, 702].map(columnLetters)).toEqual(['A', 'Z', 'AA', 'ZZ', 'AAA']);
  });
});

import { describe, expect, it } from 'vitest';
import {
  keyExpiry,
  keyNameFor,
  monthOfKeyName,
  nextRotationAt,
  rotationCron,
  rotationDay,
  targetMonth,
  zonedInstant,
} from '../../functions/keys/months';
import { parseCredentialSecret } from '../../functions/keys/secret';

const utc = { timeZone: 'UTC', leadDays: 7 };

describe('month names', () => {
  it('names the next month from the rotation day on, across the year end', () => {
    expect(rotationDay(7)).toBe(22);
    expect(targetMonth(new Date('2026-12-21T23:59:00Z'), utc)).toEqual({ year: 2026, month: 12 });
    expect(targetMonth(new Date('2026-12-22T00:00:00Z'), utc)).toEqual({ year: 2027, month: 1 });
    expect(keyNameFor('det', targetMonth(new Date('2026-12-31T23:59:59Z'), utc))).toBe('det-2027-01');
  });

  it('counts the day in the credential time zone', () => {
    // 21 Dec 20:00 UTC is already 22 Dec in Kiritimati (UTC+14) but still 21 Dec in Pago Pago (UTC-11).
    const instant = new Date('2026-12-21T20:00:00Z');
    expect(targetMonth(instant, { timeZone: 'Pacific/Kiritimati', leadDays: 7 })).toEqual({
      year: 2027,
      month: 1,
    });
    expect(targetMonth(instant, { timeZone: 'Pacific/Pago_Pago', leadDays: 7 })).toEqual({
      year: 2026,
      month: 12,
    });
  });

  it('keeps the rotation day inside every month, February included', () => {
    expect(rotationDay(1)).toBe(28);
    expect(rotationDay(28)).toBe(1);
    expect(targetMonth(new Date('2027-02-28T12:00:00Z'), { timeZone: 'UTC', leadDays: 1 })).toEqual({
      year: 2027,
      month: 3,
    });
  });

  it('parses only names of the form prefix-YYYY-MM', () => {
    expect(monthOfKeyName('det', 'det-2026-02')).toEqual({ year: 2026, month: 2 });
    expect(monthOfKeyName('det', 'det-2026-13')).toBeUndefined();
    expect(monthOfKeyName('det', 'January')).toBeUndefined();
    expect(monthOfKeyName('det', 'other-2026-02')).toBeUndefined();
  });

  it('expires a key at the end of the following month, in local time', () => {
    expect(keyExpiry({ year: 2026, month: 11 }, 'UTC').toISOString()).toBe('2027-01-01T00:00:00.000Z');
    expect(keyExpiry({ year: 2026, month: 2 }, 'Africa/Nairobi').toISOString()).toBe(
      '2026-03-31T21:00:00.000Z',
    );
  });

  it('finds local midnight across a DST change', () => {
    // New York: EDT (UTC-4) on 1 Apr, EST (UTC-5) on 1 Dec.
    expect(zonedInstant(2026, 4, 1, 'America/New_York').toISOString()).toBe('2026-04-01T04:00:00.000Z');
    expect(zonedInstant(2026, 12, 1, 'America/New_York').toISOString()).toBe('2026-12-01T05:00:00.000Z');
  });

  it('schedules the rotation at local noon on the rotation day, in UTC cron', () => {
    const ref = new Date('2026-01-15T00:00:00Z');
    expect(rotationCron({ timeZone: 'UTC', leadDays: 7 }, ref)).toBe('cron(0 12 22 * ? *)');
    expect(rotationCron({ timeZone: 'Asia/Kolkata', leadDays: 7 }, ref)).toBe('cron(30 6 22 * ? *)');
    expect(rotationCron({ timeZone: 'Pacific/Kiritimati', leadDays: 7 }, ref)).toBe('cron(0 22 21 * ? *)');
    expect(nextRotationAt(new Date('2026-12-23T00:00:00Z'), utc).toISOString()).toBe(
      '2027-01-22T12:00:00.000Z',
    );
  });
});

describe('credential secret validation', () => {
  it('fails naming the field and what was expected, never the key', () => {
    const text = JSON.stringify({
      provider: 'civicrm',
      baseUrl: 'https://crm.example.org',
      username: 'u',
      key: 'TOP-SECRET-KEY-VALUE',
      keyName: 'det-2026-01',
      createdAt: '2026-01-01T00:00:00Z',
      options: { contactIds: { a: 1, b: 'TOP-SECRET-KEY-VALUE' }, activeContact: 'a' },
      policy: { timeZone: 'Mars/Olympus' },
    });

    const run = () => parseCredentialSecret(text, 'secret x');

    expect(run).toThrow(/options\.contactIds\.b: expected number/);
    expect(run).toThrow(/policy\.timeZone: expected an IANA time zone/);
    expect(run).not.toThrow(/TOP-SECRET/);
  });

  it('fails on text that is not JSON without quoting it', () => {
    expect(() => parseCredentialSecret('TOP-SECRET{', 'secret x')).toThrow(
      /^secret x: the secret is not JSON/,
    );
    expect(() => parseCredentialSecret('TOP-SECRET{', 'secret x')).not.toThrow(/TOP-SECRET/);
  });
});

/**
 * Secrets Manager's rules for a rotation window (minute 0, start hour + duration <= 24, UTC), checked
 * for a credential's monthly rotation in every time zone this runtime knows.
 */
import { describe, expect, it } from 'vitest';
import { monthlyRotationRules, rotationRulesProblem } from '../../functions/config/schedule';
import { localDateTime, rotationDay } from '../../functions/keys/months';

const zones = Intl.supportedValuesOf('timeZone');

describe('rotation rules', () => {
  it('refuses a window off the hour or past midnight UTC, as Secrets Manager does', () => {
    expect(rotationRulesProblem({ scheduleExpression: 'cron(30 6 22 * ? *)', duration: '4h' })).toMatch(
      /minute 0/,
    );
    expect(rotationRulesProblem({ scheduleExpression: 'cron(0 22 21 * ? *)', duration: '4h' })).toMatch(
      /next UTC day/,
    );
    expect(rotationRulesProblem({ scheduleExpression: 'cron(0 6 22 * ? *)', duration: '25h' })).toMatch(
      /1h to 24h/,
    );
    expect(rotationRulesProblem({ scheduleExpression: 'cron(0 20 22 * ? *)', duration: '4h' })).toBeNull();
  });

  it('gives valid rules that keep the whole window on the local rotation day, in every time zone, every month', () => {
    const problems: string[] = [];
    expect(zones.length).toBeGreaterThan(300);
    for (const timeZone of zones) {
      for (const leadDays of [1, 7, 14, 28]) {
        const day = rotationDay(leadDays);
        const rules = monthlyRotationRules(timeZone, day);
        const problem = rotationRulesProblem(rules);
        if (problem) problems.push(`${timeZone} lead ${leadDays}: ${problem}`);
        const [, hour, utcDay] = /^cron\(0 (\d+) (\d+) \* \? \*\)$/.exec(rules.scheduleExpression) ?? [];
        const hours = Number.parseInt(rules.duration, 10);
        // Every hour of the window, in every month of a year (DST included), is on the local rotation day.
        for (let month = 0; month < 12; month++) {
          for (let h = 0; h < hours; h++) {
            // The first and the last minute of each hour of the window.
            for (const minute of [0, 59]) {
              const at = new Date(Date.UTC(2026, month, Number(utcDay), Number(hour) + h, minute));
              const local = localDateTime(at, timeZone);
              if (local.day !== day) {
                problems.push(`${timeZone} lead ${leadDays}: ${at.toISOString()} is local day ${local.day}`);
              }
            }
          }
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it('rounds Asia/Kolkata down to the hour and moves Pacific/Kiritimati onto the UTC date of its local day', () => {
    // Local noon 12:00 IST is 06:30 UTC: the window opens at 06:00 UTC (11:30 local).
    expect(monthlyRotationRules('Asia/Kolkata', 22)).toEqual({
      scheduleExpression: 'cron(0 6 22 * ? *)',
      duration: '4h',
    });
    // Local noon at UTC+14 is 22:00 UTC the day before; 00:00-04:00 UTC on the 22nd is 14:00-18:00 local.
    expect(monthlyRotationRules('Pacific/Kiritimati', 22)).toEqual({
      scheduleExpression: 'cron(0 0 22 * ? *)',
      duration: '4h',
    });
    expect(monthlyRotationRules('UTC', 22)).toEqual({
      scheduleExpression: 'cron(0 12 22 * ? *)',
      duration: '4h',
    });
  });
});

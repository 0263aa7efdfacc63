/**
 * The credential secret: one JSON document per credential, validated on every read. Errors name the
 * field and what was expected, never the value (the value may be a key).
 */
import { z } from 'zod';
import { SecretShapeError } from './errors';
import { isTimeZone } from './months';

const isoInstant = z.iso.datetime({ offset: true });

export const policySchema = z.object({
  /** Key names are `<namePrefix>-YYYY-MM`. */
  namePrefix: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$/)
    .default('det'),
  /** IANA zone in which months start and the rotation day is counted. */
  timeZone: z
    .string()
    .refine(isTimeZone, { message: 'expected an IANA time zone such as "Africa/Nairobi"' })
    .default('UTC'),
  /** Rotate at least this many days before the month the key serves. */
  leadDays: z.number().int().min(1).max(28).default(7),
  /** Days the previous key stays valid after the switch (and until an export succeeded with the new one). */
  graceDays: z.number().int().min(0).max(60).default(7),
  /** CommCare HQ: first reminder this many days before the month starts. */
  reminderDays: z.number().int().min(1).max(28).default(14),
});
export type KeyPolicy = z.infer<typeof policySchema>;

const previousSchema = z.object({
  keyName: z.string().min(1),
  providerKeyId: z.string().min(1).optional(),
});

const common = {
  baseUrl: z.url({ protocol: /^https?$/ }),
  username: z.string().min(1),
  /** The key itself. Empty only before the first key has been submitted. */
  key: z.string(),
  /** `<prefix>-YYYY-MM`; empty before the first key. */
  keyName: z.string(),
  providerKeyId: z.string().min(1).optional(),
  createdAt: isoInstant,
  expiresAt: isoInstant.optional(),
  /** Projects (HQ domains, Conduce/CiviCRM scopes) the key must reach. */
  projects: z.array(z.string().min(1)).default([]),
  policy: policySchema.default(() => policySchema.parse({})),
  previous: previousSchema.optional(),
};

export const commcareOptionsSchema = z.object({
  /** NAT Elastic IPs to put in the key's IP allow-list. */
  allowListIps: z.array(z.ipv4()).default([]),
});
export const conduceOptionsSchema = z.object({});
export const civicrmOptionsSchema = z.object({
  /** The two service contacts that take turns holding the key (A/B). */
  contactIds: z.object({ a: z.number().int().positive(), b: z.number().int().positive() }),
  /** Which contact holds `key`. */
  activeContact: z.enum(['a', 'b']),
  /** CIVICRM_SITE_KEY, sent as X-Civi-Key when the contacts lack "authenticate with api key". */
  siteKey: z.string().min(1).optional(),
});

export const credentialSecretSchema = z.discriminatedUnion('provider', [
  z.object({
    provider: z.literal('commcare'),
    ...common,
    options: commcareOptionsSchema.default(() => commcareOptionsSchema.parse({})),
  }),
  z.object({ provider: z.literal('conduce'), ...common, options: conduceOptionsSchema.default({}) }),
  z.object({ provider: z.literal('civicrm'), ...common, options: civicrmOptionsSchema }),
]);

export type CredentialSecret = z.infer<typeof credentialSecretSchema>;
export type ProviderName = CredentialSecret['provider'];
export type CommCareSecret = Extract<CredentialSecret, { provider: 'commcare' }>;
export type ConduceSecret = Extract<CredentialSecret, { provider: 'conduce' }>;
export type CiviCrmSecret = Extract<CredentialSecret, { provider: 'civicrm' }>;

/**
 * Parses and validates a secret string. `where` names the secret and version in the error.
 * The message lists each bad field with what was expected; zod v4 issues carry no input values
 * unless asked to, and we build the message from path and expectation only.
 */
export function parseCredentialSecret(text: string | undefined, where: string): CredentialSecret {
  if (text === undefined) throw new SecretShapeError(`${where}: the secret has no SecretString`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // The parser's message quotes part of the text, which may be the key: drop it.
    throw new SecretShapeError(`${where}: the secret is not JSON (expected one JSON object)`);
  }
  const result = credentialSecretSchema.safeParse(json);
  if (!result.success) {
    const problems = result.error.issues.map((i) => {
      const field = i.path.length > 0 ? i.path.join('.') : '(root)';
      return `${field}: ${describeIssue(i)}`;
    });
    throw new SecretShapeError(`${where}: invalid credential secret: ${problems.join('; ')}`);
  }
  return result.data;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return `expected ${issue.expected}`;
    case 'invalid_union':
      return 'expected provider "commcare", "conduce" or "civicrm"';
    case 'invalid_value':
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'too_small':
      return `expected at least ${String(issue.minimum)}`;
    case 'too_big':
      return `expected at most ${String(issue.maximum)}`;
    case 'invalid_format':
      return `expected format ${issue.format}`;
    case 'unrecognized_keys':
      return `unexpected keys ${issue.keys.join(', ')}`;
    default:
      // Custom refinements carry our own messages (no values).
      return issue.message;
  }
}

export function serializeSecret(secret: CredentialSecret): string {
  return JSON.stringify(secret);
}

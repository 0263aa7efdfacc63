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
  /** Set when the key was revoked at the switch (an emergency rotation): it no longer works. */
  revokedAt: isoInstant.optional(),
});

/** A key this credential created at the provider (never the key itself): what maintenance may revoke. */
const issuedSchema = z.object({
  keyName: z.string().min(1),
  /** Conduce: `sha256:<16 hex>` of the key value; CiviCRM: the contact id. */
  providerKeyId: z.string().min(1),
  createdAt: isoInstant,
});
export type IssuedRecord = z.infer<typeof issuedSchema>;

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
  /**
   * Where the key came from: `submitted` by a person, `provider` (created by the provider's API or
   * generated for it), `copy` (a rotation that found the month already served and keeps the key).
   */
  origin: z.enum(['submitted', 'provider', 'copy']).optional(),
  /** The key this one replaced early (`ccexport keys rotate --now`): revoked as soon as this one is in place. */
  replaces: z.string().min(1).optional(),
  /** Keys this credential created (newest last, at most 24): maintenance revokes the stale ones. */
  issued: z.array(issuedSchema).default([]),
};

export const commcareOptionsSchema = z.object({
  /** NAT Elastic IPs to put in the key's IP allow-list. */
  allowListIps: z.array(z.ipv4()).default([]),
});
export const conduceOptionsSchema = z.object({});
export const civicrmOptionsSchema = z.object({
  /** The two service contacts that take turns holding the key (A/B). */
  contactIds: z.object({ a: z.number().int().positive(), b: z.number().int().positive() }),
  /** Which contact holds `key` (when absent, the contact whose id is `providerKeyId`). */
  activeContact: z.enum(['a', 'b']).optional(),
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
 * The non-secret settings of a credential: they come from the deployment (the rotation function's
 * environment), never from CloudFormation writing the secret, so a deploy cannot overwrite a live key.
 * Every version the rotation function writes carries a copy, which is what the CLI reads.
 */
export const credentialSettingsSchema = z.discriminatedUnion('provider', [
  z.object({
    provider: z.literal('commcare'),
    baseUrl: common.baseUrl,
    username: common.username,
    projects: common.projects,
    policy: common.policy,
    options: z.object({ allowListIps: z.array(z.ipv4()).default([]) }).default({ allowListIps: [] }),
  }),
  z.object({
    provider: z.literal('conduce'),
    baseUrl: common.baseUrl,
    username: common.username,
    projects: common.projects,
    policy: common.policy,
    options: z.object({}).default({}),
  }),
  z.object({
    provider: z.literal('civicrm'),
    baseUrl: common.baseUrl,
    username: common.username,
    projects: common.projects,
    policy: common.policy,
    options: z.object({
      contactIds: z.object({ a: z.number().int().positive(), b: z.number().int().positive() }),
    }),
  }),
]);
export type CredentialSettings = z.infer<typeof credentialSettingsSchema>;

/**
 * The value CloudFormation gives a new credential secret: no key, no settings. It is the same for
 * every configuration, so no change to the config can make CloudFormation write the secret again.
 */
export const PLACEHOLDER_SECRET = JSON.stringify({
  key: '',
  keyName: '',
  createdAt: '1970-01-01T00:00:00.000Z',
});

/** Reads the settings JSON of the rotation function's environment; names the bad field. */
export function parseCredentialSettings(text: string | undefined, where: string): CredentialSettings {
  if (!text) throw new SecretShapeError(`${where} is not set; expected the credential settings as JSON`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new SecretShapeError(`${where} is not JSON; expected the credential settings as one JSON object`);
  }
  const result = credentialSettingsSchema.safeParse(json);
  if (!result.success) {
    const problems = result.error.issues.map(
      (i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${describeIssue(i)}`,
    );
    throw new SecretShapeError(`${where}: invalid credential settings: ${problems.join('; ')}`);
  }
  return result.data;
}

/** The stored document with the deployment's settings laid over it (the settings win). */
function withSettings(json: unknown, settings: CredentialSettings | undefined): unknown {
  if (!settings || typeof json !== 'object' || json === null || Array.isArray(json)) return json;
  const stored = json as Record<string, unknown>;
  const storedOptions =
    typeof stored.options === 'object' && stored.options !== null ? (stored.options as object) : {};
  return { ...stored, ...settings, options: { ...storedOptions, ...settings.options } };
}

/** Which CiviCRM contact holds the key: the contact whose id the key was recorded with, else `activeContact`. */
export function activeContactOf(secret: CiviCrmSecret): 'a' | 'b' {
  const { contactIds, activeContact } = secret.options;
  if (secret.providerKeyId === String(contactIds.a)) return 'a';
  if (secret.providerKeyId === String(contactIds.b)) return 'b';
  return activeContact ?? 'a';
}

/**
 * Parses and validates a secret string. `where` names the secret and version in the error.
 * The message lists each bad field with what was expected; zod v4 issues carry no input values
 * unless asked to, and we build the message from path and expectation only.
 */
export function parseCredentialSecret(
  text: string | undefined,
  where: string,
  settings?: CredentialSettings,
): CredentialSecret {
  if (text === undefined) throw new SecretShapeError(`${where}: the secret has no SecretString`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // The parser's message quotes part of the text, which may be the key: drop it.
    throw new SecretShapeError(`${where}: the secret is not JSON (expected one JSON object)`);
  }
  if (!settings && isPlaceholder(json)) {
    throw new SecretShapeError(
      `${where}: no key has been submitted yet (the secret holds the empty value it was created with); ` +
        'run "ccexport keys submit <credential>"',
    );
  }
  const result = credentialSecretSchema.safeParse(withSettings(json, settings));
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

/** The value CloudFormation created, before any key: no provider, no key. */
export function isPlaceholder(json: unknown): boolean {
  const v = json as { provider?: unknown; key?: unknown } | null;
  return typeof v === 'object' && v !== null && v.provider === undefined && !v.key;
}

/** Whether a stored secret string is still the placeholder (no key has ever been promoted). */
export function isPlaceholderText(text: string | undefined): boolean {
  try {
    return isPlaceholder(JSON.parse(text ?? ''));
  } catch {
    return false;
  }
}

/**
 * A key a person submitted with `ccexport keys submit`: the key only. The rotation function adds the
 * name (when none was given) and the settings, and checks it before it takes it.
 */
export const submissionSchema = z.object({
  kind: z.literal('submission'),
  key: z.string().min(8),
  keyName: z.string().min(1).optional(),
  providerKeyId: z.string().min(1).optional(),
  /** CiviCRM: CIVICRM_SITE_KEY, when the contacts lack "authenticate with api key". */
  siteKey: z.string().min(1).optional(),
  submittedAt: isoInstant,
});
export type Submission = z.infer<typeof submissionSchema>;

export function parseSubmission(text: string | undefined, where: string): Submission {
  let json: unknown;
  try {
    json = JSON.parse(text ?? '');
  } catch {
    throw new SecretShapeError(`${where}: the submission is not JSON`);
  }
  const result = submissionSchema.safeParse(json);
  if (!result.success) {
    const problems = result.error.issues.map(
      (i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${describeIssue(i)}`,
    );
    throw new SecretShapeError(`${where}: invalid key submission: ${problems.join('; ')}`);
  }
  return result.data;
}

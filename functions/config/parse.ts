/**
 * `parseExportsConfig(text, fileName)`: YAML text in, a typed and cross-checked config out, or a
 * `ConfigError` whose message names every bad field by its path (`exports[1].schedule.timezone: ...`).
 * Pure: it never reads the disk; query file paths are only resolved against the config file's folder.
 */
import { dirname, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { credentialSecretName, isCredentialSecretArn } from './naming';
import { type CredentialConfig, type ExportConfig as ExportConfigBase, exportsConfigSchema } from './schema';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  /** Every problem found, each `path: what is wrong`. */
  readonly problems: readonly string[];

  constructor(fileName: string, problems: readonly string[], options?: { cause?: unknown }) {
    super(`${fileName}: ${problems.length === 1 ? problems[0] : `\n  ${problems.join('\n  ')}`}`, options);
    this.problems = problems;
  }
}

export interface ExportConfig extends ExportConfigBase {
  /** `queryFile` resolved against the config file's folder; null for an export defined in HQ. */
  readonly queryFilePath: string | null;
}

export type ExportsConfig = Omit<z.output<typeof exportsConfigSchema>, 'exports'> & {
  readonly exports: readonly ExportConfig[];
};

export type { CredentialConfig };

/** `exports[1].schedule.timezone` from `['exports', 1, 'schedule', 'timezone']`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out === '' ? '(top level)' : out;
}

export function parseExportsConfig(text: string, fileName: string): ExportsConfig {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      fileName,
      doc.errors.map((e) => `YAML: ${e.message.split('\n')[0]}`),
      { cause: doc.errors[0] },
    );
  }
  let raw: unknown;
  try {
    // The yaml library refuses documents whose aliases expand past a limit (a "billion laughs" bomb).
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    throw new ConfigError(
      fileName,
      [
        `YAML: ${error instanceof Error ? error.message : String(error)} (aliases (*name) expand to too much ` +
          'data; write the values out, or use fewer aliases)',
      ],
      { cause: error },
    );
  }
  const result = exportsConfigSchema.safeParse(raw ?? {}, { reportInput: true });
  if (!result.success) {
    throw new ConfigError(
      fileName,
      result.error.issues.map((issue) => `${formatPath(issue.path)}: ${describeIssue(issue)}`),
      { cause: result.error },
    );
  }
  const config = result.data;
  const problems = crossCheck(config);
  if (problems.length > 0) throw new ConfigError(fileName, problems);

  const base = dirname(resolve(fileName));
  return {
    ...config,
    exports: config.exports.map((e) => ({
      ...e,
      queryFilePath: e.queryFile === undefined ? null : resolve(base, e.queryFile),
    })),
  };
}

/** Zod's message, except for a missing field, which it words as a type mismatch. */
function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_type' && issue.input === undefined)
    return `is missing; expected ${issue.expected}`;
  return issue.message;
}

/** The rules one field's schema cannot see: names unique, references resolve, prefixes disjoint. */
function crossCheck(config: z.output<typeof exportsConfigSchema>): string[] {
  const problems: string[] = [];
  const credentials = new Map<string, CredentialConfig>();
  config.credentials.forEach((c, i) => {
    if (credentials.has(c.name)) {
      problems.push(
        `credentials[${i}].name: ${JSON.stringify(c.name)} is used by an earlier credential; names must be unique`,
      );
    }
    credentials.set(c.name, c);
    if (c.rotation.ipAllowList === true && c.provider !== 'commcare') {
      problems.push(
        `credentials[${i}].rotation.ipAllowList: only for provider "commcare" (HQ keys take an IP allow-list); this is provider "${c.provider}"`,
      );
    }
    if (c.adoptSecret && !isCredentialSecretArn(c.adoptSecret.secretArn, c.name)) {
      problems.push(
        `credentials[${i}].adoptSecret.secretArn: ${JSON.stringify(c.adoptSecret.secretArn)} is not credential ${JSON.stringify(c.name)}'s secret; expected the ARN of ${credentialSecretName(c.name)}-<6 characters>`,
      );
    }
    if (c.provider === 'civicrm' && !c.civicrm) {
      problems.push(
        `credentials[${i}].civicrm: is missing; provider "civicrm" needs civicrm.contactIds { a, b } (two contacts that take turns holding the key)`,
      );
    }
  });

  if (config.network.mode === 'none') {
    if (config.database.type === 'create') {
      problems.push(
        'database.type: "create" makes a private RDS instance, which needs a VPC; network.mode "none" has none. ' +
          'Choose network.mode "nat", "nat-instance" or "existing", or use database.type "existing" with a database the functions reach over the internet',
      );
    } else if (config.database.type === 'existing' && config.database.securityGroupId) {
      problems.push(
        'database.securityGroupId: network.mode "none" runs the functions outside any VPC, with no security group to admit; ' +
          'remove it and let the database accept TLS connections from the internet, or choose network.mode "existing"',
      );
    }
  }

  const exportNames = new Set<string>();
  const prefixes: { prefix: string; at: string }[] = [];
  config.exports.forEach((e, i) => {
    const at = `exports[${i}]`;
    if (exportNames.has(e.name)) {
      problems.push(
        `${at}.name: ${JSON.stringify(e.name)} is used by an earlier export; names must be unique`,
      );
    }
    exportNames.add(e.name);

    const cred = credentials.get(e.credential);
    if (!cred) {
      problems.push(
        `${at}.credential: ${JSON.stringify(e.credential)} is not a credential; expected one of ${[...credentials.keys()].map((n) => JSON.stringify(n)).join(', ')}`,
      );
    } else {
      e.projects.forEach((p, j) => {
        if (!cred.projects.includes(p)) {
          problems.push(
            `${at}.projects[${j}]: ${JSON.stringify(p)} is not among credential ${JSON.stringify(cred.name)}'s projects (${cred.projects.join(', ')})`,
          );
        }
      });
    }
    if (new Set(e.projects).size !== e.projects.length) {
      problems.push(`${at}.projects: lists a project twice`);
    }

    if (e.output.type === 'postgres' && config.database.type === 'none') {
      problems.push(
        `${at}.output.type: "postgres" needs a database; set database.type to "create" or "existing"`,
      );
    }
    if (e.output.type === 's3') {
      // Each export's role may write only under its own prefix; nested prefixes would let one export
      // overwrite another's files.
      for (const other of prefixes) {
        if (e.output.prefix.startsWith(other.prefix) || other.prefix.startsWith(e.output.prefix)) {
          problems.push(
            `${at}.output.prefix: ${JSON.stringify(e.output.prefix)} overlaps ${other.at}.output.prefix ${JSON.stringify(other.prefix)}; each export needs its own prefix`,
          );
        }
      }
      prefixes.push({ prefix: e.output.prefix, at });
    }
    if (e.queryFile === undefined && e.query === undefined) {
      problems.push(
        `${at}: names no query; expected queryFile (a DET query file) or query: { hqExport: <name or id> }`,
      );
    } else if (e.queryFile !== undefined && e.query !== undefined) {
      problems.push(`${at}: has both queryFile and query.hqExport; expected one of them`);
    } else if (e.queryFile !== undefined && !/\.(xlsx|json)$/i.test(e.queryFile)) {
      problems.push(
        `${at}.queryFile: ${JSON.stringify(e.queryFile)} is not a DET query file; expected .xlsx or .json`,
      );
    }
  });
  return problems;
}

/** Where a problem sits in a query file: sheet and cell for Excel, a JSON pointer-ish location for MiniLinq. */
export interface QueryFileIssue {
  readonly sheet?: string;
  /** A1-style cell reference, e.g. `D7`. */
  readonly cell?: string;
  readonly message: string;
}

export function formatIssue(issue: QueryFileIssue): string {
  const where: string[] = [];
  if (issue.sheet !== undefined) where.push(`Sheet "${issue.sheet}"`);
  if (issue.cell !== undefined) where.push(`cell ${issue.cell}`);
  return where.length > 0 ? `${where.join(', ')}: ${issue.message}` : issue.message;
}

/** A query file that cannot run. Carries every problem found, not only the first. */
export class QueryFileError extends Error {
  override readonly name = 'QueryFileError';
  readonly issues: readonly QueryFileIssue[];
  constructor(issues: readonly QueryFileIssue[], options?: { cause?: unknown; file?: string }) {
    const head = options?.file ? `Query file ${options.file} cannot be used` : 'Query file cannot be used';
    super(`${head}:\n${issues.map((i) => `  - ${formatIssue(i)}`).join('\n')}`, { cause: options?.cause });
    this.issues = issues;
  }
}

/** A JSONPath expression jsonpath-ng 1.6 would refuse to parse. */
export class JsonPathSyntaxError extends Error {
  override readonly name = 'JsonPathSyntaxError';
  readonly path: string;
  constructor(path: string, detail: string) {
    super(`bad path ${JSON.stringify(path)}: ${detail}`);
    this.path = path;
  }
}

/** A failure while turning one record into rows (DET would stop the whole export here). */
export class QueryRuntimeError extends Error {
  override readonly name = 'QueryRuntimeError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

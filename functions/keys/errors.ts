/**
 * Named errors of the key-rotation core. Messages name the value received and what was expected, and
 * never contain a key: callers may log them as they are.
 *
 * Every class sets a literal `name`: the bundler minifies class names, and these names reach logs,
 * the CLI and `ccexport keys status`.
 *
 * `transient` says whether the same rotation can succeed when Secrets Manager retries it with the same
 * token (a provider answering 5xx/429, a network fault): the rotation then keeps its AWSPENDING version.
 * A terminal error (a key rejected with 401/403, a missing submission, a broken secret) ends the
 * rotation at once, so the next one is not blocked.
 */
export class KeyError extends Error {
  override name = 'KeyError';
  /** True when retrying the same step can succeed (provider 5xx/429, timeouts, network). */
  readonly transient: boolean;
  constructor(message: string, options?: { cause?: unknown; transient?: boolean }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.transient = options?.transient ?? false;
  }
}

/** The secret's JSON does not have the documented shape. Names the field, never the value. */
export class SecretShapeError extends KeyError {
  override name = 'SecretShapeError';
}

/** A rotation event or the secret's version stages do not allow this step. */
export class RotationStateError extends KeyError {
  override name = 'RotationStateError';
}

/** A rotation step failed; `cause` says why. */
export class RotationStepError extends KeyError {
  override name = 'RotationStepError';
  constructor(
    readonly step: string,
    readonly secretId: string,
    options: { cause: unknown; transient: boolean },
  ) {
    super(`rotation step ${step} failed for secret ${secretId}: ${describeCause(options.cause)}`, options);
  }
}

/** A key provider answered with an unexpected status or body, or could not be reached. */
export class ProviderError extends KeyError {
  override name = 'ProviderError';
  /** The HTTP status the provider answered, when it answered. */
  readonly status: number | undefined;
  constructor(message: string, options?: { cause?: unknown; transient?: boolean; status?: number }) {
    super(message, {
      ...options,
      transient: options?.transient ?? (options?.status !== undefined && isTransientStatus(options.status)),
    });
    this.status = options?.status;
  }
}

/** A key was rejected by the provider when tested (or the test could not be run: then `transient`). */
export class KeyTestError extends KeyError {
  override name = 'KeyTestError';
}

/** CommCare HQ keys are made by a person; no key has been submitted for this month yet. */
export class KeyNotSubmittedError extends KeyError {
  override name = 'KeyNotSubmittedError';
}

/** A command-line use error (unknown command, key given as an argument, ...). */
export class KeyUsageError extends KeyError {
  override name = 'KeyUsageError';
}

/** 5xx, 429 (throttled) and 408 (request timeout) can pass; every other status will answer the same again. */
export function isTransientStatus(status: number): boolean {
  return status >= 500 || status === 429 || status === 408;
}

/**
 * Whether a same-token retry of the rotation can succeed after `error`. Our own errors say so; any
 * other error (an AWS SDK error, a crash, a timeout) is treated as transient: keeping AWSPENDING costs
 * nothing, because the daily maintenance run clears a pending version older than an hour.
 */
export function isTransient(error: unknown): boolean {
  if (error instanceof KeyError) return error.transient;
  return true;
}

export function describeCause(cause: unknown): string {
  if (cause instanceof Error) return `${cause.name}: ${cause.message}`;
  return String(cause);
}

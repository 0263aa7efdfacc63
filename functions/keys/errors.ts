/**
 * Named errors of the key-rotation core. Messages name the value received and what was expected, and
 * never contain a key: callers may log them as they are.
 */
export class KeyError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The secret's JSON does not have the documented shape. Names the field, never the value. */
export class SecretShapeError extends KeyError {}

/** A rotation event or the secret's version stages do not allow this step. */
export class RotationStateError extends KeyError {}

/** A rotation step failed; `cause` says why. */
export class RotationStepError extends KeyError {
  constructor(
    readonly step: string,
    readonly secretId: string,
    options: { cause: unknown },
  ) {
    super(`rotation step ${step} failed for secret ${secretId}: ${describeCause(options.cause)}`, options);
  }
}

/** A key provider answered with an unexpected status or body. */
export class ProviderError extends KeyError {}

/** A key was rejected by the provider when tested. */
export class KeyTestError extends KeyError {}

/** CommCare HQ keys are made by a person; no key has been submitted for this month yet. */
export class KeyNotSubmittedError extends KeyError {}

/** A command-line use error (unknown command, key given as an argument, ...). */
export class KeyUsageError extends KeyError {}

export function describeCause(cause: unknown): string {
  if (cause instanceof Error) return `${cause.name}: ${cause.message}`;
  return String(cause);
}

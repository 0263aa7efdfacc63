/** Errors raised by sinks and checkpoint stores. Messages never contain a password or key. */

export class SinkError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    // Subclasses name themselves with a literal: the Lambda bundle is minified, which renames
    // classes, and the state machine matches errors by this name.
    this.name = 'SinkError';
  }
}

/** Options that cannot work (bad URL, unknown format, missing `id` heading, ...). */
export class SinkConfigError extends SinkError {
  override readonly name: string = 'SinkConfigError';
}

/** Another run of the same export (checkpoint key + project) holds the lock or lease. */
export class ConcurrentRunError extends SinkError {
  override readonly name: string = 'ConcurrentRunError';
}

/** A value does not fit its column and `strictTypes` forbids widening. */
export class TypeConflictError extends SinkError {
  override readonly name: string = 'TypeConflictError';
}

/**
 * A value cannot be converted to the declared type of its column (Data Type in the query file, or the
 * type of a column that exists): the batch is rolled back and the run stops, as DET stops.
 */
export class DeclaredTypeError extends TypeConflictError {
  override readonly name: string = 'DeclaredTypeError';
}

/** A conditional write lost: somebody else changed the object since we read it. */
export class PreconditionFailedError extends SinkError {
  override readonly name: string = 'PreconditionFailedError';
}

/** The run's lease expired and another run took it; this run must stop without writing a checkpoint. */
export class LeaseLostError extends SinkError {
  override readonly name: string = 'LeaseLostError';
}

/** Calls out of the order `begin`, `writeRows`/`commit`, `finish`/`abort`. */
export class SinkStateError extends SinkError {
  override readonly name: string = 'SinkStateError';
}

/**
 * A read, write, delete or listing of the output's folder or S3 prefix failed for a reason other than
 * a refused condition. The message names the object (bucket and key) and what the store said; the
 * sink prefixes the step it was taking (`Writing the checkpoint: ...`).
 */
export class ObjectStoreError extends SinkError {
  override readonly name: string = 'ObjectStoreError';
}

/**
 * Errors thrown by the CommCare HQ client. Every message names the project, the resource path and what
 * HQ answered, and none ever contains the API key: axios errors carry the request headers in
 * `config.headers`, so they are never attached as `cause`; a plain, redacted `Error` is attached instead.
 */

/** Base class: everything the client throws on purpose is a `CommCareError`. */
export class CommCareError extends Error {
  // Literal names: the bundler may rename classes, and the state machine matches errors by name.
  override readonly name: string = 'CommCareError';
}

/** Options the caller gave are unusable (bad base URL, unknown resource, unparseable date, ...). */
export class CommCareConfigError extends CommCareError {
  override readonly name = 'CommCareConfigError';
}

/**
 * HQ refused the credentials (401) or the permission (403). Not retried: a retry cannot fix it, and
 * repeated failures can lock the account out.
 */
export class CommCareAuthError extends CommCareError {
  override readonly name = 'CommCareAuthError';
  readonly status: 401 | 403;
  readonly project: string | null;
  readonly username: string;
  constructor(args: {
    status: 401 | 403;
    project: string | null;
    username: string;
    path: string;
    hqMessage: string | null;
  }) {
    const where = args.project === null ? 'a URL without a project' : `project "${args.project}"`;
    const causes =
      args.status === 401
        ? [
            'the API key is wrong, or belongs to another user than the username',
            'the key has expired or was deactivated or deleted',
            'the key is scoped to another project space',
            "the calling IP address is not on the key's IP allow-list",
            "the project's subscription has no API access, or API access was cut off for too many requests",
          ]
        : [
            'the user is not a member of the project space',
            'the user\'s role lacks the "API Access" permission or the permission the resource needs (forms and cases need Edit Data)',
            'the key is limited to a role without that permission',
          ];
    const said = args.hqMessage ? ` HQ said: ${args.hqMessage}.` : '';
    super(
      `CommCare HQ answered ${args.status} for user "${args.username}" on ${where} (${args.path}).${said} ` +
        `Likely causes: ${causes.join('; ')}.`,
    );
    this.status = args.status;
    this.project = args.project;
    this.username = args.username;
  }
}

/** HQ rejected the request itself (400 bad filter or date, 404 unknown project or resource, a redirect, ...). */
export class CommCareRequestError extends CommCareError {
  override readonly name = 'CommCareRequestError';
  readonly status: number;
  /** HQ's own error text (the `error` field of a JSON body, or the text body), redacted and shortened. */
  readonly hqMessage: string | null;
  constructor(message: string, args: { status: number; hqMessage: string | null; cause?: unknown }) {
    super(message, { cause: args.cause });
    this.status = args.status;
    this.hqMessage = args.hqMessage;
  }
}

/** HQ kept failing (5xx, resets, timeouts, unreadable bodies) until the retry count or time ran out. */
export class CommCareUnavailableError extends CommCareError {
  override readonly name = 'CommCareUnavailableError';
  readonly attempts: number;
  constructor(message: string, args: { attempts: number; cause?: unknown }) {
    super(message, { cause: args.cause });
    this.attempts = args.attempts;
  }
}

/** HQ kept answering 429 for longer than the throttle budget allows. */
export class CommCareThrottledError extends CommCareError {
  override readonly name = 'CommCareThrottledError';
}

/** A response was valid JSON but not the envelope the resource should have. */
export class CommCareResponseError extends CommCareError {
  override readonly name = 'CommCareResponseError';
}

/**
 * HQ could not build an export's DET config. Its download view (`DownloadDETSchemaView`,
 * `corehq/apps/export/views/download.py`) catches the `DETConfigError` that building the workbook
 * raises and answers 200, as text/html, "Sorry, something went wrong creating that file: <error>"
 * instead of the workbook. That error comes from the export's definition alone (an export with no
 * table selected, an export type DET cannot run), so the same request gets the same answer until
 * someone edits the export in HQ: permanent. Neither the client nor the state machine retries it
 * (a retry would only delay the failure alarm by the state machine's backoff, about 20 minutes).
 */
export class CommCareDetConfigError extends CommCareError {
  override readonly name = 'CommCareDetConfigError';
}

/**
 * Paging cannot advance: more records share one `indexed_on` value than the resource's maximum page
 * holds, so the same request would repeat forever (DET's `ResourceRepeatException`); or HQ does not
 * apply `indexed_on_start` or `order_by=indexed_on`, or its `next` links lead back to a page already
 * read. The message says what HQ did.
 */
export class CommCareStuckError extends CommCareError {
  override readonly name = 'CommCareStuckError';
}

/**
 * HQ sent more records or bytes in one run than the run's budget allows (`maxRecords`, `maxBytes`): a
 * server whose pages never end would otherwise be followed forever. The message names the budget and
 * how to raise it.
 */
export class CommCareBudgetError extends CommCareError {
  override readonly name = 'CommCareBudgetError';
}

/**
 * A request was cancelled because the pull it belonged to stopped (another window failed, or the caller
 * gave up); what the caller sees is the error that stopped the pull, not this one.
 */
export class CommCareCancelledError extends CommCareError {}

/** Replaces every occurrence of each secret in `text` (secrets shorter than 4 characters are ignored). */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) {
    if (secret.length >= 4) out = out.split(secret).join('[redacted]');
  }
  return out;
}

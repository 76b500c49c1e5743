import type { Diagnostic } from '@bulkhead/policy';

/** Codes the control plane puts in `{ error: { code } }`. */
export type ApiErrorCode =
  | 'VALIDATION_FAILED'
  | 'NOT_FOUND'
  | 'CONFLICT'
  | 'IMPACT_CONFIRMATION_REQUIRED'
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'INTERNAL';

/**
 * USAGE: bad command line (exit 2). INVALID_INPUT: bad resource files (exit 3).
 * UNREACHABLE / BAD_RESPONSE: transport trouble; API codes: the server said no (all exit 1).
 */
export type CliErrorCode =
  | 'USAGE'
  | 'INVALID_INPUT'
  | 'UNREACHABLE'
  | 'BAD_RESPONSE'
  | ApiErrorCode;

export interface CliErrorOptions {
  /** HTTP status when the error came from the server. */
  status?: number;
  details?: Diagnostic[];
  /** The server's whole `error` object, for codes that carry more than a message (`impact`). */
  response?: Record<string, unknown>;
  cause?: unknown;
}

/** The one error type of this package; branch on `code`. */
export class CliError extends Error {
  override readonly name = 'CliError';
  readonly code: CliErrorCode;
  readonly status: number | undefined;
  readonly details: Diagnostic[];
  readonly response: Record<string, unknown> | undefined;

  constructor(code: CliErrorCode, message: string, options: CliErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = options.status;
    this.details = options.details ?? [];
    this.response = options.response;
  }
}

/** `diff` found something apply would change (as `terraform plan -detailed-exitcode`'s 2, which is taken here). */
export const EXIT_DIFF_CHANGES = 5;

/**
 * `plan`, `impact`, and a refused `provision`/`rollback`/`mode`: observed flows would be newly
 * blocked. Not 2 or 3, so that a pipeline can tell "would break traffic" from "bad input".
 */
export const EXIT_NEWLY_BLOCKED = 4;

/** The process exit code for an error; the only place exit codes are chosen. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof CliError) {
    if (err.code === 'USAGE') return 2;
    if (err.code === 'INVALID_INPUT') return 3;
    if (err.code === 'IMPACT_CONFIRMATION_REQUIRED') return EXIT_NEWLY_BLOCKED;
  }
  return 1;
}

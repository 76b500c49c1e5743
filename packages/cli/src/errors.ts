import type { Diagnostic } from '@bulkhead/policy';

/** Codes the control plane puts in `{ error: { code } }`. */
export type ApiErrorCode =
  | 'VALIDATION_FAILED'
  | 'NOT_FOUND'
  | 'CONFLICT'
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
  cause?: unknown;
}

/** The one error type of this package; branch on `code`. */
export class CliError extends Error {
  override readonly name = 'CliError';
  readonly code: CliErrorCode;
  readonly status: number | undefined;
  readonly details: Diagnostic[];

  constructor(code: CliErrorCode, message: string, options: CliErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = options.status;
    this.details = options.details ?? [];
  }
}

/** `diff` found something apply would change (as `terraform plan -detailed-exitcode`'s 2, which is taken here). */
export const EXIT_DIFF_CHANGES = 5;

/** The process exit code for an error; the only place exit codes are chosen. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof CliError) {
    if (err.code === 'USAGE') return 2;
    if (err.code === 'INVALID_INPUT') return 3;
  }
  return 1;
}

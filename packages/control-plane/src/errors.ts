/** Stable error codes of the control plane; HTTP and gRPC statuses are derived from them at the edges. */
export type ControlPlaneErrorCode =
  | 'VALIDATION_FAILED'
  | 'NOT_FOUND'
  | 'CONFLICT'
  /** A change would newly block observed flows; the error carries the impact report. */
  | 'IMPACT_CONFIRMATION_REQUIRED'
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  /** A path that exists under other methods (the answer's `Allow` header names them). */
  | 'METHOD_NOT_ALLOWED'
  /** A request body or message over its size limit. */
  | 'PAYLOAD_TOO_LARGE'
  /** A URL (or one of its path segments) over its length limit. */
  | 'URI_TOO_LONG'
  /** A body in a content type the API does not read (it reads JSON). */
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'INTERNAL';

export interface ErrorDetail {
  path: string;
  message: string;
}

export class ControlPlaneError extends Error {
  override readonly name = 'ControlPlaneError';
  readonly code: ControlPlaneErrorCode;
  readonly details: ErrorDetail[];
  /** The impact report of IMPACT_CONFIRMATION_REQUIRED: what the admin is asked to confirm. */
  readonly impact?: unknown;

  constructor(
    code: ControlPlaneErrorCode,
    message: string,
    options: { details?: ErrorDetail[]; cause?: unknown; impact?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? [];
    if (options.impact !== undefined) this.impact = options.impact;
  }
}

export function isControlPlaneError(err: unknown): err is ControlPlaneError {
  return err instanceof ControlPlaneError;
}

/** A 400 with the diagnostics that explain it. */
export const invalid = (message: string, details: ErrorDetail[]) =>
  new ControlPlaneError('VALIDATION_FAILED', message, { details });

export const notFound = (what: string) => new ControlPlaneError('NOT_FOUND', `${what} not found`);

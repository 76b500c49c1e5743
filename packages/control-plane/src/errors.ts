/** Stable error codes of the control plane; HTTP and gRPC statuses are derived from them at the edges. */
export type ControlPlaneErrorCode =
  | 'VALIDATION_FAILED'
  | 'NOT_FOUND'
  | 'CONFLICT'
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'INTERNAL';

export interface ErrorDetail {
  path: string;
  message: string;
}

export class ControlPlaneError extends Error {
  override readonly name = 'ControlPlaneError';
  readonly code: ControlPlaneErrorCode;
  readonly details: ErrorDetail[];

  constructor(
    code: ControlPlaneErrorCode,
    message: string,
    options: { details?: ErrorDetail[]; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? [];
  }
}

export function isControlPlaneError(err: unknown): err is ControlPlaneError {
  return err instanceof ControlPlaneError;
}

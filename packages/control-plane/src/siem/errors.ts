/** Stable error codes of the SIEM exporter. */
export type SiemErrorCode = 'SIEM_CONFIG_INVALID' | 'SIEM_SPOOL_FAILED';

export class SiemError extends Error {
  override readonly name = 'SiemError';
  readonly code: SiemErrorCode;

  constructor(code: SiemErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}

/** Stable codes; callers branch on these, never on message text. */
export type AgentErrorCode =
  | 'RULESET_INVALID'
  /** A PolicyUpdate that does not fit the agent's state (contract): it asks for a full sync. */
  | 'UPDATE_REFUSED'
  | 'APPLY_FAILED'
  | 'STATE_IO'
  | 'ENROLL_FAILED'
  | 'ENROLL_REFUSED'
  | 'CONFIG_INVALID'
  | 'RESOLVE_FAILED';

/** The one error class of @bulkhead/agent. */
export class AgentError extends Error {
  override readonly name = 'AgentError';
  readonly code: AgentErrorCode;

  constructor(code: AgentErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

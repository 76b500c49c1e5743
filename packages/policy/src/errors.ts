/**
 * Thrown only for programmer errors (an argument that validation would have rejected, a
 * broken invariant). User input never throws: it comes back as `Diagnostic`s.
 */
export class PolicyError extends Error {
  override readonly name = 'PolicyError';
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

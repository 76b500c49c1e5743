// When and how long the agent waits before talking to the control plane again. Owns the
// backoff arithmetic and the split of gRPC statuses into "can heal" and "cannot heal"; it
// schedules nothing and decides nothing about exiting (enrol and sync do).
import { status } from '@grpc/grpc-js';

export interface BackoffOptions {
  /** Ceiling of the first delay. Default 1 s. */
  baseMs?: number;
  /** Largest ceiling. Default 60 s. */
  capMs?: number;
  /**
   * After a lost connection (`lost`) the ceiling stays at the base until the delays handed out
   * since add up to this, then grows: a control plane that restarts is back within seconds, and
   * a restart is not a failure to back off from. Counted in delays, not on a clock, so the
   * schedule depends on nothing but `random`. Default 10 s (about 20 attempts at a 1 s base).
   */
  quickWindowMs?: number;
  /** Uniform in [0, 1); tests inject their own. Default Math.random. */
  random?: () => number;
}

/**
 * Exponential backoff with full jitter: attempt n waits uniformly in [0, min(cap, base * 2^n)),
 * so a fleet cut off at the same moment does not come back in lockstep.
 */
export interface Backoff {
  /** The delay before the next attempt; grows the ceiling for the one after. */
  next(): number;
  /** Jump to the cap: for failures that retrying soon will not heal. */
  toCap(): void;
  /** Back to the base, once the control plane has really answered. */
  reset(): void;
  /**
   * A working connection just dropped: attempts stay at the base ceiling (still jittered) for
   * `quickWindowMs` of delays, then it grows as usual.
   */
  lost(): void;
}

export const DEFAULT_BACKOFF = { baseMs: 1000, capMs: 60_000, quickWindowMs: 10_000 } as const;

export function createBackoff(options: BackoffOptions = {}): Backoff {
  const base = options.baseMs ?? DEFAULT_BACKOFF.baseMs;
  const cap = Math.max(options.capMs ?? DEFAULT_BACKOFF.capMs, base);
  const random = options.random ?? Math.random;
  let ceiling = base;
  // What is left of the quick window after a lost connection, in ms of delays.
  let quickMs = 0;
  return {
    next() {
      const delay = Math.floor(random() * ceiling);
      quickMs -= delay;
      if (quickMs <= 0) ceiling = Math.min(ceiling * 2, cap);
      return delay;
    },
    toCap() {
      ceiling = cap;
      quickMs = 0;
    },
    reset() {
      ceiling = base;
      quickMs = 0;
    },
    lost() {
      ceiling = base;
      quickMs = options.quickWindowMs ?? DEFAULT_BACKOFF.quickWindowMs;
    },
  };
}

/**
 * Statuses that say the request itself is refused (bad input, unknown or revoked identity,
 * no such method): the same request will be refused again. Everything else (UNAVAILABLE,
 * DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN, network and TLS errors, ...)
 * may heal and is retried.
 */
const PERMANENT = new Set<number>([
  status.INVALID_ARGUMENT,
  status.NOT_FOUND,
  status.ALREADY_EXISTS,
  status.PERMISSION_DENIED,
  status.FAILED_PRECONDITION,
  status.OUT_OF_RANGE,
  status.UNIMPLEMENTED,
  status.UNAUTHENTICATED,
]);

/** True when retrying the same call cannot succeed; `err` is what grpc-js gave. */
export function isPermanent(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'number' && PERMANENT.has(code);
}

/** For one log line: the status name (or error code) and the server's message, no stack. */
export function describeError(err: unknown): { code: string; details: string } {
  const e = err as { code?: unknown; details?: unknown; message?: unknown } | undefined;
  const code =
    typeof e?.code === 'number'
      ? (status[e.code] ?? String(e.code))
      : typeof e?.code === 'string'
        ? e.code
        : 'UNKNOWN';
  const details =
    (typeof e?.details === 'string' && e.details) ||
    (typeof e?.message === 'string' && e.message) ||
    String(err);
  return { code, details };
}

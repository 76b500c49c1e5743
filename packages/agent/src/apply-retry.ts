// When to try again an update nftables refused: holds the one update still to be applied and
// re-runs it with backoff (full jitter) until it applies or a newer update replaces it. Owns
// only that timing; the apply itself, the ack and what the control plane is told are the
// caller's (sync.ts). Must not touch the dataplane or the stream.
import type { PolicyUpdate } from '@bulkhead/proto';
import { type BackoffOptions, createBackoff } from './retry.js';

export interface ApplyRetryOptions {
  /** Delays between attempts; default 1 s base, 60 s cap. */
  backoff?: BackoffOptions;
  /** One more attempt at `update`; resolves true when it applied. */
  attempt: (update: PolicyUpdate) => Promise<boolean>;
  /** Told before each wait (logging). */
  onScheduled?: (update: PolicyUpdate, retryInMs: number) => void;
}

export interface ApplyRetry {
  /** `update` could not be applied: try it again later (it replaces any update pending). */
  failed(update: PolicyUpdate): void;
  /** A newer update arrived (or the agent stops): the pending one is no longer wanted. */
  cancel(): void;
  /** True while `update` is the one waiting to be applied again. */
  wants(update: PolicyUpdate): boolean;
}

export function createApplyRetry(options: ApplyRetryOptions): ApplyRetry {
  const backoff = createBackoff(options.backoff);
  let pending: PolicyUpdate | undefined;
  let timer: NodeJS.Timeout | undefined;

  function schedule(update: PolicyUpdate): void {
    const retryInMs = backoff.next();
    options.onScheduled?.(update, retryInMs);
    timer = setTimeout(async () => {
      timer = undefined;
      if (pending !== update) return;
      const ok = await options.attempt(update).catch(() => false);
      if (pending !== update) return;
      if (ok) pending = undefined;
      else schedule(update);
    }, retryInMs);
  }

  return {
    failed(update) {
      if (pending === update) return;
      clearTimeout(timer);
      pending = update;
      backoff.reset();
      schedule(update);
    },
    cancel() {
      clearTimeout(timer);
      timer = undefined;
      pending = undefined;
    },
    wants: (update) => pending === update,
  };
}

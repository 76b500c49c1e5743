// Keeps the kernel honest while the agent runs: a periodic full compare (the backstop) and,
// when nft is available, `nft monitor` for immediate notice of foreign changes. Owns the
// timer and the monitor process; the compare and the repair are the dataplane's.
import { createNftMonitor, type NftMonitor } from '@bulkhead/nftables';
import type { Logger } from 'pino';
import type { Dataplane } from './dataplane.js';

export const DEFAULT_DRIFT_CHECK_INTERVAL_MS = 5000;
/** Period of the compare that lists every element too (seconds of CPU at 100k elements). */
export const DEFAULT_ELEMENT_CHECK_INTERVAL_MS = 600_000;

export interface DriftWatchOptions {
  dataplane: Dataplane;
  logger: Logger;
  /** Structure compare period (ms); default 5000. */
  intervalMs?: number;
  /** Element compare period (ms), rounded to a multiple of intervalMs; default 10 min. */
  elementIntervalMs?: number;
  /** Run `nft -j monitor ruleset` (default true); the nft binary to use. */
  monitor?: boolean;
  nftPath?: string;
}

export interface DriftWatch {
  stop(): void;
}

export function watchDrift(options: DriftWatchOptions): DriftWatch {
  const { dataplane, logger } = options;
  let stopped = false;
  let running: Promise<unknown> | undefined;
  let again = false;

  const intervalMs = options.intervalMs ?? DEFAULT_DRIFT_CHECK_INTERVAL_MS;
  const elementEvery = Math.max(
    1,
    Math.round((options.elementIntervalMs ?? DEFAULT_ELEMENT_CHECK_INTERVAL_MS) / intervalMs),
  );
  let ticks = 0;

  // One check at a time; a trigger during a check runs one more (with elements) right after.
  function check(elements = true): void {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = dataplane
      .reconcile({ elements })
      .catch((err: unknown) => logger.error({ err }, 'drift check failed'))
      .finally(() => {
        running = undefined;
        if (again) {
          again = false;
          check();
        }
      });
  }

  // Every tick compares the structure; every elementEvery-th tick the elements too. A foreign
  // change seen by the monitor is always checked in full.
  const timer = setInterval(() => check(++ticks % elementEvery === 0), intervalMs);
  timer.unref();

  let monitor: NftMonitor | undefined;
  let restart: NodeJS.Timeout | undefined;
  function startMonitor(): void {
    monitor = createNftMonitor({
      nftPath: options.nftPath,
      onEvent: (event) => {
        if (!dataplane.isForeign(event)) return;
        logger.info({ verb: event.verb, kind: event.kind }, 'foreign change to the table');
        check();
      },
      onExit: (err) => {
        // nft 1.0.6's monitor dies printing some concatenated interval elements ("Memory
        // allocation failure"): unless it was printing our own write, check everything.
        const own = dataplane.inOwnWrite;
        logger.warn({ err, own }, 'nft monitor stopped; restarting it');
        if (!own) check();
        if (!stopped) {
          restart = setTimeout(startMonitor, 1000);
          restart.unref();
        }
      },
    });
  }
  if (options.monitor ?? true) startMonitor();

  return {
    stop() {
      stopped = true;
      clearInterval(timer);
      clearTimeout(restart);
      monitor?.close();
    },
  };
}

// Small helpers shared by the benches: median, percentiles, rounding and polling. No I/O.

export interface Spread {
  p50: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentiles of `values`, rounded to `digits` decimals. */
export function spread(values: number[], digits = 3): Spread {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  const r = (x: number | undefined) => round(x ?? Number.NaN, digits);
  return { p50: r(at(0.5)), p99: r(at(0.99)), max: r(sorted.at(-1)) };
}

/** The upper median of `values`, rounded to `digits` decimals. */
export function median(values: number[], digits = 2): number {
  const sorted = [...values].sort((a, b) => a - b);
  return round(sorted[sorted.length >> 1]!, digits);
}

export function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Polls `done` every `intervalMs` until it holds; throws naming `what` after `timeoutMs`. */
export async function waitUntil(
  what: () => string,
  done: () => boolean,
  { timeoutMs = 120_000, intervalMs = 10 } = {},
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > deadline) throw new Error(`fleet bench: timed out: ${what()}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

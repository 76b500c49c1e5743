import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { createBackoff, DEFAULT_BACKOFF, describeError, isPermanent } from './retry.js';

/** A random source that replays the given values. */
const replay = (...values: number[]) => {
  let i = 0;
  return () => values[i++ % values.length]!;
};

describe('createBackoff', () => {
  it('doubles the ceiling per attempt up to the cap; the delay is a random share of it', () => {
    const b = createBackoff({ baseMs: 100, capMs: 1000, random: replay(0.999999) });
    expect(Array.from({ length: 7 }, () => b.next())).toEqual([99, 199, 399, 799, 999, 999, 999]);
  });

  it('jitters over the whole range below the ceiling (full jitter)', () => {
    const b = createBackoff({ baseMs: 1000, capMs: 60_000, random: replay(0, 0.5, 0.25, 0.75) });
    expect([b.next(), b.next(), b.next(), b.next()]).toEqual([0, 1000, 1000, 6000]);
  });

  it('spreads a fleet: agents failing at the same moment do not retry in lockstep', () => {
    const delays = Array.from({ length: 200 }, () => createBackoff().next());
    expect(new Set(delays).size).toBeGreaterThan(150);
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...delays)).toBeLessThan(DEFAULT_BACKOFF.baseMs);
  });

  it('reset goes back to the base; toCap jumps to the cap', () => {
    const b = createBackoff({ baseMs: 10, capMs: 80, random: replay(0.5) });
    expect([b.next(), b.next(), b.next()]).toEqual([5, 10, 20]);
    b.reset();
    expect(b.next()).toBe(5);
    b.toCap();
    expect([b.next(), b.next()]).toEqual([40, 40]);
  });

  it('after a lost connection stays at the base for quickWindowMs of delays, then grows', () => {
    const b = createBackoff({ baseMs: 10, capMs: 80, quickWindowMs: 15, random: replay(0.5) });
    expect([b.next(), b.next()]).toEqual([5, 10]);
    b.lost();
    expect(Array.from({ length: 6 }, () => b.next())).toEqual([5, 5, 5, 10, 20, 40]);
    b.lost();
    b.toCap();
    expect(b.next()).toBe(40);
  });

  it('a fleet that lost its control plane, on a simulated clock: spread out, then backing off', () => {
    // mulberry32: the same "random" fleet on every run.
    let seed = 9;
    const random = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
    };
    /** Attempt times (ms after the stream dropped) of one agent while the control plane stays down. */
    const attempts = (downMs: number) => {
      const b = createBackoff({ random });
      b.lost();
      const at: number[] = [];
      for (let t = b.next(); t < downMs; t += b.next()) at.push(t);
      return at;
    };
    const fleet = Array.from({ length: 1000 }, () => attempts(600_000));
    // Jitter: first attempts spread over the base ceiling, no 100 ms slot holds over 15% of them.
    const slots = new Array(10).fill(0);
    for (const [first] of fleet) slots[Math.floor(first! / 100)]++;
    expect(Math.max(...slots)).toBeLessThan(150);
    // Growth: after the quick window the gaps double up to the cap, so ten minutes down
    // costs each agent about 20 (10 s at a 0.5 s mean) + log2(60) + 600 s / 30 s attempts,
    // not one a second.
    const counts = fleet.map((a) => a.length);
    expect(Math.max(...counts)).toBeLessThan(70);
    const early = fleet.flat().filter((t) => t < 60_000).length;
    const late = fleet.flat().filter((t) => t >= 540_000).length;
    expect(late).toBeLessThan(early / 3);
    // A restart at fleet scale (down 6 s): the quick window brings nearly the whole fleet back
    // within 1 s of the return; 4 quick attempts (a 2 s window, the old policy) brought a
    // minority, and growing from the first attempt fewer still.
    const backWithin1s = (quickWindowMs: number | undefined) =>
      fleet.filter(() => {
        const b = createBackoff({ random, quickWindowMs });
        if (quickWindowMs !== 0) b.lost();
        let t = b.next();
        while (t < 6000) t += b.next();
        return t - 6000 < 1000;
      }).length;
    const [quick, old, none] = [backWithin1s(undefined), backWithin1s(2000), backWithin1s(0)];
    expect(quick).toBeGreaterThan(950);
    expect(old).toBeLessThan(500);
    expect(none).toBeLessThan(old);
  });

  it('defaults to 1 s base and 60 s cap', () => {
    const b = createBackoff({ random: replay(0.999999) });
    const delays = Array.from({ length: 9 }, () => b.next());
    expect(delays[0]).toBe(999);
    expect(delays.at(-1)).toBe(59_999);
  });
});

describe('isPermanent', () => {
  it.each([
    status.INVALID_ARGUMENT,
    status.UNAUTHENTICATED,
    status.PERMISSION_DENIED,
    status.FAILED_PRECONDITION,
    status.UNIMPLEMENTED,
  ])('status %i cannot heal', (code) => {
    expect(isPermanent({ code, details: 'x' })).toBe(true);
  });

  it.each([
    status.UNAVAILABLE,
    status.DEADLINE_EXCEEDED,
    status.RESOURCE_EXHAUSTED,
    status.INTERNAL,
    status.UNKNOWN,
    status.CANCELLED,
  ])('status %i may heal', (code) => {
    expect(isPermanent({ code, details: 'x' })).toBe(false);
  });

  it('network errors and non-errors may heal', () => {
    expect(isPermanent(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }))).toBe(false);
    expect(isPermanent(undefined)).toBe(false);
  });
});

describe('describeError', () => {
  it('names the status and keeps the server message', () => {
    expect(describeError({ code: status.INVALID_ARGUMENT, details: 'labels.x: bad' })).toEqual({
      code: 'INVALID_ARGUMENT',
      details: 'labels.x: bad',
    });
    expect(describeError(Object.assign(new Error('boom'), { code: 'EACCES' }))).toEqual({
      code: 'EACCES',
      details: 'boom',
    });
  });
});

import { describe, expect, it } from 'vitest';
import { FlowAggregator, PORT_SAMPLE, TokenBucket } from './limiter.js';
import type { FlowEvent } from './types.js';

const base: FlowEvent = {
  kind: 'flow',
  at: new Date(1_000),
  verdict: 'denied',
  workload: 'web-1',
  direction: 'ingress',
  src: '10.0.0.1',
  dst: '10.0.0.2',
  protocol: 'tcp',
  port: 80,
  ruleId: 'default-deny',
  connections: 1,
};

describe('FlowAggregator', () => {
  it('merges a port scan into one event with totals, a port sample and the distinct count', () => {
    const agg = new FlowAggregator(100);
    // Descending order so "lowest ports" differs from "first seen".
    for (let p = 1000; p >= 1; p--) agg.add({ ...base, port: p, at: new Date(p), connections: 2 });
    agg.add({ ...base, port: 7, connections: 1 });
    const [out, ...rest] = agg.drain();
    expect(rest).toEqual([]);
    expect(out).toMatchObject({ events: 1001, connections: 2001, portCount: 1000 });
    expect(out!.ports).toEqual(Array.from({ length: PORT_SAMPLE }, (_, i) => i + 1));
    expect(out!.firstAt).toEqual(new Date(1000));
    expect(out!.at).toEqual(new Date(1000));
    expect(agg.size).toBe(0);
  });

  it('keeps verdict, source, destination and workload apart', () => {
    const agg = new FlowAggregator(100);
    agg.add(base);
    expect(agg.add({ ...base, port: 81 })).toBe(true);
    expect(agg.add({ ...base, verdict: 'would-deny' })).toBe(false);
    expect(agg.add({ ...base, src: '10.0.0.3' })).toBe(false);
    expect(agg.add({ ...base, dst: '10.0.0.4' })).toBe(false);
    expect(agg.add({ ...base, workload: 'web-2' })).toBe(false);
    expect(agg.drain()).toHaveLength(5);
  });

  it('counts distinct ports exactly past the small-set threshold', () => {
    const agg = new FlowAggregator(10);
    for (let i = 0; i < 3; i++) for (let p = 0; p < 65536; p += 7) agg.add({ ...base, port: p });
    expect(agg.drain()[0]!.portCount).toBe(Math.ceil(65536 / 7));
  });

  it('says when the key table is full', () => {
    const agg = new FlowAggregator(2);
    agg.add(base);
    expect(agg.full()).toBe(false);
    agg.add({ ...base, src: '10.9.9.9' });
    expect(agg.full()).toBe(true);
  });
});

describe('TokenBucket', () => {
  it('allows the burst, then the rate', () => {
    let now = 0;
    const bucket = new TokenBucket(10, 5, () => now);
    const takes = () => Array.from({ length: 20 }, () => bucket.take()).filter(Boolean).length;
    expect(takes()).toBe(5);
    now += 500;
    expect(takes()).toBe(5);
    now += 100;
    expect(takes()).toBe(1);
    now += 60_000;
    expect(takes()).toBe(5);
  });
});

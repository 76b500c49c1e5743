import { describe, expect, it } from 'vitest';
import type { FlowRow } from '../visibility/flow-store.js';
import type { FlowDelta } from '../visibility/store.js';
import { brokenFlows, MAX_CHECKED_PER_BATCH } from './rollout-guard.js';

const flow = (src: string, verdict: FlowDelta['verdict'], firstSeen: string): FlowDelta => ({
  direction: 'ingress',
  src,
  dst: '10.0.0.4',
  protocol: 6,
  port: 6379,
  verdict,
  ruleId: 'default',
  connections: 1,
  bytes: 60,
  firstSeen,
  lastSeen: firstSeen,
});
const CUTOFF = '2026-11-30T10:00:00.000Z';
const BEFORE = '2026-11-30T09:00:00.000Z';

/** A flow store holding `rows` of workload cache, counting the queries. */
function store(rows: FlowDelta[]) {
  const s = {
    queries: 0,
    queryFlows: (): FlowRow[] => {
      s.queries++;
      return rows.map((r) => ({ ...r, workload: 'cache' }));
    },
  };
  return s;
}

describe('rollout guard', () => {
  it('reports a denied flow only when the same workload saw it pass before the cutoff', () => {
    const s = store([
      flow('10.0.0.1', 'allowed', BEFORE),
      flow('10.0.0.2', 'would-deny', BEFORE),
      flow('10.0.0.3', 'allowed', CUTOFF),
      flow('10.0.0.5', 'denied', BEFORE),
    ]);
    const denied = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.5', '10.0.0.1'].map((a) =>
      flow(a, 'denied', CUTOFF),
    );
    const broken = brokenFlows(
      s,
      'cache',
      [...denied, flow('10.0.0.1', 'allowed', CUTOFF)],
      CUTOFF,
    );
    expect(broken.map((f) => f.src)).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(broken[0]).toEqual({
      workload: 'cache',
      direction: 'ingress',
      src: '10.0.0.1',
      dst: '10.0.0.4',
      protocol: 6,
      port: 6379,
      ruleId: 'default',
    });
    // One lookup per distinct denied flow.
    expect(s.queries).toBe(4);
  });

  it('looks up a bounded number of distinct denied flows per batch', () => {
    const s = store([flow('10.0.0.1', 'allowed', BEFORE)]);
    const scan = Array.from({ length: 300 }, (_, i) =>
      flow(`10.9.${i >> 8}.${i & 255}`, 'denied', CUTOFF),
    );
    expect(
      brokenFlows(s, 'cache', [flow('10.0.0.1', 'denied', CUTOFF), ...scan], CUTOFF),
    ).toHaveLength(1);
    expect(s.queries).toBe(MAX_CHECKED_PER_BATCH);
  });
});

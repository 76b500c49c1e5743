import { describe, expect, it } from 'vitest';
import { silentLog } from '../test-support.js';
import { ANOMALY, type AnomalyOptions, createAnomalyDetector, dependencyKey } from './anomalies.js';
import type { FlowDelta } from './store.js';

const T0 = Date.parse('2026-11-30T10:00:00Z');

function flow(f: Partial<FlowDelta> = {}): FlowDelta {
  const at = new Date(T0).toISOString();
  return {
    direction: 'ingress',
    src: '10.0.0.1',
    dst: '10.0.0.2',
    protocol: 6,
    port: 5432,
    verdict: 'allowed',
    ruleId: 'db/ingress/0',
    connections: 1,
    bytes: 60,
    firstSeen: at,
    lastSeen: at,
    ...f,
  };
}

function setup(
  o: AnomalyOptions & { stored?: Record<string, FlowDelta[]>; revisionAt?: number } = {},
) {
  let nowMs = T0;
  const recorded: { workload: string; code: string; attributes: Record<string, string> }[] = [];
  const emitted: string[] = [];
  const queried: string[] = [];
  const detector = createAnomalyDetector(
    {
      known: (w) => {
        queried.push(w);
        return o.stored?.[w] ?? [];
      },
      revisions: {
        latestRevisionRecord: () =>
          o.revisionAt === undefined
            ? undefined
            : {
                revision: 7,
                author: 'a',
                note: 'n',
                createdAt: new Date(o.revisionAt).toISOString(),
              },
      },
      record: (workload, e) => recorded.push({ workload, code: e.code, attributes: e.attributes }),
      emit: (e) => emitted.push(e.kind === 'agent-event' ? e.code : e.kind),
      now: () => new Date(nowMs),
      log: silentLog,
    },
    o,
  );
  const codes = (code: string) => recorded.filter((r) => r.code === code);
  return { detector, recorded, emitted, queried, codes, advance: (ms: number) => (nowMs += ms) };
}

describe('anomaly detection', () => {
  it('reports a (peer, service) a workload never saw, once, and what the store knew is not new', () => {
    const earlier = new Date(T0 - 86_400_000).toISOString();
    const t = setup({ stored: { db: [flow({ firstSeen: earlier }), flow({ port: 9100 })] } });
    // 9100's stored row came from this very batch (first seen now): it is new.
    t.detector.observe('db', [flow(), flow({ port: 9100 }), flow({ src: '10.0.0.9' })]);
    expect(t.codes(ANOMALY.newDependency).map((r) => r.attributes)).toEqual([
      expect.objectContaining({ peer: '10.0.0.1', port: '9100', direction: 'ingress' }),
      expect.objectContaining({ peer: '10.0.0.9', port: '5432' }),
    ]);
    expect(t.emitted).toEqual([ANOMALY.newDependency, ANOMALY.newDependency]);
    t.detector.observe('db', [
      flow({ src: '10.0.0.9' }),
      flow({ direction: 'egress', dst: '10.0.0.9' }),
    ]);
    expect(t.codes(ANOMALY.newDependency)).toHaveLength(3);
    // The store is asked once per workload, not per batch.
    expect(t.queried).toEqual(['db']);
  });

  it('keeps memory bounded by forgetting the least recently reporting workloads', () => {
    const t = setup({ maxKnown: 10, perKey: 1000, total: 1000 });
    for (const w of ['a', 'b', 'c']) {
      t.detector.observe(
        w,
        Array.from({ length: 6 }, (_, i) => flow({ port: 1000 + i })),
      );
    }
    expect(t.detector.size()).toBeLessThanOrEqual(10);
    expect(t.queried).toEqual(['a', 'b', 'c']);
    // 'a' was forgotten: it learns from the store again (which here knows nothing).
    t.detector.observe('a', [flow({ port: 1000 })]);
    expect(t.queried).toEqual(['a', 'b', 'c', 'a']);
  });

  it('keys a dependency by direction, peer, protocol and port alone, without collisions', () => {
    const base = flow();
    // The workload's own end, the verdict, the rule and the counts are not part of it.
    expect(
      dependencyKey(flow({ dst: '10.9.9.9', verdict: 'denied', ruleId: 'x', connections: 9 })),
    ).toBe(dependencyKey(base));
    expect(dependencyKey(flow({ direction: 'egress', src: '10.0.0.2', dst: '10.0.0.1' }))).not.toBe(
      dependencyKey(base),
    );
    const keys = new Set<number>();
    let n = 0;
    let unsafe = 0;
    for (const direction of ['ingress', 'egress'] as const) {
      for (let i = 0; i < 20_000; i++) {
        const peer = i % 2 ? `10.${(i >> 8) & 255}.${i & 255}.1` : `fd00::${i.toString(16)}`;
        for (const [protocol, port] of [
          [6, 443],
          [6, 444],
          [17, 443],
        ] as const) {
          const k = dependencyKey({
            direction,
            src: peer,
            dst: peer,
            protocol,
            port,
            firstSeen: '',
          });
          if (!Number.isSafeInteger(k) || k < 0) unsafe++;
          keys.add(k);
          n++;
        }
      }
    }
    expect(unsafe).toBe(0);
    expect(keys.size).toBe(n);
  });

  it('reports a burst of denies above the baseline, once per minute', () => {
    const t = setup({ burstMin: 20, burstFactor: 5 });
    const denied = (connections: number) => [flow({ verdict: 'denied', connections })];
    // A steady 10 a minute: the baseline, no burst.
    for (let m = 0; m < 10; m++) {
      t.detector.observe('db', denied(10));
      t.advance(60_000);
    }
    expect(t.codes(ANOMALY.denyBurst)).toEqual([]);
    t.detector.observe('db', denied(30));
    expect(t.codes(ANOMALY.denyBurst)).toEqual([]); // 30 is not above 5 x baseline (~10)
    t.detector.observe('db', denied(40));
    t.detector.observe('db', denied(40));
    expect(t.codes(ANOMALY.denyBurst)).toHaveLength(1);
    expect(Number(t.codes(ANOMALY.denyBurst)[0]!.attributes.count)).toBe(70);
  });

  it('reports denies soon after a revision once per workload, not long after', () => {
    const t = setup({ revisionAt: T0 - 60_000 });
    t.detector.observe('db', [flow({ verdict: 'would-deny' })]);
    expect(t.codes(ANOMALY.deniesAfterRevision)).toEqual([]);
    t.detector.observe('db', [flow({ verdict: 'denied', connections: 3, ruleId: '' })]);
    t.detector.observe('db', [flow({ verdict: 'denied' })]);
    expect(t.codes(ANOMALY.deniesAfterRevision).map((r) => r.attributes)).toEqual([
      {
        revision: '7',
        connections: '3',
        flows: '10.0.0.1 -> 10.0.0.2 6/5432 (no rule)',
      },
    ]);
    const late = setup({ revisionAt: T0 - 3_600_000 });
    late.detector.observe('db', [flow({ verdict: 'denied' })]);
    expect(late.codes(ANOMALY.deniesAfterRevision)).toEqual([]);
  });

  it('rate limits per workload and kind, and overall, within a window', () => {
    const t = setup({ perKey: 2, total: 3, windowMs: 600_000 });
    t.detector.observe(
      'a',
      [1, 2, 3].map((port) => flow({ port })),
    );
    t.detector.observe(
      'b',
      [1, 2, 3].map((port) => flow({ port })),
    );
    expect(t.recorded.map((r) => r.workload)).toEqual(['a', 'a', 'b']);
    t.advance(600_000);
    t.detector.observe('b', [flow({ port: 4 })]);
    expect(t.recorded.map((r) => r.workload)).toEqual(['a', 'a', 'b', 'b']);
  });
});

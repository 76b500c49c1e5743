import { Direction, type FlowRecord, Verdict } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import {
  checkTelemetry,
  createRejectionReporter,
  type Rejections,
  TELEMETRY_LIMITS,
  type TelemetryContext,
} from './telemetry.js';

const NOW = Date.UTC(2026, 10, 30, 12);
const ctx: TelemetryContext = {
  addresses: new Set(['10.0.0.2', '2001:db8::2']),
  ruleIds: new Set(['p/ingress/0']),
  nowMs: NOW,
  oldestMs: NOW - 35 * 86_400_000,
};
const flow = (f: Partial<FlowRecord> = {}): FlowRecord => ({
  direction: Direction.DIRECTION_INGRESS,
  src: '10.1.0.5',
  dst: '10.0.0.2',
  protocol: 6,
  port: 80,
  verdict: Verdict.VERDICT_ALLOWED,
  ruleId: 'p/ingress/0',
  packets: 1,
  bytes: 60,
  firstSeenUnixMs: NOW - 1000,
  lastSeenUnixMs: NOW,
  ...f,
});
const check = (flows: FlowRecord[]) =>
  checkTelemetry(
    { seq: 1, timeUnixMs: NOW, appliedHash: '', counters: [], flows, events: [] },
    ctx,
  );

describe('checkTelemetry', () => {
  it('keeps its own flows, canonical, and refuses the others by reason', () => {
    const { batch, rejected } = check([
      flow({ dst: '2001:DB8:0:0::2' }),
      flow({ direction: Direction.DIRECTION_EGRESS, src: '10.0.0.2', dst: '8.8.8.8' }),
      flow({ direction: Direction.DIRECTION_EGRESS }),
      flow({ protocol: 256 }),
      flow({ port: 70_000 }),
      flow({ lastSeenUnixMs: NOW + TELEMETRY_LIMITS.futureMs + 1 }),
      flow({ lastSeenUnixMs: ctx.oldestMs - 1 }),
    ]);
    expect(batch.flows.map((f) => [f.src, f.dst])).toEqual([
      ['10.1.0.5', '2001:db8::2'],
      ['10.0.0.2', '8.8.8.8'],
    ]);
    expect(Object.fromEntries(rejected)).toEqual({
      'foreign-address': 1,
      'bad-field': 2,
      'bad-time': 2,
    });
  });

  it('clamps a first sighting before the window, keeps the batch time for a zero time', () => {
    const { batch } = check([
      flow({ firstSeenUnixMs: 1 }),
      flow({ port: 81, firstSeenUnixMs: 0, lastSeenUnixMs: 0 }),
    ]);
    expect(batch.flows[0]!.firstSeen).toBe(new Date(ctx.oldestMs).toISOString());
    expect(batch.flows[1]!.lastSeen).toBe(new Date(NOW).toISOString());
  });

  it('keeps the first flows of an oversized batch and counts the rest', () => {
    const { batch, rejected } = check(
      Array.from({ length: TELEMETRY_LIMITS.flows + 3 }, () => flow()),
    );
    expect(batch.flows).toHaveLength(TELEMETRY_LIMITS.flows);
    expect(rejected.get('too-many')).toBe(3);
  });
});

describe('createRejectionReporter', () => {
  it('reports at most once a minute per agent, with every count since the last report', () => {
    let clock = NOW;
    const r = createRejectionReporter(() => new Date(clock));
    const bad: Rejections = new Map([['foreign-address', 2]]);
    const send = (agent: string, rejected: Rejections) => {
      const e = r.due(agent, rejected);
      r.counted(agent, rejected, e !== undefined);
      return e?.attributes;
    };
    expect(send('a', bad)).toEqual({ agentId: 'a', 'foreign-address': '2' });
    expect(send('a', bad)).toBeUndefined();
    expect(send('b', bad)).toEqual({ agentId: 'b', 'foreign-address': '2' });
    clock += 59_999;
    expect(send('a', new Map([['bad-time', 1]]))).toBeUndefined();
    clock += 1;
    // A clean batch after the minute still delivers what was pending.
    expect(send('a', new Map())).toEqual({ agentId: 'a', 'foreign-address': '2', 'bad-time': '1' });
    clock += 60_000;
    expect(send('a', new Map())).toBeUndefined();
  });
});

import { Direction, type FlowRecord, Verdict } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import { createFlowBuffer, FLOW_TABLE_FULL, FLOWS_DROPPED } from './flow-buffer.js';

function flow(
  src: string,
  packets: number,
  at: number,
  extra: Partial<FlowRecord> = {},
): FlowRecord {
  return {
    direction: Direction.DIRECTION_INGRESS,
    src,
    dst: '10.0.9.1',
    protocol: 6,
    port: 443,
    verdict: Verdict.VERDICT_WOULD_DENY,
    ruleId: 'default',
    packets,
    bytes: packets * 60,
    firstSeenUnixMs: at,
    lastSeenUnixMs: at,
    ...extra,
  };
}

describe('FlowBuffer', () => {
  it('sums flows of the same key and keeps the first and last time', () => {
    const b = createFlowBuffer();
    b.add([flow('10.0.0.1', 2, 200), flow('10.0.0.2', 1, 150)]);
    b.add([
      flow('10.0.0.1', 3, 100),
      flow('10.0.0.1', 1, 300, { verdict: Verdict.VERDICT_DENIED }),
    ]);
    expect(b.size).toBe(3);
    const { flows, events } = b.take(400);
    expect(events).toEqual([]);
    expect(flows).toEqual([
      { ...flow('10.0.0.1', 5, 100), lastSeenUnixMs: 200 },
      flow('10.0.0.2', 1, 150),
      flow('10.0.0.1', 1, 300, { verdict: Verdict.VERDICT_DENIED }),
    ]);
    expect(b.take(500)).toEqual({ flows: [], events: [] });
  });

  it('past the cap drops new keys, counts them, reports FLOWS_DROPPED once', () => {
    const dropped: number[] = [];
    const b = createFlowBuffer({ maxPending: 2, onDropped: (n) => dropped.push(n) });
    expect(b.add([flow('10.0.0.1', 1, 1), flow('10.0.0.2', 1, 1), flow('10.0.0.3', 1, 1)])).toBe(1);
    // Known keys still merge at the cap; only new ones are lost.
    expect(b.add([flow('10.0.0.1', 4, 2), flow('10.0.0.4', 1, 2)])).toBe(1);
    expect(dropped).toEqual([1, 1]);
    const { flows, events } = b.take(9);
    expect(flows.map((f) => [f.src, f.packets])).toEqual([
      ['10.0.0.1', 5],
      ['10.0.0.2', 1],
    ]);
    expect(events).toEqual([
      expect.objectContaining({
        code: FLOWS_DROPPED,
        timeUnixMs: 9,
        attributes: { count: '2', max_pending: '2' },
      }),
    ]);
    expect(b.take(10).events).toEqual([]);
  });

  it('keeps one event per code and set until taken', () => {
    const b = createFlowBuffer();
    const full = (set: string, t: number) => ({
      code: FLOW_TABLE_FULL,
      message: 'full',
      timeUnixMs: t,
      attributes: { set },
    });
    b.event(full('flows_in4', 1));
    b.event(full('flows_in4', 2));
    b.event(full('flows_out6', 3));
    expect(b.take(4).events.map((e) => [e.attributes.set, e.timeUnixMs])).toEqual([
      ['flows_in4', 1],
      ['flows_out6', 3],
    ]);
  });

  it('takes back an unsent batch under the same cap, folding the drop count', () => {
    const b = createFlowBuffer({ maxPending: 2 });
    b.add([flow('10.0.0.1', 1, 1), flow('10.0.0.2', 1, 1), flow('10.0.0.3', 1, 1)]);
    const unsent = b.take(5);
    b.add([flow('10.0.0.1', 1, 6), flow('10.0.0.9', 1, 6)]);
    b.putBack(unsent);
    const { flows, events } = b.take(7);
    // 10.0.0.2 found no room on the way back: dropped and counted with the earlier loss.
    expect(flows.map((f) => [f.src, f.packets])).toEqual([
      ['10.0.0.1', 2],
      ['10.0.0.9', 1],
    ]);
    expect(events.map((e) => [e.code, e.attributes.count])).toEqual([[FLOWS_DROPPED, '2']]);
  });
});

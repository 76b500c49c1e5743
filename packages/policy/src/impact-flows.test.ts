import { describe, expect, it } from 'vitest';
import { createFlowFold } from './impact-flows.js';

const row = { src: '10.0.0.1', dst: '10.0.0.2', protocol: 6, port: 5432 };

describe('flow fold', () => {
  it("adds copies to their end, sets an end's total, and keeps the latest time", () => {
    const fold = createFlowFold({ keepCopies: false });
    const end = { workload: 'db', direction: 'ingress' } as const;
    fold.add({ ...row, ...end, connections: 2, lastSeen: '2026-01-01T00:00:00.000Z' });
    fold.add({ ...row, ...end, connections: 3, lastSeen: '2026-01-02T00:00:00.000Z' });
    fold.add({ ...row, workload: 'web', direction: 'egress', connections: 4 });
    expect(fold.size).toBe(1);
    expect(fold.ends(0)).toEqual([
      { ...end, connections: 5 },
      { workload: 'web', direction: 'egress', connections: 4 },
    ]);
    expect(fold.lastSeen(0)).toBe('2026-01-02T00:00:00.000Z');
    expect(fold.copy(0)).toBeUndefined();
    fold.set({ ...row, ...end, connections: 9, lastSeen: '2026-01-01T12:00:00.000Z' });
    fold.set({ ...row, workload: 'web', direction: 'egress', connections: 6 });
    expect(fold.ends(0).map((e) => e.connections)).toEqual([9, 6]);
    expect(fold.lastSeen(0)).toBe('2026-01-02T00:00:00.000Z');
    // Copies naming no end are each an end of their own.
    fold.add({ ...row, connections: 1 });
    fold.add({ ...row, connections: 1 });
    expect(fold.ends(0).map((e) => e.connections)).toEqual([9, 6, 1, 1]);
    // ICMP: any port is the same flow.
    fold.add({ ...row, protocol: 1, port: 3 });
    fold.add({ ...row, protocol: 1, port: 4 });
    expect([0, 1].map((i) => [fold.protocol(i), fold.port(i)])).toEqual([
      [6, 5432],
      [1, 0],
    ]);
  });

  it('says when an address came spelled other than canonically', () => {
    const fold = createFlowFold({ skipUnparsable: true });
    fold.add({ ...row, src: '2001:db8::1' });
    fold.add({ ...row, src: 'not an address' });
    expect(fold.respelled).toBe(false);
    fold.add({ ...row, src: '2001:DB8::1' });
    expect(fold.respelled).toBe(true);
    expect(fold.size).toBe(1);
  });
});

import { describe, expect, it } from 'vitest';
import { createFlowFold, type FlowEnd, later, type ObservedFlow } from './impact-flows.js';
import { canonical, parse } from './visibility.js';

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

  it('folds as a map of distinct flows does, over random copies, across its table growing', () => {
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 48_271) % 2_147_483_647;
      return Math.floor((seed / 2 ** 31) * n);
    };
    const pick = <T>(xs: readonly T[]) => xs[random(xs.length)]!;
    const addresses = [
      ...Array.from({ length: 60 }, (_, i) => `10.0.${i >> 4}.${i}`),
      '2001:db8::1',
      '2001:DB8::1',
      '2001:db8:0::2',
    ];
    const times = [undefined, 1000, 2000, '1970-01-01T00:00:01.500Z', 'not a time'];
    type Row = ObservedFlow & { connections: number };
    const fold = createFlowFold<Row>({ keepCopies: true });
    // The oracle: one entry per (canonical src, canonical dst, protocol, port).
    const oracle = new Map<string, { copy: Row; ends: FlowEnd[]; lastSeen?: number | string }>();
    for (let n = 0; n < 20_000; n++) {
      const protocol = pick([1, 6, 17, 300]);
      const named = random(4) > 0;
      const row: Row = {
        src: pick(addresses),
        dst: pick(addresses),
        protocol,
        port: pick([0, 22, 80, 70_000]),
        connections: 1 + random(9),
        ...(named
          ? { workload: pick(['a', 'b', 'c']), direction: pick(['ingress', 'egress'] as const) }
          : {}),
      };
      const lastSeen = pick(times);
      if (lastSeen !== undefined) row.lastSeen = lastSeen;
      const sets = named && random(3) === 0;
      if (sets) fold.set(row as Parameters<typeof fold.set>[0]);
      else fold.add(row);
      const port = [6, 17, 132].includes(protocol) ? row.port : 0;
      const key = `${[row.src, row.dst].map((a) => canonical(parse(a))).join(' ')} ${protocol} ${port}`;
      const end = named ? { workload: row.workload, direction: row.direction } : {};
      const had = oracle.get(key);
      if (!had) {
        oracle.set(key, {
          copy: row,
          ends: [{ ...end, connections: row.connections }],
          lastSeen: row.lastSeen,
        });
        continue;
      }
      had.lastSeen = later(had.lastSeen, row.lastSeen);
      const same = named
        ? had.ends.find((e) => e.workload === row.workload && e.direction === row.direction)
        : undefined;
      if (same) same.connections = sets ? row.connections : same.connections + row.connections;
      else had.ends.push({ ...end, connections: row.connections });
    }
    expect(fold.size).toBe(oracle.size);
    const expected = [...oracle.values()];
    expect(fold.size).toBeGreaterThan(2000);
    for (let i = 0; i < fold.size; i++) {
      const { copy, ends, lastSeen } = expected[i]!;
      expect(fold.copy(i)).toBe(copy);
      expect(fold.endpoints[fold.src(i)]!.text).toBe(canonical(parse(copy.src)));
      expect(fold.endpoints[fold.dst(i)]!.text).toBe(canonical(parse(copy.dst)));
      expect(fold.ends(i)).toEqual(ends);
      expect(fold.lastSeen(i)).toBe(lastSeen);
    }
  });
});

import { describe, expect, it } from 'vitest';
import {
  createFlowFold,
  type FlowEnd,
  type FlowFold,
  later,
  type ObservedFlow,
} from './impact-flows.js';
import { prng } from './random.test-util.js';
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
    const rng = prng(7);
    const random = (n: number) => rng.int(0, n - 1);
    const { pick } = rng;
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

  it('takes removed ends out as a fresh fold of the copies left has them, times going back', () => {
    const rng = prng(11);
    const random = (n: number) => rng.int(0, n - 1);
    const { pick } = rng;
    type Row = ObservedFlow & { workload: string; direction: 'ingress' | 'egress' };
    const kept = createFlowFold<Row>({ keepCopies: false });
    let left: Row[] = [];
    const sameEnd = (a: Row, b: Row) =>
      a.workload === b.workload &&
      a.direction === b.direction &&
      a.src === b.src &&
      a.dst === b.dst &&
      a.protocol === b.protocol &&
      (a.protocol === 1 || a.port === b.port);
    // Per distinct flow: its ends sorted, its time; the flows gone left out.
    const view = (fold: FlowFold<Row>) => {
      const out = new Map<string, unknown>();
      for (let i = 0; i < fold.span; i++) {
        if (fold.gone(i)) continue;
        const key = [fold.src(i), fold.dst(i)].map((e) => fold.endpoints[e]!.text);
        const ends = fold.ends(i).map((e) => `${e.workload} ${e.direction} ${e.connections}`);
        out.set(`${key.join(' ')} ${fold.protocol(i)} ${fold.port(i)}`, [
          ends.sort(),
          fold.lastSeen(i),
        ]);
      }
      return out;
    };
    let removed = 0;
    for (let n = 0; n < 3000; n++) {
      const roll = random(10);
      if (roll < 6 || left.length === 0) {
        const row: Row = {
          src: `10.0.0.${random(6)}`,
          dst: `10.0.0.${random(6)}`,
          protocol: pick([1, 6]),
          port: pick([22, 80]),
          workload: pick(['a', 'b', 'c']),
          direction: pick(['ingress', 'egress'] as const),
          connections: 1 + random(9),
          lastSeen: random(100),
        };
        kept.add(row);
        left.push(row);
      } else if (roll < 9) {
        // A store removed some of an end's rows: out, and the ones left set back.
        const end = pick(left);
        const gone = left.filter((r) => sameEnd(r, end) && random(2) === 0);
        left = left.filter((r) => !gone.includes(r));
        kept.remove(end);
        const rest = left.filter((r) => sameEnd(r, end));
        const total = rest.reduce((sum, r) => sum + (r.connections ?? 1), 0);
        for (const r of rest) kept.set({ ...r, connections: total });
        removed += gone.length;
      } else {
        const workload = pick(['a', 'b', 'c']);
        removed += left.filter((r) => r.workload === workload).length;
        left = left.filter((r) => r.workload !== workload);
        kept.removeWorkload(workload);
      }
      const fresh = createFlowFold<Row>({ keepCopies: false });
      for (const r of left) fresh.add(r);
      expect(kept.size, `step ${n}`).toBe(fresh.size);
      expect(view(kept), `step ${n}`).toEqual(view(fresh));
    }
    expect(removed).toBeGreaterThan(500);
    expect(kept.span).toBeGreaterThan(kept.size);
  });
});

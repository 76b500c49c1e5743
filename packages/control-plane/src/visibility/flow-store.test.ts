import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatAddress, parseAddress } from '@bulkhead/policy';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AuditEntry } from '../access/store.js';
import { createSqliteStores, type StoreOptions, type Stores } from '../store/index.js';
import { canonicalOrUndefined, type FlowRow } from './flow-store.js';

const mode = { ingress: 'monitor', egress: 'monitor' } as const;
const DAY = 86_400_000;
const T0 = Date.parse('2026-03-01T00:00:00.000Z');
const at = (ms: number) => new Date(ms).toISOString();

type Delta = Omit<FlowRow, 'workload'>;
const flow = ({ at: ms, ...over }: Partial<Delta> & { at: number }): Delta => ({
  direction: 'ingress',
  src: '10.0.0.1',
  dst: '10.0.0.2',
  protocol: 6,
  port: 5432,
  verdict: 'allowed',
  ruleId: 'p/ingress/0',
  connections: 1,
  bytes: 100,
  firstSeen: at(ms),
  lastSeen: at(ms),
  ...over,
});

describe('flow store', () => {
  let dir: string;
  let store: Stores;
  let clock = T0;
  let seq = 0;
  const open = (o: Partial<StoreOptions> = {}) => {
    store = createSqliteStores({ path: join(dir, 'flows.db'), now: () => new Date(clock), ...o });
    if (!store.policy.getWorkload('db-1')) {
      store.policy.upsertWorkload({ name: 'db-1', addresses: ['10.0.0.2'], labels: {}, mode });
      store.fleet.createAgent({ id: 'a1', workload: 'db-1', hostname: 'db-1', certSerial: '01' });
    }
  };
  const ingest = (...flows: Delta[]) =>
    store.fleet.addTelemetry('a1', ++seq, { counters: [], flows });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'bh-flows-'));
    clock = T0;
    seq = 0;
    open();
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("lists a workload's dependencies, and only its own", () => {
    store.policy.upsertWorkload({ name: 'web-1', addresses: ['10.0.0.1'], labels: {}, mode });
    store.fleet.createAgent({ id: 'a2', workload: 'web-1', hostname: 'web-1', certSerial: '02' });
    ingest(flow({ at: T0 }), flow({ at: T0 + 60_000, port: 9100, verdict: 'denied' }));
    store.fleet.addTelemetry('a2', 1, {
      counters: [],
      flows: [flow({ at: T0, direction: 'egress', port: 5432 })],
    });
    const deps = store.visibility.flowDependencies('db-1');
    expect(deps.sort((a, b) => a.port - b.port)).toEqual([
      {
        direction: 'ingress',
        src: '10.0.0.1',
        dst: '10.0.0.2',
        protocol: 6,
        port: 5432,
        firstSeen: at(T0),
      },
      {
        direction: 'ingress',
        src: '10.0.0.1',
        dst: '10.0.0.2',
        protocol: 6,
        port: 9100,
        firstSeen: at(T0 + 60_000),
      },
    ]);
    expect(store.visibility.flowDependencies('web-1').map((d) => d.direction)).toEqual(['egress']);
    expect(store.visibility.flowDependencies('none')).toEqual([]);
  });

  it('keeps one row per dependency with lifetime totals, and hourly buckets for windows', () => {
    ingest(flow({ at: T0 + 10 * 60_000, connections: 2, bytes: 200 }));
    ingest(flow({ at: T0 + 70 * 60_000, connections: 3, bytes: 300 }));
    ingest(flow({ at: T0 + 5 * 3_600_000, connections: 4, bytes: 400 }));
    // Another verdict of the same peer is another dependency row.
    ingest(flow({ at: T0 + 20 * 60_000, verdict: 'would-deny', ruleId: 'default' }));

    const all = store.visibility.queryFlows();
    expect(all).toHaveLength(2);
    expect(all[0]).toMatchObject({
      verdict: 'allowed',
      connections: 9,
      bytes: 900,
      firstSeen: at(T0 + 10 * 60_000),
      lastSeen: at(T0 + 5 * 3_600_000),
    });
    // 00:30..01:30 touches the buckets of hour 0 and hour 1: 2 + 3 (and the would-deny of hour 0).
    const window = store.visibility.queryFlows({
      since: at(T0 + 30 * 60_000),
      until: at(T0 + 90 * 60_000),
    });
    expect(window.map((f) => [f.verdict, f.connections, f.bytes])).toEqual([
      ['allowed', 5, 500],
      ['would-deny', 1, 100],
    ]);
    expect(store.visibility.queryFlows({ since: at(T0 + 2 * 3_600_000) })).toMatchObject([
      { verdict: 'allowed', connections: 4 },
    ]);
    expect(store.visibility.queryFlows({ until: at(T0 - 1) })).toEqual([]);
    // newSince is about the first sighting, not the latest.
    expect(store.visibility.queryFlows({ newSince: at(T0 + 15 * 60_000) })).toMatchObject([
      { verdict: 'would-deny' },
    ]);
  });

  it('stores random batches (new rows, existing rows, repeats, late reports) as a model sums them', () => {
    // A seeded generator: a failure replays the same batches.
    let x = 12345;
    const rand = (n: number) => {
      x = (Math.imul(x, 1103515245) + 12345) & 0x7fffffff;
      return x % n;
    };
    const model = new Map<string, { c: number; b: number; first: string; last: string }>();
    const hours = new Map<string, number>();
    for (let batch = 0; batch < 40; batch++) {
      const flows = Array.from({ length: 1 + rand(60) }, () => {
        const first = T0 + rand(6) * 3_600_000 + rand(3_600_000);
        const d = flow({
          at: first + rand(2) * rand(7_200_000),
          src: `10.0.${rand(3)}.${1 + rand(4)}`,
          port: 5000 + rand(3),
          verdict: rand(4) === 0 ? 'denied' : 'allowed',
          connections: 1 + rand(9),
          bytes: rand(1000),
        });
        return { ...d, firstSeen: at(first) };
      });
      ingest(...flows);
      for (const f of flows) {
        const k = `${f.src}|${f.port}|${f.verdict}`;
        const m = model.get(k);
        model.set(k, {
          c: (m?.c ?? 0) + f.connections,
          b: (m?.b ?? 0) + f.bytes,
          first: m && m.first < f.firstSeen ? m.first : f.firstSeen,
          last: m && m.last > f.lastSeen ? m.last : f.lastSeen,
        });
        const h = Math.floor(Date.parse(f.lastSeen) / 3_600_000);
        hours.set(`${k}|${h}`, (hours.get(`${k}|${h}`) ?? 0) + f.connections);
      }
    }
    const stored = store.visibility.queryFlows();
    expect(
      new Map(
        stored.map((r) => [
          `${r.src}|${r.port}|${r.verdict}`,
          { c: r.connections, b: r.bytes, first: r.firstSeen, last: r.lastSeen },
        ]),
      ),
    ).toEqual(model);
    // Each hour's bucket: a window of that hour alone sums the deltas last seen in it.
    for (let h = T0 / 3_600_000; h < T0 / 3_600_000 + 8; h++) {
      const window = store.visibility.queryFlows({
        since: at(h * 3_600_000),
        until: at(h * 3_600_000),
      });
      const want = [...hours].filter(([k]) => k.endsWith(`|${h}`));
      expect(
        window.map((r) => [`${r.src}|${r.port}|${r.verdict}|${h}`, r.connections]).sort(),
      ).toEqual(want.sort());
    }
  });

  it('reads for impact analysis the rows and counts the flows view reads, in any window', () => {
    // Rows over three hours and both directions, an address that is no address among them.
    for (let i = 0; i < 40; i++) {
      ingest(
        flow({
          at: T0 + ((i * 37) % 180) * 60_000,
          direction: i % 3 ? 'ingress' : 'egress',
          src: i % 11 ? `10.0.${i % 5}.${i % 7}` : 'not-an-address',
          port: 5430 + (i % 4),
          verdict: i % 2 ? 'allowed' : 'would-deny',
          connections: 1 + (i % 6),
        }),
      );
    }
    // What impact analysis reads of a row, in the lean read's order.
    const LEAN = [
      'src',
      'dst',
      'protocol',
      'port',
      'workload',
      'direction',
      'connections',
      'lastSeen',
    ] as const;
    const lean = (r: FlowRow) => Object.fromEntries(LEAN.map((k) => [k, r[k]]));
    const sorted = <T>(rows: T[]) => rows.map((r) => JSON.stringify(r)).sort();
    for (const window of [
      {},
      { since: at(T0 + 30 * 60_000) },
      { until: at(T0 + 90 * 60_000) },
      { since: at(T0 + 61 * 60_000), until: at(T0 + 61 * 60_000) },
    ]) {
      const expected = store.visibility.queryFlows(window);
      expect(expected.length).toBeGreaterThan(0);
      expect(sorted([...store.visibility.observedFlows(window)])).toEqual(
        sorted(expected.map(lean)),
      );
    }
    expect([...store.visibility.observedFlows({ until: at(T0 - 1) })]).toEqual([]);
  });

  it('tells the rows written since a point, each with its end total', () => {
    ingest(
      flow({ at: T0, connections: 2 }),
      flow({ at: T0, verdict: 'denied', ruleId: 'no rule', connections: 3 }),
      flow({ at: T0, port: 80 }),
    );
    const start = store.visibility.flowChanges();
    expect([...store.visibility.changedFlows(start.seq)]).toEqual([]);
    ingest(flow({ at: T0 + 60_000, connections: 4 }));
    const end = { workload: 'db-1', direction: 'ingress', src: '10.0.0.1', dst: '10.0.0.2' };
    // The updated row, with the total of its end: its own 2 + 4 and the denied row's 3.
    expect([...store.visibility.changedFlows(start.seq)]).toEqual([
      { ...end, protocol: 6, port: 5432, lastSeen: at(T0 + 60_000), connections: 9 },
    ]);
    // A protocol without ports: its rows of any port are one flow.
    const icmp = store.visibility.flowChanges();
    expect(icmp.seq).toBeGreaterThan(start.seq);
    ingest(flow({ at: T0, protocol: 1, port: 1 }), flow({ at: T0, protocol: 1, port: 2 }));
    expect(
      [...store.visibility.changedFlows(icmp.seq)].map((r) => 'connections' in r && r.connections),
    ).toEqual([2, 2]);
  });

  it('logs removals: the ends or workload they took rows from first, then the rows left of those', () => {
    store.close();
    open({ maxFlowRows: 3 });
    ingest(
      flow({ at: T0, connections: 2 }),
      flow({ at: T0 + 1, verdict: 'denied', ruleId: 'no rule', connections: 3 }),
      flow({ at: T0 + 2, port: 80 }),
    );
    const start = store.visibility.flowChanges();
    store.visibility.deleteWorkload('nobody');
    expect(store.visibility.flowChanges()).toEqual(start);
    // Past the cap: the oldest row goes, its end keeps the denied row (3 connections).
    ingest(flow({ at: T0 + 3, port: 443 }));
    const end = { workload: 'db-1', direction: 'ingress', src: '10.0.0.1', dst: '10.0.0.2' };
    const row = (port: number, ms: number, connections: number) => ({
      ...end,
      protocol: 6,
      port,
      lastSeen: at(ms),
      connections,
    });
    const evicted = store.visibility.flowChanges();
    expect([...store.visibility.changedFlows(start.seq)]).toEqual([
      { removed: 'end', ...end, protocol: 6, port: 5432 },
      row(5432, T0 + 1, 3),
      row(443, T0 + 3, 1),
    ]);
    // A later read drops the removals before its point: a reader from before reads it all.
    store.visibility.deleteWorkload('db-1');
    expect([...store.visibility.changedFlows(evicted.seq)]).toEqual([
      { removed: 'workload', workload: 'db-1' },
    ]);
    expect(store.visibility.flowChanges().loggedSince).toBe(evicted.seq);
    expect(start.seq).toBeLessThan(evicted.seq);
  });

  it('stops logging past its size: a reader from before then reads everything again', () => {
    store.close();
    open({ maxFlowRows: 2000 });
    const flows = Array.from({ length: 1100 }, (_, i) => flow({ at: T0, port: i + 1 }));
    ingest(...flows);
    const start = store.visibility.flowChanges();
    // 1024 removals fit in the log of a store of this cap: one more does not.
    clock = T0 + 60 * DAY;
    ingest(...flows.slice(0, 76).map((f) => ({ ...f, lastSeen: at(clock) })));
    expect(store.visibility.pruneFlows().expired).toBe(1024);
    expect(store.visibility.flowChanges().loggedSince).toBe(start.loggedSince);
    store.visibility.deleteWorkload('db-1');
    expect(store.visibility.flowChanges().loggedSince).toBeGreaterThan(start.seq);
  });

  it('counts a batch resent with the same seq once, in totals and buckets', () => {
    const batch = { counters: [], flows: [flow({ at: T0, connections: 5 })] };
    expect(store.fleet.addTelemetry('a1', 1, batch)).toBe(true);
    expect(store.fleet.addTelemetry('a1', 1, batch)).toBe(false);
    expect(store.visibility.queryFlows()[0]?.connections).toBe(5);
    expect(store.visibility.queryFlows({ since: at(T0), until: at(T0) })[0]?.connections).toBe(5);
  });

  it('finds a flow by an address spelled differently (canonical IPv6)', () => {
    ingest(flow({ at: T0, src: '2001:DB8:0:0::1', dst: '2001:db8::2' }));
    expect(store.visibility.queryFlows()[0]?.src).toBe('2001:db8::1');
    expect(
      store.visibility.queryFlows({ match: [{ workloads: [], addresses: ['2001:db8:0::1'] }] }),
    ).toHaveLength(1);
    expect(
      store.visibility.queryFlows({ match: [{ workloads: [], addresses: ['2001:db8::3'] }] }),
    ).toEqual([]);
  });

  it('prunes buckets past retention but keeps a dependency seen once a week', () => {
    store.close();
    open({ flowRetentionDays: 35 });
    const weekly = { dst: '10.0.0.2', port: 873 };
    ingest(flow({ at: T0, port: 22 })); // seen once, then never again
    for (let week = 0; week <= 10; week++) {
      clock = T0 + week * 7 * DAY;
      ingest(flow({ at: clock, ...weekly }));
      store.visibility.pruneFlows();
    }
    const rows = store.visibility.queryFlows();
    expect(rows.map((f) => f.port)).toEqual([873]);
    expect(rows[0]).toMatchObject({ connections: 11, firstSeen: at(T0) });
    // The first weeks' buckets are gone: a window over them finds nothing, a recent one does.
    expect(store.visibility.queryFlows({ since: at(T0), until: at(T0 + 7 * DAY) })).toEqual([]);
    expect(store.visibility.queryFlows({ since: at(clock - 30 * DAY) })[0]?.connections).toBe(5);
    // Not seen for longer than the retention: forgotten.
    clock += 36 * DAY;
    expect(store.visibility.pruneFlows()).toMatchObject({ expired: 1 });
    expect(store.visibility.queryFlows()).toEqual([]);
  });

  it('evicts the least recently seen rows past the row cap and records an event', () => {
    store.close();
    open({ maxFlowRows: 3 });
    for (let i = 0; i < 5; i++) ingest(flow({ at: T0 + i * 60_000, port: 1000 + i }));
    expect(store.visibility.flowCount()).toBe(3);
    expect(store.visibility.queryFlows().map((f) => f.port)).toEqual([1004, 1003, 1002]);
    // Seeing an old dependency again refreshes it; a new one then evicts the oldest other.
    ingest(flow({ at: T0 + 10 * 60_000, port: 1002 }), flow({ at: T0 + 11 * 60_000, port: 9 }));
    expect(store.visibility.queryFlows().map((f) => f.port)).toEqual([9, 1002, 1004]);
    const events = store.visibility.listEvents().filter((e) => e.code === 'FLOW_ROWS_EVICTED');
    expect(events.map((e) => e.attributes.evicted)).toEqual(['1', '1', '1']);
  });

  it('hands audit entries over only after their transaction commits', () => {
    store.close();
    const seen: AuditEntry[] = [];
    open({ onAudit: (e) => seen.push(e) });
    expect(() =>
      store.tx(() => {
        store.access.appendAudit({ actor: 'a', action: 'x.put', target: 'gone' });
        throw new Error('boom');
      }),
    ).toThrow('boom');
    store.tx(() => {
      store.access.appendAudit({ actor: 'a', action: 'x.put', target: 'kept', after: { v: 1 } });
      // Not yet: the transaction is still open.
      expect(seen).toEqual([]);
    });
    expect(seen).toMatchObject([{ actor: 'a', action: 'x.put', target: 'kept', after: { v: 1 } }]);
    expect(seen[0]?.id).toBe(store.access.listAudit()[0]?.id);
  });
});

describe('canonicalOrUndefined', () => {
  it('answers as parsing and formatting would, with or without the dotted-quad shortcut', () => {
    const inputs = [
      '10.0.0.1',
      '0.0.0.0',
      '255.255.255.255',
      '192.168.010.1',
      '01.2.3.4',
      '256.1.1.1',
      '1.2.3',
      '1.2.3.4.5',
      ' 1.2.3.4',
      '1.2.3.4\n',
      '::ffff:10.0.0.1',
      '2001:DB8::1',
      '2001:db8:0:0::1',
      'x',
      '',
    ];
    for (const text of inputs) {
      const a = parseAddress(text);
      expect(canonicalOrUndefined(text), text).toBe(
        a ? formatAddress(a.family, a.value) : undefined,
      );
    }
  });
});

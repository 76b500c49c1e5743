import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Workload } from '@bulkhead/policy';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { prng } from '../random.test-util.js';
import { createSqliteStores, type Stores } from '../store/index.js';

const mode = { ingress: 'monitor', egress: 'monitor' } as const;
const w = (name: string, app: string): Workload => ({
  name,
  addresses: [`10.0.0.${name.length}`],
  labels: { app },
  mode,
});

describe('policy-admin store: workloads held in memory', () => {
  let dir: string;
  let store: Stores;
  const path = () => join(dir, 'p.db');
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'bh-policy-store-'));
    store = createSqliteStores({ path: path() });
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** What a store opened on the file now reads (committed rows only, parsed afresh). */
  function fresh() {
    const other = createSqliteStores({ path: path() });
    try {
      const list = other.policy.listWorkloads();
      return { list, origins: list.map((r) => other.policy.getOrigin(r.name)) };
    } finally {
      other.close();
    }
  }
  const held = () => {
    const list = store.policy.listWorkloads();
    return { list, origins: list.map((r) => store.policy.getOrigin(r.name)) };
  };

  it('reads what the table holds after commits, rollbacks and writes seen inside their transaction', () => {
    store.policy.upsertWorkload(w('b', 'one'));
    expect(held()).toEqual(fresh());
    expect(() =>
      store.tx(() => {
        store.policy.upsertWorkload(w('a', 'two'));
        store.policy.upsertWorkload(w('b', 'three'));
        store.policy.setWorkloadTrust('b', { addressRanges: ['10.0.0.0/8'] });
        // Inside: its own writes, in name order.
        expect(store.policy.listWorkloads().map((r) => [r.name, r.labels.app])).toEqual([
          ['a', 'two'],
          ['b', 'three'],
        ]);
        expect(store.policy.getWorkload('b')?.addressRanges).toEqual(['10.0.0.0/8']);
        throw new Error('rolled back');
      }),
    ).toThrow('rolled back');
    expect(store.policy.getWorkload('a')).toBeUndefined();
    expect(held()).toEqual(fresh());
    expect(held().list[0]!.labels).toEqual({ app: 'one' });

    store.tx(() => {
      store.policy.upsertWorkload(w('c', 'four'));
      store.policy.upsertWorkload(w('b', 'five'));
    });
    store.policy.deleteWorkload('c');
    store.policy.upsertWorkload(w('a', 'six'));
    expect(held()).toEqual(fresh());
    expect(held().list.map((r) => [r.name, r.labels.app, r.version])).toEqual([
      ['a', 'six', 1],
      ['b', 'five', 2],
    ]);
    // The origin stays the first labels, also once relabelled.
    expect(store.policy.getOrigin('b')?.labels).toEqual({ app: 'one' });
  });

  it('lists what the table holds over random rewrites, creations and deletions, committed or not', () => {
    // Rewrites take their place in the kept sorted list; creations and deletions sort it again.
    const rng = prng(7);
    const names = Array.from({ length: 12 }, (_, i) => `w${i}`);
    let model = new Map<string, string>();
    const listed = () => store.policy.listWorkloads().map((r) => [r.name, r.labels.app]);
    const expected = (m: Map<string, string>) => [...m].sort(([a], [b]) => (a < b ? -1 : 1));
    for (let i = 0; i < 300; i++) {
      const inside = new Map(model);
      const commit = rng.chance(0.7);
      const run = () => {
        for (let k = rng.int(3) + 1; k > 0; k--) {
          const name = rng.pick(names);
          if (rng.chance(0.2)) {
            store.policy.deleteWorkload(name);
            inside.delete(name);
          } else {
            const app = rng.pick(['a', 'b', 'c', 'd']);
            store.policy.upsertWorkload(w(name, app));
            inside.set(name, app);
          }
          expect(listed(), `step ${i}`).toEqual(expected(inside));
        }
        if (!commit) throw new Error('rolled back');
      };
      if (commit) store.tx(run);
      else expect(() => store.tx(run)).toThrow('rolled back');
      if (commit) model = inside;
      expect(listed(), `step ${i}`).toEqual(expected(model));
      if (i % 50 === 0) expect(held()).toEqual(fresh());
      const newest =
        held()
          .origins.map((o) => o!.createdAt)
          .sort()
          .at(-1) ?? '';
      expect(store.policy.createdUpTo() >= newest).toBe(true);
    }
    expect(held()).toEqual(fresh());
  });

  it('lists each unchanged body as the same frozen object, a changed one afresh', () => {
    const put = (name: string, port: number) =>
      store.policy.putResource('services', name, { name, ports: [{ protocol: 'tcp', port }] });
    put('a', 1);
    put('b', 2);
    const list = () =>
      store.policy.listResources<{ name: string; ports: { port: number }[] }>('services');
    const [a, b] = list();
    expect(list()[0]).toBe(a);
    expect(() => {
      a!.ports[0]!.port = 9;
    }).toThrow(TypeError);
    put('b', 3);
    expect(list()[0]).toBe(a);
    expect(list()[1]).not.toBe(b);
    expect(list()[1]!.ports[0]!.port).toBe(3);
    // Written and listed in a transaction that rolled back: the table's body again.
    expect(() =>
      store.tx(() => {
        put('a', 4);
        expect(list()[0]!.ports[0]!.port).toBe(4);
        throw new Error('rolled back');
      }),
    ).toThrow('rolled back');
    expect(list()[0]!.ports[0]!.port).toBe(1);
    store.policy.deleteResource('services', 'a');
    expect(list().map((x) => x.name)).toEqual(['b']);
  });

  it('hands out frozen records: a reader cannot change what others read', () => {
    store.policy.upsertWorkload(w('a', 'one'));
    const [r] = store.policy.listWorkloads();
    expect(() => {
      (r!.labels as Record<string, string>).app = 'changed';
    }).toThrow(TypeError);
    expect(() => {
      (r as { version: number }).version = 9;
    }).toThrow(TypeError);
    expect(store.policy.getWorkload('a')?.labels).toEqual({ app: 'one' });
  });
});

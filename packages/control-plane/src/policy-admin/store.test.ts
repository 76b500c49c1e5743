import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Workload } from '@bulkhead/policy';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
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

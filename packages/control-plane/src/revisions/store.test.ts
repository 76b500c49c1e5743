import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { prng } from '../random.test-util.js';
import { createSqliteStores, type Stores } from '../store/index.js';
import { CHECKPOINT } from './store.js';

type Item = { name: string; [k: string]: unknown };
type Snap = Record<string, Item[]>;

/** One random revision after `s`: edits, copies of the same content, adds, deletes, reorders. */
function step(rng: ReturnType<typeof prng>, s: Snap): unknown {
  if (rng.chance(0.03)) return { policies: [1, 2] }; // not named lists: stored whole
  const out: Snap = { ...s };
  const key = ['workloads', 'workloads', 'policies', 'ipLists'][rng.int(4)]!;
  let items = [...(out[key] ?? [])];
  const name = `${key[0]}${rng.int(12)}`;
  const at = items.findIndex((i) => i.name === name);
  const r = rng.int(6);
  if (r === 0 && at >= 0) items.splice(at, 1);
  else if (r === 1)
    items = items.map((i) => ({ ...i })); // same content, new objects
  else if (r === 2) items.reverse();
  else {
    const item: Item = { name, labels: { env: `e${rng.int(3)}` }, n: rng.int(3) };
    if (rng.chance(0.2)) item.extra = undefined; // dropped by JSON, as the whole one drops it
    if (at >= 0) items[at] = item;
    else items.push(item);
  }
  out[key] = items;
  return out;
}

describe('revision store', () => {
  let dir: string;
  let store: Stores;
  const path = () => join(dir, 'r.db');
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'bh-revisions-'));
    store = createSqliteStores({ path: path() });
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads back every revision exactly, stored as deltas, also after a restart', () => {
    for (const seed of [1, 2, 3]) {
      store.close();
      rmSync(path(), { force: true });
      store = createSqliteStores({ path: path() });
      const rng = prng(seed);
      const want = new Map<number, unknown>();
      let s: unknown = { workloads: [], ipLists: [], policies: [] };
      for (let i = 0; i < 2 * CHECKPOINT + 10; i++) {
        const next = step(rng, (s as Snap).workloads ? (s as Snap) : { workloads: [] });
        if (rng.chance(0.1)) {
          // Added in a transaction that rolls back: its number goes to the next one.
          expect(() =>
            store.tx(() => {
              store.revisions.addRevision('a', 'gone', { workloads: [{ name: 'ghost' }] });
              throw new Error('rolled back');
            }),
          ).toThrow('rolled back');
        }
        const n = store.revisions.addRevision('a', `r${i}`, next);
        want.set(n, JSON.parse(JSON.stringify(next)));
        s = next;
        expect(store.revisions.getRevision(n)?.snapshot).toEqual(want.get(n));
      }
      const check = () => {
        for (const [n, snapshot] of want) {
          expect(store.revisions.getRevision(n)?.snapshot, `seed ${seed} revision ${n}`).toEqual(
            snapshot,
          );
        }
      };
      check();
      store.close();
      store = createSqliteStores({ path: path() });
      check();
      expect(store.revisions.latestRevision()?.snapshot).toEqual(want.get(want.size));
    }
  });

  it('stores a one-workload change as that workload, and every CHECKPOINT-th revision whole', () => {
    const workloads = Array.from({ length: 200 }, (_, i) => ({
      name: `w${String(i).padStart(3, '0')}`,
      labels: { app: 'a' },
    }));
    const s = { workloads, policies: [{ name: 'p' }] };
    store.revisions.addRevision('a', 'first', s);
    const relabelled = workloads.map((w, i) => (i === 7 ? { ...w, labels: { app: 'b' } } : w));
    store.revisions.addRevision('a', 'relabel', { ...s, workloads: relabelled });
    const raw = new Database(path(), { readonly: true });
    const rows = raw.prepare('SELECT n, delta, snapshot FROM revisions ORDER BY n').all() as {
      n: number;
      delta: number;
      snapshot: string;
    }[];
    raw.close();
    expect(rows.map((r) => r.delta)).toEqual([0, 1]);
    expect(JSON.parse(rows[1]!.snapshot)).toEqual({
      workloads: { items: [{ name: 'w007', labels: { app: 'b' } }] },
    });
    for (let n = 3; n <= CHECKPOINT + 1; n++) store.revisions.addRevision('a', 'same', s);
    const again = new Database(path(), { readonly: true });
    const whole = again.prepare('SELECT n FROM revisions WHERE delta = 0 ORDER BY n').all();
    again.close();
    expect(whole.map((r) => (r as { n: number }).n)).toEqual([1, CHECKPOINT + 1]);
  });
});

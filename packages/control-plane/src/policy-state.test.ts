import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PolicyState, Workload } from '@bulkhead/policy';
import { describe, expect, it } from 'vitest';
import { createPolicyStates } from './policy-state.js';
import { prng } from './random.test-util.js';
import type { RevisionWithSnapshot } from './revisions/store.js';
import { createSqliteStores } from './store/index.js';

const monitor = { ingress: 'monitor', egress: 'monitor' } as const;
const web = (labels: Record<string, string>, createdAt = '2026-01-01T00:00:00.000Z') => ({
  name: 'web',
  addresses: ['10.0.0.1'],
  labels,
  mode: monitor,
  createdAt,
});

function setup() {
  let stored = web({ app: 'draft' });
  const origin = { labels: { app: 'first' }, mode: monitor };
  const revs = new Map<number, RevisionWithSnapshot<PolicyState>>();
  const reads: number[] = [];
  const revision = (n: number, note: string, labels: Record<string, string>, at: string) =>
    revs.set(n, {
      revision: n,
      author: 'a',
      note,
      createdAt: at,
      snapshot: {
        workloads: [{ name: 'web', addresses: [], labels, mode: monitor }],
        ipLists: [],
        services: [],
        policies: [{ name: note, scope: {} }],
      },
    });
  const states = createPolicyStates(
    {
      listWorkloads: () => [
        { ...stored, addressRanges: [], pending: null, released: null, updatedAt: '', version: 1 },
      ],
      listResources: () => [],
      getOrigin: () => ({ ...origin, createdAt: stored.createdAt }),
      createdUpTo: () => stored.createdAt,
    },
    {
      getRevision: <S>(n: number) => {
        reads.push(n);
        return revs.get(n) as RevisionWithSnapshot<S> | undefined;
      },
      latestRevisionRecord: () => {
        const r = [...revs.values()].at(-1);
        return (
          r && { revision: r.revision, author: r.author, note: r.note, createdAt: r.createdAt }
        );
      },
    },
  );
  return {
    states,
    revs,
    reads,
    revision,
    recreate: (at: string) => (stored = web({ app: 'x' }, at)),
  };
}

describe('policy states', () => {
  it('gives each workload the labels of the revision it existed in, else the ones it came with', () => {
    const t = setup();
    const labels = () => t.states.provisioned(t.states.workloads()).state.workloads[0]!.labels;
    expect(labels()).toEqual({ app: 'first' }); // no revision yet: not the draft's
    t.revision(1, 'one', { app: 'web' }, '2026-02-01T00:00:00.000Z');
    expect(labels()).toEqual({ app: 'web' });
    expect(t.states.atRevision(0, t.states.workloads()).workloads[0]!.labels).toEqual({
      app: 'first',
    });
    // Deleted and enrolled again after revision 1: revision 1 did not know this one.
    t.recreate('2026-03-01T00:00:00.000Z');
    expect(labels()).toEqual({ app: 'first' });
  });

  it('does not keep a revision a rolled-back transaction added under the same number', () => {
    const t = setup();
    const policies = () => t.states.provisioned([]).state.policies.map((p) => p.name);
    t.revision(1, 'rolled-back', {}, '2026-02-01T00:00:00.000Z');
    expect(policies()).toEqual(['rolled-back']);
    t.revs.delete(1);
    t.revision(1, 'kept', {}, '2026-02-01T00:00:00.001Z');
    expect(policies()).toEqual(['kept']);
    expect(t.states.atRevision(1, []).policies.map((p) => p.name)).toEqual(['kept']);
  });

  it('reads an older revision once while the latest stays the same', () => {
    const t = setup();
    t.revision(1, 'one', { app: 'one' }, '2026-02-01T00:00:00.000Z');
    t.revision(2, 'two', { app: 'two' }, '2026-02-02T00:00:00.000Z');
    const labelsAt = (n: number) =>
      t.states.atRevision(n, t.states.workloads()).workloads[0]!.labels;
    for (let i = 0; i < 3; i++) {
      expect(labelsAt(1)).toEqual({ app: 'one' });
      expect(labelsAt(2)).toEqual({ app: 'two' });
    }
    expect(t.reads).toEqual([2, 1]);
    // A new latest revision: the older ones are read again.
    t.revision(3, 'three', { app: 'three' }, '2026-02-03T00:00:00.000Z');
    expect(labelsAt(1)).toEqual({ app: 'one' });
    expect(t.reads).toEqual([2, 1, 3, 1]);
  });
});

describe('policy states on a store', () => {
  it('answer from what they keep as fresh ones do, over random edits, enrolments and revisions', () => {
    // Kept answers (per revision, the last list and its result; the last listed records) must
    // equal those of a PolicyStates made afresh on the same store at every step, also inside a
    // transaction and after one rolled back. More workloads than a list needs to be kept.
    const dir = mkdtempSync(join(tmpdir(), 'bh-policy-states-'));
    try {
      for (let seed = 1; seed <= 6; seed++) {
        let clock = Date.parse('2026-01-01T00:00:00.000Z');
        const now = () => {
          clock += 1000;
          return new Date(clock);
        };
        const stores = createSqliteStores({ path: join(dir, `s${seed}.db`), now });
        const states = createPolicyStates(stores.policy, stores.revisions);
        const rng = prng(seed);
        const names = Array.from({ length: 45 }, (_, i) => `w${String(i).padStart(2, '0')}`);
        const workload = (name: string): Workload => ({
          name,
          addresses: [`10.0.${rng.int(4)}.${names.indexOf(name) + 1}`],
          labels: { app: rng.pick(['a', 'b', 'c']) },
          mode: { ingress: rng.pick(['monitor', 'enforce']), egress: 'monitor' },
        });
        for (const n of names.slice(0, 40)) stores.policy.upsertWorkload(workload(n));
        const check = (step: string) => {
          const fresh = createPolicyStates(stores.policy, stores.revisions);
          const current = states.workloads();
          expect(current, step).toEqual(fresh.workloads());
          expect(states.provisioned(current), step).toEqual(fresh.provisioned(fresh.workloads()));
          const latest = states.provisioned([]).revision;
          const n = rng.int(latest + 1);
          expect(states.atRevision(n, current), step).toEqual(
            fresh.atRevision(n, fresh.workloads()),
          );
        };
        /** A one-workload provision as the revisions service makes it. */
        const provisionOne = () => {
          const { state } = states.provisioned(states.workloads());
          if (state.workloads.length === 0) return;
          const at = rng.int(state.workloads.length);
          const workloads = state.workloads.slice();
          workloads[at] = { ...workloads[at]!, labels: { app: rng.pick(['a', 'b', 'd']) } };
          stores.revisions.addRevision('t', 'one', { ...state, workloads });
        };
        for (let i = 0; i < 80; i++) {
          const step = `seed ${seed} step ${i}`;
          // Now and then the clock goes back: a workload may be newer than a later revision.
          if (rng.chance(0.1)) clock -= 5000;
          const name = rng.pick(names);
          const op = rng.int(7);
          if (op === 0) stores.policy.upsertWorkload(workload(name));
          else if (op === 1) stores.deleteWorkload(name);
          else if (op === 2) stores.tx(provisionOne);
          else if (op === 3) stores.revisions.addRevision('t', 'draft', states.draft());
          else if (op === 4) {
            expect(() =>
              stores.tx(() => {
                stores.policy.upsertWorkload(workload(name));
                provisionOne();
                check(`${step} inside`);
                throw new Error('rolled back');
              }),
            ).toThrow('rolled back');
          } else {
            stores.tx(() => {
              stores.policy.upsertWorkload(workload(name));
              check(`${step} inside`);
              provisionOne();
            });
          }
          check(step);
        }
        stores.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

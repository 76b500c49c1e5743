import type { PolicyState } from '@bulkhead/policy';
import { describe, expect, it } from 'vitest';
import { createPolicyStates } from './policy-state.js';
import type { RevisionWithSnapshot } from './revisions/store.js';

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

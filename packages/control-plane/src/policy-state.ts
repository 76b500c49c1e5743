// The policy states the domains reason about, read-only: the draft (editable objects, labels and
// modes on the live workloads), the provisioned state (the latest revision on given workloads)
// and revision n's. Workload existence and addresses are live (agents report them); policy,
// labels and modes belong to revisions. Must not write, compile for publishing, or know agents
// and flows.
import { compile, type PolicyState, type Workload } from '@bulkhead/policy';
import type { RuleSet } from '@bulkhead/proto';
import { invalid, notFound } from './errors.js';
import type { PolicyAdminStore, WorkloadRecord } from './policy-admin/store.js';
import type { RevisionStore } from './revisions/store.js';

/** What a revision freezes: the whole state at provision time (workloads: labels and modes). */
export type Snapshot = PolicyState;

export interface PolicyStates {
  /** The workloads as they are now, with their draft labels and modes. */
  workloads(): Workload[];
  /** The editable objects, labels and modes on the live workloads. */
  draft(): PolicyState;
  /**
   * The latest revision (drafts stay drafts) on `workloads`: its policy, and the labels and mode
   * it gave each workload that existed then (one created since keeps the ones it came with).
   */
  provisioned(workloads: Workload[]): { state: PolicyState; revision: number };
  /** Revision n (0: the empty policy before the first) on `workloads`, as `provisioned`. */
  atRevision(n: number, workloads: Workload[]): PolicyState;
}

export const toWorkload = (w: WorkloadRecord): Workload => ({
  name: w.name,
  addresses: w.addresses,
  labels: w.labels,
  mode: w.mode,
});

/** A workload of exactly the four fields `toWorkload` makes (a snapshot's could hold more). */
const plainOnes = new WeakMap<Workload, boolean>();
function plain(w: Workload): boolean {
  let p = plainOnes.get(w);
  if (p === undefined) {
    p = Object.keys(w).length === 4;
    plainOnes.set(w, p);
  }
  return p;
}

const sameList = (a: readonly string[], b: readonly string[]) =>
  a === b || (a.length === b.length && a.every((v, i) => v === b[i]));

type Frozen = { revision: number; createdAt: string; state: PolicyState };

export function createPolicyStates(
  policy: Pick<PolicyAdminStore, 'listWorkloads' | 'listResources' | 'getOrigin'>,
  revisions: Pick<RevisionStore, 'getRevision' | 'latestRevisionRecord'>,
): PolicyStates {
  // Records are immutable and shared while unchanged (the store holds them): so are these, and
  // states built on them, which lets the validation, impact and revision stages below skip
  // what is the same object as before.
  const asWorkload = new WeakMap<WorkloadRecord, Workload>();
  const workloads = () =>
    policy.listWorkloads().map((r) => {
      let w = asWorkload.get(r);
      if (!w) {
        w = toWorkload(r);
        asWorkload.set(r, w);
      }
      return w;
    });
  /** The last workload `on` made from a live one, and from what. */
  const given = new WeakMap<Workload, { from: Pick<Workload, 'labels' | 'mode'>; w: Workload }>();
  const EMPTY: Frozen = {
    revision: 0,
    createdAt: '',
    state: { workloads: [], ipLists: [], services: [], policies: [] },
  };
  // Revisions never change: the latest one's parsed snapshot is kept, since every workload
  // an agent writes asks for it. Keyed by the whole record, not the number alone: a revision
  // added in a transaction that rolled back leaves its number to the next one.
  let latest: Frozen & { byName: Map<string, Workload>; key: string } = {
    ...EMPTY,
    byName: new Map(),
    key: '',
  };
  // The last two older revisions asked for (a staged rollout's base, on every workload change),
  // kept while the latest revision stays the same.
  const older = new Map<number, ReturnType<typeof frozen>>();
  const OLDER_KEPT = 2;

  function frozen(n: number): Frozen & { byName: Map<string, Workload> } {
    const r = n === 0 ? undefined : revisions.getRevision<Snapshot>(n);
    if (n !== 0 && !r) throw notFound(`revision ${n}`);
    const f = r ? { revision: n, createdAt: r.createdAt, state: r.snapshot } : EMPTY;
    return { ...f, byName: new Map(f.state.workloads.map((w) => [w.name, w])) };
  }

  function newest(): typeof latest {
    const record = revisions.latestRevisionRecord();
    const key = JSON.stringify(record ?? null);
    if (key !== latest.key) {
      latest = { ...frozen(record?.revision ?? 0), key };
      older.clear();
    }
    return latest;
  }

  /** Revision `f` on `current`: its labels and modes where the workload existed then. */
  function on(f: ReturnType<typeof frozen>, current: Workload[]): PolicyState {
    const { ipLists, services, policies } = f.state;
    return {
      ipLists,
      services,
      policies,
      workloads: current.map((w) => {
        const origin = policy.getOrigin(w.name);
        const then = f.byName.get(w.name);
        // Created after the revision (or deleted and enrolled again): its own first labels.
        const from = then && (!origin || origin.createdAt <= f.createdAt) ? then : origin;
        if (!from) return w;
        // Unchanged since the revision: its own object, so later stages see it is the same.
        if (from === then && sameList(then.addresses, w.addresses) && plain(then)) {
          return then;
        }
        const last = given.get(w);
        if (last?.from === from) return last.w;
        const made = { ...w, labels: from.labels, mode: from.mode };
        given.set(w, { from, w: made });
        return made;
      }),
    };
  }

  return {
    workloads,
    draft: () => ({
      workloads: workloads(),
      ipLists: policy.listResources('ip_lists'),
      services: policy.listResources('services'),
      policies: policy.listResources('policies'),
    }),
    provisioned(current) {
      const f = newest();
      return { revision: f.revision, state: on(f, current) };
    },
    atRevision(n, current) {
      const f = newest();
      if (n === f.revision) return on(f, current);
      let o = older.get(n);
      if (!o) {
        o = frozen(n);
        if (older.size >= OLDER_KEPT) older.delete(older.keys().next().value!);
        older.set(n, o);
      }
      return on(o, current);
    },
  };
}

/**
 * The state's RuleSets, or a 400 `message` with the compiler's diagnostics. Only the revision
 * diff's per-workload effect uses the first design's compiler; publishing uses the calculator.
 */
export function compileState(state: PolicyState, revision: number, message: string): RuleSet[] {
  const result = compile(state, revision);
  if (result.diagnostics.length > 0) throw invalid(message, result.diagnostics);
  return result.ruleSets;
}

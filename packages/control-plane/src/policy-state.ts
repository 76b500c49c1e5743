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

/** Lists shorter than this are computed item by item and not remembered (cheaper than a memo). */
const REMEMBERED = 32;

/**
 * `make` at each place where `from` holds another object than `was` (or `keep` refuses the
 * answer there); `out`'s answer elsewhere.
 */
function patched<A, B>(
  from: readonly A[],
  was: readonly A[],
  out: readonly B[],
  make: (a: A, i: number) => B,
  keep?: (b: B, i: number) => boolean,
): B[] {
  const next = out.slice();
  for (let i = 0; i < from.length; i++) {
    if (from[i] !== was[i] || (keep && !keep(next[i]!, i))) next[i] = make(from[i]!, i);
  }
  return next;
}

/** `list` itself when `other` holds the same objects in the same places. */
const sameItems = <T>(list: readonly T[], other: readonly T[]) =>
  list.length === other.length && list.every((v, i) => v === other[i]);

type Frozen = { revision: number; createdAt: string; state: PolicyState };
/**
 * A revision as `on` reads it: its workloads by name (built when a place does not match), and
 * the last list of workloads it was put on with the result, so that a list that differs in a
 * few places costs those places.
 */
type Held = Frozen & {
  byName?: Map<string, Workload>;
  last?: Kept;
  /** The previous latest revision's last list and answers, until this one has its own. */
  seed?: Kept;
};
type Kept = { current: readonly Workload[]; out: readonly Workload[] };

export function createPolicyStates(
  policy: Pick<PolicyAdminStore, 'listWorkloads' | 'listResources' | 'getOrigin' | 'createdUpTo'>,
  revisions: Pick<RevisionStore, 'getRevision' | 'latestRevisionRecord'>,
): PolicyStates {
  // Records are immutable and shared while unchanged (the store holds them): so are these, and
  // states built on them, which lets the validation, impact and revision stages below skip
  // what is the same object as before.
  const asWorkload = new WeakMap<WorkloadRecord, Workload>();
  const ofRecord = (r: WorkloadRecord) => {
    let w = asWorkload.get(r);
    if (!w) {
      w = toWorkload(r);
      asWorkload.set(r, w);
    }
    return w;
  };
  /** The records last listed and their workloads: the next list costs the places that differ. */
  let listed: { records: readonly WorkloadRecord[]; out: readonly Workload[] } = {
    records: [],
    out: [],
  };
  function workloads(): Workload[] {
    const records = policy.listWorkloads();
    const out =
      records.length === listed.records.length
        ? patched(records, listed.records, listed.out, ofRecord)
        : records.map(ofRecord);
    listed = { records, out: out.slice() };
    return out;
  }
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
  let latest: Held & { key: string } = { ...EMPTY, key: '' };
  // The last two older revisions asked for (a staged rollout's base, on every workload change),
  // kept while the latest revision stays the same.
  const older = new Map<number, Held>();
  const OLDER_KEPT = 2;

  function frozen(n: number): Held {
    const r = n === 0 ? undefined : revisions.getRevision<Snapshot>(n);
    if (n !== 0 && !r) throw notFound(`revision ${n}`);
    return r ? { revision: n, createdAt: r.createdAt, state: r.snapshot } : { ...EMPTY };
  }

  function newest(): typeof latest {
    const record = revisions.latestRevisionRecord();
    const key = JSON.stringify(record ?? null);
    if (key !== latest.key) {
      latest = { ...frozen(record?.revision ?? 0), key, seed: latest.last ?? latest.seed };
      older.clear();
    }
    return latest;
  }

  /** Workload `w`, at place i of the list it is put on, in revision `f`. */
  function one(f: Held, w: Workload, i: number): Workload {
    const snapshot = f.state.workloads;
    // Lists are sorted by name: the revision's workload is usually in the same place.
    let then: Workload | undefined = snapshot[i];
    if (then?.name !== w.name) {
      f.byName ??= new Map(snapshot.map((o) => [o.name, o]));
      then = f.byName.get(w.name);
    }
    const origin = policy.getOrigin(w.name);
    // Created after the revision (or deleted and enrolled again): its own first labels.
    const from = then && (!origin || origin.createdAt <= f.createdAt) ? then : origin;
    if (!from) return w;
    // Unchanged since the revision: its own object, so later stages see it is the same.
    if (from === then && sameList(then.addresses, w.addresses) && plain(then)) return then;
    const last = given.get(w);
    if (last?.from === from) return last.w;
    const made = { ...w, labels: from.labels, mode: from.mode };
    given.set(w, { from, w: made });
    return made;
  }

  /**
   * Revision `f` on `current`: its labels and modes where the workload existed then. A workload
   * object stands for its record (the store makes a new one for every write), so the same object
   * in the same place gives the same answer as last time. The revision's own list when nothing
   * differs from it (so later stages see the whole list is the same).
   */
  function on(f: Held, current: Workload[]): PolicyState {
    const { ipLists, services, policies } = f.state;
    const snapshot = f.state.workloads;
    const make = (w: Workload, i: number) => one(f, w, i);
    const last = f.last;
    let out: Workload[];
    if (last && last.current.length === current.length) {
      out = patched(current, last.current, last.out, make);
    } else if (f.seed?.current.length === current.length && policy.createdUpTo() <= f.createdAt) {
      // A new revision made from the previous one holds the very object that one gave a
      // workload where it did not change it. Where so (and every workload existed then),
      // `one` would give that object again: its place, name and addresses match, it is plain.
      const seed = f.seed;
      out = patched(current, seed.current, seed.out, make, (o, i) => o === snapshot[i] && plain(o));
    } else out = current.map(make);
    const workloads = sameItems(out, snapshot) ? snapshot : out;
    if (current.length >= REMEMBERED) {
      f.last = { current: current.slice(), out: out.slice() };
      f.seed = undefined;
    }
    return { ipLists, services, policies, workloads };
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

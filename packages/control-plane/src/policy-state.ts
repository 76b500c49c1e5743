// The policy states the domains reason about, read-only: the draft (editable objects on the
// live workloads), the provisioned state (the latest revision's policy on given workloads) and
// revision n's. Must not write, compile for publishing, or know agents and flows.
import { compile, type PolicyState, type Workload } from '@bulkhead/policy';
import type { RuleSet } from '@bulkhead/proto';
import { invalid, notFound } from './errors.js';
import type { PolicyAdminStore, WorkloadRecord } from './policy-admin/store.js';
import type { RevisionStore } from './revisions/store.js';

/** What a revision freezes: the whole state at provision time. */
export type Snapshot = PolicyState;

export interface PolicyStates {
  /** The workloads as they are now. */
  workloads(): Workload[];
  /** The editable objects on the live workloads. */
  draft(): PolicyState;
  /** Policy of the latest revision (drafts stay drafts) applied to `workloads`. */
  provisioned(workloads: Workload[]): { state: PolicyState; revision: number };
  /** Revision n's policy (0: the empty policy before the first) applied to `workloads`. */
  atRevision(n: number, workloads: Workload[]): PolicyState;
}

export const toWorkload = (w: WorkloadRecord): Workload => ({
  name: w.name,
  addresses: w.addresses,
  labels: w.labels,
  mode: w.mode,
});

export function createPolicyStates(
  policy: Pick<PolicyAdminStore, 'listWorkloads' | 'listResources'>,
  revisions: Pick<RevisionStore, 'getRevision' | 'latestRevision'>,
): PolicyStates {
  const workloads = () => policy.listWorkloads().map(toWorkload);
  return {
    workloads,
    draft: () => ({
      workloads: workloads(),
      ipLists: policy.listResources('ip_lists'),
      services: policy.listResources('services'),
      policies: policy.listResources('policies'),
    }),
    provisioned(current) {
      const latest = revisions.latestRevision<Snapshot>();
      return {
        revision: latest?.revision ?? 0,
        state: {
          workloads: current,
          ipLists: latest?.snapshot.ipLists ?? [],
          services: latest?.snapshot.services ?? [],
          policies: latest?.snapshot.policies ?? [],
        },
      };
    },
    atRevision(n, current) {
      if (n === 0) return { workloads: current, ipLists: [], services: [], policies: [] };
      const r = revisions.getRevision<Snapshot>(n);
      if (!r) throw notFound(`revision ${n}`);
      const { ipLists, services, policies } = r.snapshot;
      return { workloads: current, ipLists, services, policies };
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

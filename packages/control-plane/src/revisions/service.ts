// Revisions: the draft frozen into numbered, immutable revisions (provision, rollback) behind
// the impact gate, their list, snapshots and diffs, the impact of a candidate on observed flows,
// and the desired RuleSet each workload gets. Must not edit workloads or draft objects except
// when a rollback makes an old revision the draft again.
import type { ImpactRequest, ImpactView, ProvisionResult, RevisionDiff } from '@bulkhead/api';
import { diffRuleSets, diffStates } from '@bulkhead/policy';
import type { RuleSet } from '@bulkhead/proto';
import type { AuditLog } from '../access/store.js';
import { notFound } from '../errors.js';
import type { PolicyAdminStore } from '../policy-admin/store.js';
import { compileState, type PolicyStates, type Snapshot } from '../policy-state.js';
import type { RuleSetPublisher } from '../rulesets/publisher.js';
import type { Transactor } from '../store/database.js';
import { window } from '../visibility/window.js';
import type { ImpactGate } from './impact-gate.js';
import { candidateState } from './impact-target.js';
import type { RevisionRecord, RevisionStore, RevisionWithSnapshot } from './store.js';

export interface RevisionsService {
  /** What a candidate (the draft, a revision, or documents over the draft) does to observed flows. */
  impact(req: ImpactRequest): ImpactView;
  /**
   * Freezes the draft into a new revision. Refused (IMPACT_CONFIRMATION_REQUIRED, nothing
   * changes) when it newly blocks observed flows and the admin did not confirm.
   */
  provision(actor: string, note: string, options?: { confirm?: boolean }): ProvisionResult;
  /**
   * Makes revision n's policy the draft again and provisions it as a new revision, in one
   * transaction: a rollback that does not compile against today's workloads, or that is
   * refused by the impact check, changes nothing.
   */
  rollback(
    actor: string,
    n: number,
    note: string,
    options?: { confirm?: boolean },
  ): ProvisionResult;
  listRevisions(): RevisionRecord[];
  /** A revision with what it changed against the one before it (derived, never stored). */
  getRevision(
    n: number,
  ): RevisionWithSnapshot<Snapshot> & { changes: ReturnType<typeof diffStates> };
  /** Revision `from` against revision `to` or the draft, both on today's workloads. */
  revisionDiff(from: number, to: number | 'draft'): RevisionDiff;
  /** The workload's desired RuleSet. */
  getRuleSet(workload: string): RuleSet;
}

export interface RevisionsDeps {
  store: RevisionStore;
  db: Transactor;
  /** The draft's objects (a rollback replaces them) and workloads (to name a missing one). */
  drafts: Pick<PolicyAdminStore, 'replaceResources' | 'getWorkload'>;
  states: PolicyStates;
  publisher: RuleSetPublisher;
  gate: ImpactGate;
  audit: AuditLog;
}

export function createRevisionsService(deps: RevisionsDeps): RevisionsService {
  const { store, db, drafts, states, publisher, gate, audit } = deps;

  function provisionDraft(
    actor: string,
    note: string,
    confirmed: boolean,
    what: string,
  ): ProvisionResult {
    const state = states.draft();
    const next = (store.latestRevision()?.revision ?? 0) + 1;
    const ruleSets = publisher.compile(state, next, 'the policy does not compile');
    const report = gate.between(states.provisioned(state.workloads).state, state);
    gate.require(report, confirmed, what);
    // No await between compile and commit: nothing else can take revision `next` meanwhile.
    const { revision, changed } = db.tx(() => {
      const revision = store.addRevision(actor, note, state);
      const changed = publisher.save(ruleSets);
      audit.appendAudit({
        actor,
        action: 'revision.provision',
        target: String(revision),
        after: {
          note,
          changed: changed.map((rs) => rs.workloadId),
          confirmed,
          impact: report.summary,
        },
      });
      return { revision, changed };
    });
    publisher.push(changed);
    return {
      revision,
      changed: changed.map((rs) => rs.workloadId),
      unchanged: ruleSets.length - changed.length,
      impact: report,
    };
  }

  return {
    impact(req) {
      const workloads = states.workloads();
      const before = states.provisioned(workloads).state;
      const after = candidateState(states, req.target, workloads);
      compileState(after, 0, 'the target does not compile');
      return gate.between(before, after, { ...window(req), groupBy: req.groupBy });
    },
    provision: (actor, note, options = {}) =>
      provisionDraft(actor, note, options.confirm === true, 'provisioning the draft'),
    rollback(actor, n, note, options = {}) {
      return db.tx(() => {
        const r = store.getRevision<Snapshot>(n);
        if (!r) throw notFound(`revision ${n}`);
        drafts.replaceResources('ip_lists', r.snapshot.ipLists);
        drafts.replaceResources('services', r.snapshot.services);
        drafts.replaceResources('policies', r.snapshot.policies);
        audit.appendAudit({ actor, action: 'revision.rollback', target: String(n) });
        return provisionDraft(
          actor,
          note,
          options.confirm === true,
          `rolling back to revision ${n}`,
        );
      });
    },
    listRevisions: () => store.listRevisions(),
    getRevision(n) {
      const r = store.getRevision<Snapshot>(n);
      if (!r) throw notFound(`revision ${n}`);
      // Revision 0 is the empty state, so revision 1 lists everything it introduced.
      const changes = diffStates(states.atRevision(n - 1, []), states.atRevision(n, []));
      return { ...r, changes };
    },
    revisionDiff(from, to) {
      const workloads = states.workloads();
      const before = states.atRevision(from, workloads);
      const after = to === 'draft' ? states.draft() : states.atRevision(to, workloads);
      const next = (store.latestRevision()?.revision ?? 0) + 1;
      return {
        from,
        to,
        objects: diffStates(before, after),
        workloads: diffRuleSets(
          compileState(before, from, `revision ${from} does not compile`),
          compileState(
            after,
            to === 'draft' ? next : to,
            `${to === 'draft' ? 'the draft' : `revision ${to}`} does not compile`,
          ),
        ),
      };
    },
    getRuleSet(workload) {
      if (!drafts.getWorkload(workload)) throw notFound(`workload ${workload}`);
      const rs = publisher.desired(workload);
      if (!rs) throw notFound(`RuleSet of ${workload}`);
      return rs;
    },
  };
}

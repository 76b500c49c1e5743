// Revisions: the draft frozen into numbered, immutable revisions (provision, rollback) behind
// the impact gate (policy, labels and modes alike), their list, snapshots and diffs, the impact of
// a candidate on observed flows, and the desired rule set each workload gets (group form, from the
// publisher). Must not edit workloads or draft objects except when a rollback makes an old
// revision the draft again, or through the edit a one-workload provision is given.
import type { ImpactRequest, ImpactView, ProvisionResult, RevisionDiff } from '@bulkhead/api';
import { diffRuleSets, diffStates, type PolicyState, validateState } from '@bulkhead/policy';
import type { AddressGroup, GroupRuleSet } from '@bulkhead/proto';
import type { Logger } from 'pino';
import type { AuditLog } from '../access/store.js';
import { ControlPlaneError, invalid, notFound } from '../errors.js';
import type { PolicyAdminService } from '../policy-admin/service.js';
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
   * The shortcut for one workload: runs `edit` (its draft labels or mode), then provisions the
   * latest revision with just that workload's draft labels and mode, behind the same gate, in
   * one transaction (refused: nothing changes, not even the draft). Other draft edits stay.
   */
  provisionWorkload(
    actor: string,
    name: string,
    note: string,
    options?: { confirm?: boolean },
    edit?: () => void,
  ): ProvisionResult;
  /**
   * Makes revision n's policy, labels and modes the draft again (a workload created since n
   * gets the labels and mode it came with) and provisions it as a new revision, in one
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
  /**
   * Freezes the draft into a revision behind the same gate as `provision`, without publishing
   * it (a staged rollout publishes it); call inside the caller's transaction.
   */
  freeze(actor: string, note: string, options?: { confirm?: boolean }): Frozen;
  /** The workload's desired rule set in group form, with the groups it names. */
  getRuleSet(workload: string): { ruleSet: GroupRuleSet; groups: AddressGroup[] };
}

export interface RevisionsDeps {
  store: RevisionStore;
  db: Transactor;
  /** The draft (a rollback replaces it) and workloads (to name a missing one). */
  drafts: Pick<PolicyAdminService, 'restoreDraft' | 'getWorkload'>;
  states: PolicyStates;
  publisher: RuleSetPublisher;
  gate: ImpactGate;
  audit: AuditLog;
  log: Logger;
  /** A provision warns about each workload whose rule set passes this size (entries). */
  maxRuleSetEntries?: number;
  /** Why no revision may be made now (a staged rollout runs), or undefined. */
  busy?: () => string | undefined;
}

/** A revision frozen from the draft: its state and the impact the gate found. */
export type Frozen = { revision: number; state: PolicyState; impact: ImpactView };

/** `--max-ruleset-entries`' default. */
export const MAX_RULESET_ENTRIES = 200_000;

/** Refuses a state that is not valid policy input (nothing is stored); `base` as validateState's. */
function checkState(state: PolicyState, message: string, base?: PolicyState): void {
  const diags = validateState(state, base);
  if (diags.length > 0) throw invalid(message, diags);
}

export function createRevisionsService(deps: RevisionsDeps): RevisionsService {
  const { store, db, drafts, states, publisher, gate, audit, log } = deps;
  const maxEntries = deps.maxRuleSetEntries ?? MAX_RULESET_ENTRIES;

  /**
   * Freezes `state` into a revision; call inside the write's transaction, then `publish`.
   * `provisioned`: the provisioned state on `state`'s workloads, if the caller has it. It is the
   * gate's before and validation's base (which then checks where `state` holds other objects).
   */
  function provisionState(
    actor: string,
    note: string,
    state: PolicyState,
    confirmed: boolean,
    what: string,
    provisioned?: PolicyState,
  ): Frozen {
    const busy = deps.busy?.();
    if (busy) throw new ControlPlaneError('CONFLICT', `${what} is refused: ${busy}`);
    const before = provisioned ?? states.provisioned(state.workloads).state;
    checkState(state, 'the policy does not compile', before);
    const report = gate.between(before, state);
    gate.require(report, confirmed, what);
    const revision = store.addRevision(actor, note, state);
    audit.appendAudit({
      actor,
      action: 'revision.provision',
      target: String(revision),
      after: { note, confirmed, impact: report.summary },
    });
    return { revision, state, impact: report };
  }

  /** After the commit: the publisher sends what the revision changed; oversized rule sets warn. */
  function publish({ revision, state, impact }: Frozen): ProvisionResult {
    const changed = publisher.provisioned(state, revision);
    const warnings: NonNullable<ProvisionResult['warnings']> = [];
    for (const [workload, entries] of publisher.oversized(changed, maxEntries)) {
      const message = `the rule set of ${workload} has ${entries} entries (more than ${maxEntries})`;
      warnings.push({ workload, entries, message });
    }
    for (const w of warnings) log.warn({ ...w, revision }, 'large rule set');
    return {
      revision,
      changed,
      unchanged: state.workloads.length - changed.length,
      impact,
      ...(warnings.length > 0 ? { warnings } : {}),
    };
  }

  return {
    impact(req) {
      const workloads = states.workloads();
      const before = states.provisioned(workloads).state;
      const after = candidateState(states, req.target, workloads);
      checkState(after, 'the target does not compile');
      return gate.between(before, after, { ...window(req), groupBy: req.groupBy });
    },
    provision: (actor, note, options = {}) =>
      publish(
        db.tx(() =>
          provisionState(
            actor,
            note,
            states.draft(),
            options.confirm === true,
            'provisioning the draft',
          ),
        ),
      ),
    provisionWorkload(actor, name, note, options = {}, edit = () => {}) {
      const provisioned = db.tx(() => {
        edit();
        const { labels, mode } = drafts.getWorkload(name);
        const { state } = states.provisioned(states.workloads());
        // Labels and modes are not addresses: on these workloads the provisioned state is
        // `state` itself, and the candidate differs from it in this one place.
        const workloads = state.workloads.slice();
        const at = workloads.findIndex((w) => w.name === name);
        workloads[at] = { ...workloads[at]!, labels, mode };
        return provisionState(
          actor,
          note,
          { ...state, workloads },
          options.confirm === true,
          `provisioning workload ${name}`,
          state,
        );
      });
      return publish(provisioned);
    },
    rollback(actor, n, note, options = {}) {
      const provisioned = db.tx(() => {
        drafts.restoreDraft(states.atRevision(n, states.workloads()));
        audit.appendAudit({ actor, action: 'revision.rollback', target: String(n) });
        return provisionState(
          actor,
          note,
          states.draft(),
          options.confirm === true,
          `rolling back to revision ${n}`,
        );
      });
      return publish(provisioned);
    },
    listRevisions: () => store.listRevisions(),
    getRevision(n) {
      const r = store.getRevision<Snapshot>(n);
      if (!r) throw notFound(`revision ${n}`);
      // Revision 0 is the empty state, so revision 1 lists everything it introduced; a workload
      // shows when the revision changed its labels or mode.
      const on = r.snapshot.workloads;
      const changes = diffStates(states.atRevision(n - 1, on), states.atRevision(n, on));
      return { ...r, changes };
    },
    revisionDiff(from, to) {
      const workloads = states.workloads();
      const before = states.atRevision(from, workloads);
      const after = to === 'draft' ? states.draft() : states.atRevision(to, workloads);
      const next = (store.latestRevision()?.revision ?? 0) + 1;
      // The one path still on the first design's compiler: the per-workload effect in cells.
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
    freeze: (actor, note, options = {}) =>
      db.tx(() =>
        provisionState(actor, note, states.draft(), options.confirm === true, 'a staged rollout'),
      ),
    getRuleSet(workload) {
      if (!drafts.getWorkload(workload)) throw notFound(`workload ${workload}`);
      const form = publisher.groupForm(workload);
      if (!form) throw notFound(`rule set of ${workload}`);
      return form;
    },
  };
}

// The impact gate: what a candidate policy state does to the flows observed so far, and the
// refusal of a change that newly blocks some unless the admin confirmed it. Used by provision,
// rollback and the one-workload provision. Reads flows; must not write anything.
import type { ImpactView } from '@bulkhead/api';
import { type Decide, decideOn, impact, type PolicyState } from '@bulkhead/policy';
import { ControlPlaneError } from '../errors.js';
import type { VisibilityStore } from '../visibility/store.js';
import { createHasNoPolicy } from '../visibility/views.js';
import { DEFAULT_GROUP_BY, window } from '../visibility/window.js';
import { toImpactView } from './impact-view.js';

export interface ImpactGate {
  /**
   * Observed flows replayed against `before` and `after`; by default over all retained
   * history, since the dependency that causes an outage is often the one seen once a month.
   */
  between(
    before: PolicyState,
    after: PolicyState,
    q?: { since?: string; until?: string; groupBy?: string[] },
  ): ImpactView;
  /** Refuses a change that newly blocks observed flows unless the admin confirmed it. */
  require(report: ImpactView, confirm: boolean, what: string): void;
}

/** States whose decisions are kept: the provisioned one and a candidate. */
const KEPT = 2;

export function createImpactGate(flows: Pick<VisibilityStore, 'observedFlows'>): ImpactGate {
  /**
   * Decisions by what they depend on: the policy objects and the workloads' names, labels and
   * addresses, not their modes. So the provisioned side is reused until a revision or a
   * workload changes it, the draft's until it is edited, and a mode switch shares one for both
   * sides. A calculator per state, so at most KEPT, least recently used dropped.
   */
  const kept = new Map<string, Decide>();
  function decisions(state: PolicyState): Decide {
    const { ipLists, services, policies, workloads } = state;
    const key = JSON.stringify([
      ipLists,
      services,
      policies,
      workloads.map((w) => [w.name, w.labels, w.addresses]),
    ]);
    const decide = kept.get(key) ?? decideOn(state);
    kept.delete(key);
    kept.set(key, decide);
    if (kept.size > KEPT) kept.delete(kept.keys().next().value!);
    return decide;
  }
  return {
    between(before, after, q = {}) {
      // Decisions first: the database is busy while the rows stream in.
      const decide = { before: decisions(before), after: decisions(after) };
      return toImpactView(
        impact(before, after, flows.observedFlows(window(q)), {
          groupBy: q.groupBy ?? DEFAULT_GROUP_BY,
          decide,
          // Telemetry is stored as agents sent it: a row may hold something else.
          skipUnparsable: true,
        }),
        createHasNoPolicy(after),
      );
    },
    require(report, confirm, what) {
      const n = report.summary.newlyBlocked;
      if (n === 0 || confirm) return;
      const details = report.groups.flatMap((g, i) =>
        g.change === 'newly-blocked'
          ? [
              {
                path: `impact.groups[${i}]`,
                message: `${g.src} -> ${g.dst} ${g.protocol}${g.port ? `/${g.port}` : ''} would be blocked (${g.connections} connections seen)`,
              },
            ]
          : [],
      );
      throw new ControlPlaneError(
        'IMPACT_CONFIRMATION_REQUIRED',
        `${what} would newly block ${n} observed flow${n === 1 ? '' : 's'}; confirm to proceed`,
        { details, impact: report },
      );
    },
  };
}

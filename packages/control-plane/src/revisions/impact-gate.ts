// The impact gate: what a candidate policy state does to the flows observed so far, and the
// refusal of a change that newly blocks some unless the admin confirmed it. Used by provision,
// rollback and the one-workload provision. Reads flows; must not write anything.
import type { ImpactView } from '@bulkhead/api';
import { type Decide, impactOn, type PolicyState } from '@bulkhead/policy';
import { ControlPlaneError } from '../errors.js';
import { createHasNoPolicy } from '../visibility/views.js';
import { DEFAULT_GROUP_BY, window } from '../visibility/window.js';
import { createDecisions } from './decisions.js';
import { createImpactFlows, type ImpactFlowSource } from './impact-flows.js';
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

export function createImpactGate(store: ImpactFlowSource): ImpactGate {
  /**
   * Decisions for the provisioned state and a candidate: the provisioned side is reused until a
   * revision or a workload changes it, and a candidate is derived from the calculator of the one
   * before it (revisions/decisions.ts). None is built when no flow was observed.
   */
  const decisions = createDecisions();
  /** The observed flows, kept between questions (revisions/impact-flows.ts). */
  const flows = createImpactFlows(store);
  /** A report with no flows asks nothing: no calculator is built for it. */
  const unasked: Decide = () => {
    throw new Error('no flow to decide');
  };
  return {
    between(before, after, q = {}) {
      const { fold, memo } = flows.of(window(q));
      let decide = { before: unasked, after: unasked };
      if (fold.size > 0) {
        const b = decisions.of(before);
        decide = { before: b, after: decisions.of(after, b) };
      }
      const groupBy = q.groupBy ?? DEFAULT_GROUP_BY;
      return toImpactView(
        impactOn(before, after, fold, { groupBy, decide, memo }),
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

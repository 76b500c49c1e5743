// The impact gate: what a candidate policy state does to the flows observed so far, and the
// refusal of a change that newly blocks some unless the admin confirmed it. Used by provision,
// rollback and the one-workload provision. Reads flows; must not write anything.
import type { ImpactView } from '@bulkhead/api';
import { type Decide, impact, type PolicyState } from '@bulkhead/policy';
import { ControlPlaneError } from '../errors.js';
import type { VisibilityStore } from '../visibility/store.js';
import { createHasNoPolicy } from '../visibility/views.js';
import { DEFAULT_GROUP_BY, window } from '../visibility/window.js';
import { createDecisions } from './decisions.js';
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

export function createImpactGate(flows: Pick<VisibilityStore, 'observedFlows'>): ImpactGate {
  /**
   * Decisions for the provisioned state and a candidate: the provisioned side is reused until a
   * revision or a workload changes it, and a candidate is derived from the calculator of the one
   * before it (revisions/decisions.ts). None is built when no flow was observed.
   */
  const decisions = createDecisions();
  /** A report with no flows asks nothing: no calculator is built for it. */
  const unasked: Decide = () => {
    throw new Error('no flow to decide');
  };
  return {
    between(before, after, q = {}) {
      const rows = flows.observedFlows(window(q));
      try {
        const first = rows.next();
        let decide = { before: unasked, after: unasked };
        if (!first.done) {
          // Built in memory (revisions/decisions.ts reads nothing) while the rows wait.
          const b = decisions.of(before);
          decide = { before: b, after: decisions.of(after, b) };
        }
        return toImpactView(
          impact(before, after, first.done ? [] : prepend(first.value, rows), {
            groupBy: q.groupBy ?? DEFAULT_GROUP_BY,
            decide,
            // Telemetry is stored as agents sent it: a row may hold something else.
            skipUnparsable: true,
          }),
          createHasNoPolicy(after),
        );
      } finally {
        // The database is busy until the read ends, also when a state does not load.
        rows.return?.();
      }
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

function* prepend<T>(first: T, rest: Iterator<T>): Generator<T> {
  yield first;
  for (let r = rest.next(); !r.done; r = rest.next()) yield r.value;
}

// The impact gate: what a candidate policy state does to the flows observed so far, and the
// refusal of a change that newly blocks some unless the admin confirmed it. Used by provision,
// rollback and the one-workload provision. Reads flows; must not write anything.
import type { ImpactView } from '@bulkhead/api';
import { type Decide, impact, type PolicyState, parseAddress } from '@bulkhead/policy';
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

export function createImpactGate(flows: Pick<VisibilityStore, 'queryFlows'>): ImpactGate {
  /**
   * Decisions for the provisioned state and a candidate: the provisioned side is reused until a
   * revision or a workload changes it, and a candidate is derived from the calculator of the one
   * before it (revisions/decisions.ts). Built on the first flow asked about: none without flows.
   */
  const decisions = createDecisions();
  function lazily(before: PolicyState, after: PolicyState): { before: Decide; after: Decide } {
    let sides: { before: Decide; after: Decide } | undefined;
    const both = () => {
      if (sides) return sides;
      const b = decisions.of(before);
      sides = { before: b, after: decisions.of(after, b) };
      return sides;
    };
    return { before: (...a) => both().before(...a), after: (...a) => both().after(...a) };
  }
  return {
    between(before, after, q = {}) {
      // Rows share their addresses: each text is checked once.
      const valid = new Map<string, boolean>();
      const ok = (text: string) => {
        let v = valid.get(text);
        if (v === undefined) {
          v = parseAddress(text) !== undefined;
          valid.set(text, v);
        }
        return v;
      };
      // The report does not depend on the rows' order: SQLite need not sort them.
      const observed = flows
        .queryFlows({ ...window(q), unordered: true })
        .filter((r) => ok(r.src) && ok(r.dst));
      return toImpactView(
        impact(before, after, observed, {
          groupBy: q.groupBy ?? DEFAULT_GROUP_BY,
          decide: lazily(before, after),
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

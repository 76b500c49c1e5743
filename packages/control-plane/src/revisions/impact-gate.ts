// The impact gate: what a candidate policy state does to the flows observed so far, and the
// refusal of a change that newly blocks some unless the admin confirmed it. Used by provision,
// rollback and the one-workload provision. Reads flows; must not write anything.
import type { ImpactView } from '@bulkhead/api';
import { type Decide, decideOn, impact, type PolicyState, parseAddress } from '@bulkhead/policy';
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

export function createImpactGate(flows: Pick<VisibilityStore, 'queryFlows'>): ImpactGate {
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
  /** Decisions built on the first question: with no flows observed, none are. */
  function lazily(state: PolicyState): Decide {
    let decide: Decide | undefined;
    return (...args) => {
      decide ??= decisions(state);
      return decide(...args);
    };
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
          decide: { before: lazily(before), after: lazily(after) },
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

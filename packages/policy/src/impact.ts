// Impact analysis: replay observed flows against the policy before and after a change, so
// an operator sees which connections a change would cut before enforcing it.

import { type Decision, type DirectionName, evaluatePolicy } from './evaluate.js';
import type { PolicyState } from './model.js';

/** One observed connection of a workload (peer = source for ingress, destination for egress). */
export interface Flow {
  workload: string;
  direction: DirectionName;
  peer: string;
  protocol: number;
  port?: number;
}

export interface FlowChange {
  flow: Flow;
  /** `denied`: allowed before, denied after; `allowed`: the reverse; `rule`: same verdict, other deciding rule. */
  change: 'denied' | 'allowed' | 'rule';
  before: Decision;
  after: Decision;
}

/**
 * The flows whose verdict or deciding rule differs between `before` and `after`, in input
 * order. Flows of workloads missing from either state are skipped: there is nothing to compare.
 */
export function analyzeImpact(
  before: PolicyState,
  after: PolicyState,
  flows: readonly Flow[],
): FlowChange[] {
  const known = (state: PolicyState) => new Set(state.workloads.map((w) => w.name));
  const inBefore = known(before);
  const inAfter = known(after);
  const out: FlowChange[] = [];
  for (const flow of flows) {
    if (!inBefore.has(flow.workload) || !inAfter.has(flow.workload)) continue;
    const args = [flow.workload, flow.direction, flow.peer, flow.protocol, flow.port] as const;
    const was = evaluatePolicy(before, ...args);
    const now = evaluatePolicy(after, ...args);
    if (was.action === now.action && was.ruleId === now.ruleId) continue;
    const change =
      was.action === now.action ? 'rule' : now.action === 'deny' ? 'denied' : 'allowed';
    out.push({ flow, change, before: was, after: now });
  }
  return out;
}

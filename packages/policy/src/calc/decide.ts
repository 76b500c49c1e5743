// "Is this connection allowed?" for many connections of one policy state, as impact analysis
// asks it for every observed flow: the calculator's group form (each workload's rules, shared
// groups) with group membership by binary search, so a question costs its workload's rules,
// not the fleet's policies times its workloads as `evaluatePolicy` does. Same answers as
// `evaluatePolicy` on a valid state (the impact property test compares them). Pure.

import { PolicyError } from '../errors.js';
import type { Decision, DirectionName } from '../evaluate.js';
import type { IpAddress, IpRange } from '../ip.js';
import type { PolicyState } from '../model.js';
import { type Calculator, createCalculator } from './calculator.js';
import { decideGroups, missing } from './evaluate.js';

/** The verdict and deciding rule for a connection of `workload` (checked input). */
export type Decide = (
  workload: string,
  direction: DirectionName,
  peer: IpAddress,
  protocol: number,
  port: number,
) => Decision;

/** Whether sorted, disjoint ranges (IPv4 first, as the calculator keeps them) hold `a`. */
function holds(ranges: readonly IpRange[], a: IpAddress): boolean {
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const r = ranges[mid]!;
    if (r.family < a.family || (r.family === a.family && r.to < a.value)) lo = mid + 1;
    else hi = mid;
  }
  const r = ranges[lo];
  return r !== undefined && r.family === a.family && r.from <= a.value;
}

/**
 * Decisions on what `calc` holds now; ask them before it changes again (the answers read its
 * current groups).
 */
export function createDecider(calc: Pick<Calculator, 'ruleSet' | 'group'>): Decide {
  return (workload, direction, peer, protocol, port) => {
    const ruleSet = calc.ruleSet(workload);
    if (!ruleSet) {
      throw new PolicyError('POLICY_UNKNOWN_WORKLOAD', `unknown workload '${workload}'`);
    }
    const inGroup = (id: string) => holds(calc.group(id) ?? missing(ruleSet, id), peer);
    return decideGroups(ruleSet, inGroup, direction, peer, protocol, port);
  };
}

/** Decisions on a valid state, through a calculator of its own (a cold load). */
export function decideOn(state: PolicyState): Decide {
  const calc = createCalculator();
  const { diagnostics } = calc.load(state);
  if (diagnostics.length > 0) {
    throw new PolicyError('POLICY_INVALID', `the state is not valid: ${diagnostics[0]!.message}`);
  }
  return createDecider(calc);
}

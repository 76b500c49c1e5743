// "Is this connection allowed?" for many connections of one policy state, as impact analysis
// asks it for every observed flow: the calculator's group form (each workload's rules, shared
// groups) with group membership by binary search, so a question costs its workload's rules,
// not the fleet's policies times its workloads as `evaluatePolicy` does. Same answers as
// `evaluatePolicy` on a valid state (the impact property test compares them). Pure.

import type { GroupRuleSet } from '@bulkhead/proto';
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

type Source = Pick<Calculator, 'ruleSet' | 'group'>;

/** The calculator behind each decider `createDecider` made. */
const sources = new WeakMap<Decide, Source>();

/**
 * Decisions on what `calc` holds now; ask them before it changes again (the answers read its
 * current groups).
 */
export function createDecider(calc: Source): Decide {
  // The question being answered, read by one `inGroup` rather than a closure per question
  // (impact asks a million); a question never asks another.
  let ruleSet: GroupRuleSet;
  let peer: IpAddress;
  const inGroup = (id: string) => holds(calc.group(id) ?? missing(ruleSet, id), peer);
  const decide: Decide = (workload, direction, address, protocol, port) => {
    const found = calc.ruleSet(workload);
    if (!found) {
      throw new PolicyError('POLICY_UNKNOWN_WORKLOAD', `unknown workload '${workload}'`);
    }
    ruleSet = found;
    peer = address;
    return decideGroups(ruleSet, inGroup, direction, address, protocol, port);
  };
  sources.set(decide, calc);
  return decide;
}

const sameRanges = (a: readonly IpRange[] | undefined, b: readonly IpRange[] | undefined) =>
  a === b ||
  (a !== undefined &&
    b !== undefined &&
    a.length === b.length &&
    a.every((r, i) => r.family === b[i]!.family && r.from === b[i]!.from && r.to === b[i]!.to));

/**
 * For two deciders of `createDecider`, the workloads both decide alike for: the same rule set
 * (by hash) over groups of the same contents. A change touches few workloads, so impact
 * analysis asks the others once for both states. Undefined for other deciders.
 */
export function alikeFor(a: Decide, b: Decide): ((workload: string) => boolean) | undefined {
  const [x, y] = [sources.get(a), sources.get(b)];
  if (x === undefined || y === undefined) return undefined;
  const groups = new Map<string, boolean>();
  const sameGroup = (id: string) => {
    let same = groups.get(id);
    if (same === undefined) {
      same = sameRanges(x.group(id), y.group(id));
      groups.set(id, same);
    }
    return same;
  };
  const workloads = new Map<string, boolean>();
  return (workload) => {
    let alike = workloads.get(workload);
    if (alike === undefined) {
      const [r, s] = [x.ruleSet(workload), y.ruleSet(workload)];
      alike =
        r !== undefined &&
        s !== undefined &&
        r.hash === s.hash &&
        r.rules.every((rule) => rule.groups.every(sameGroup));
      workloads.set(workload, alike);
    }
    return alike;
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

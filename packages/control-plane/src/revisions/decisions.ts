// Decisions per policy state for the impact gate: a calculator per kept state (the provisioned
// one and a candidate). A state not kept is derived from a kept calculator the caller does not
// hold, by feeding it what differs (the calculator's own incremental changes, which the
// calculator's property test checks against a cold load), so a candidate one label away from
// the last one costs that label, not a load of the fleet. Must not read flows or write anything.
import {
  type Calculator,
  createCalculator,
  createDecider,
  type Decide,
  PolicyError,
  type PolicyState,
  type Workload,
} from '@bulkhead/policy';
import { diffNamed, same } from '../rulesets/named-diff.js';

export interface Decisions {
  /**
   * How `state` decides. `keep`: a decider this call must leave valid (the other side of the
   * same report). Answers read the calculator as it is: ask them before the next call.
   */
  of(state: PolicyState, keep?: Decide): Decide;
}

type Entry = { state: PolicyState; calc: Calculator; decide: Decide };

/** Feeds `calc` (holding `from`) what `to` changes; false when it refused something. */
function feed(calc: Calculator, from: PolicyState, to: PolicyState): boolean {
  const services = diffNamed(from.services, to.services);
  const ipLists = diffNamed(from.ipLists, to.ipLists);
  const policies = diffNamed(from.policies, to.policies);
  const workloads = diffNamed(from.workloads, to.workloads);
  // What a policy names exists before it, and goes after it.
  const results = [
    ...services.upserts.map((s) => () => calc.upsertService(s)),
    ...ipLists.upserts.map((l) => () => calc.upsertIpList(l)),
    ...policies.upserts.map((p) => () => calc.upsertPolicy(p)),
    ...workloads.upserts.map((w) => () => calc.upsertWorkload(w)),
    ...workloads.deletes.map((n) => () => calc.deleteWorkload(n)),
    ...policies.deletes.map((n) => () => calc.deletePolicy(n)),
    ...services.deletes.map((n) => () => calc.deleteService(n)),
    ...ipLists.deletes.map((n) => () => calc.deleteIpList(n)),
  ];
  return results.every((change) => change().diagnostics.length === 0);
}

/** Decisions do not depend on modes (impact reads those from the states): one serves both. */
const decidesAlike = (a: Workload, b: Workload) =>
  a === b || (same(a.labels, b.labels) && same(a.addresses, b.addresses));

const unchanged = (a: PolicyState, b: PolicyState) =>
  a === b ||
  ([['services'], ['ipLists'], ['policies'], ['workloads', decidesAlike]] as const).every(
    ([k, equal]) => {
      const d = diffNamed<{ name: string }>(a[k], b[k], equal as never);
      return d.upserts.length === 0 && d.deletes.length === 0;
    },
  );

export function createDecisions(kept = 2): Decisions {
  /** Least recently used first. */
  const entries: Entry[] = [];
  const use = (e: Entry) => {
    entries.splice(entries.indexOf(e), 1);
    entries.push(e);
    return e.decide;
  };
  return {
    of(state, keep) {
      const hit = entries.find((e) => unchanged(e.state, state));
      if (hit) return use(hit);
      const spare = entries.length >= kept ? entries.find((e) => e.decide !== keep) : undefined;
      if (spare) {
        if (feed(spare.calc, spare.state, state)) {
          spare.state = state;
          // A decider answers for one state (impact keeps its answers by decider).
          spare.decide = createDecider(spare.calc);
          return use(spare);
        }
        entries.splice(entries.indexOf(spare), 1);
      }
      const calc = createCalculator();
      const { diagnostics } = calc.load(state);
      if (diagnostics.length > 0) {
        throw new PolicyError(
          'POLICY_INVALID',
          `the state is not valid: ${diagnostics[0]!.message}`,
        );
      }
      const e = { state, calc, decide: createDecider(calc) };
      entries.push(e);
      if (entries.length > kept)
        entries.splice(
          entries.findIndex((x) => x.decide !== keep),
          1,
        );
      return e.decide;
    },
  };
}

// The fast decisions impact analysis uses (`decideOn`, group form) against the model's
// (`evaluatePolicy`, the default): the same impact report, change by change, on random states
// and random observed flows, including flows the change moves and flows no workload owns.

import { describe, expect, it } from 'vitest';
import { evaluatePolicy } from '../evaluate.js';
import { impact } from '../impact.js';
import type { ObservedFlow } from '../impact-flows.js';
import { formatAddress, parseAddress } from '../ip.js';
import type { PolicyState } from '../model.js';
import {
  applyChange,
  PORT_LO,
  prng,
  type Rng,
  randomChange,
  randomState,
  V4_BASE,
  V6_BASE,
} from '../random.test-util.js';
import { validateState } from '../validate-state.js';
import { createDecider, decideOn } from './decide.js';

const STATES = Number(process.env.POLICY_PROPERTY_STATES ?? 150);
const PROTOCOLS = [6, 17, 132, 1, 58, 0, 47];

function address(rng: Rng, state: PolicyState): string {
  const own = state.workloads.flatMap((w) => w.addresses);
  if (own.length > 0 && rng.chance(0.6)) return rng.pick(own);
  const family = rng.chance(0.55) ? 4 : 6;
  return formatAddress(family, (family === 4 ? V4_BASE : V6_BASE) + BigInt(rng.int(0, 34)));
}

function flows(rng: Rng, state: PolicyState, n: number): ObservedFlow[] {
  return Array.from({ length: n }, () => {
    const flow: ObservedFlow = {
      src: address(rng, state),
      dst: address(rng, state),
      protocol: rng.pick(PROTOCOLS),
      port: rng.pick([0, 1, 65535, ...Array.from({ length: 13 }, (_, k) => PORT_LO - 1 + k)]),
      connections: rng.int(1, 5),
    };
    if (rng.chance(0.5)) {
      flow.workload = rng.pick(state.workloads).name;
      flow.direction = rng.chance(0.5) ? 'ingress' : 'egress';
    }
    return flow;
  });
}

describe('impact on the group form', () => {
  it(`reports what the model reports, on ${STATES} random changes`, () => {
    let reported = 0;
    let compared = 0;
    for (let seed = 1; compared < STATES; seed++) {
      const rng = prng(seed);
      const before = randomState(rng);
      let after = before;
      for (let i = rng.int(1, 3); i > 0; i--) after = applyChange(after, randomChange(rng, after));
      if (validateState(after).length > 0) continue;
      const observed = flows(rng, before, 60);
      const old = impact(before, after, observed);
      const fast = impact(before, after, observed, {
        decide: { before: decideOn(before), after: decideOn(after) },
      });
      expect(fast, `seed ${seed}`).toEqual(old);
      compared++;
      reported += old.groups.length;
    }
    // The reports are not all empty: the comparison covers changed flows.
    expect(reported).toBeGreaterThan(STATES);
  }, 120_000);

  it('answers as evaluatePolicy for every workload, and the check has teeth', () => {
    let differs = 0;
    for (let seed = 500; seed < 560; seed++) {
      const rng = prng(seed);
      const state = randomState(rng);
      const decide = decideOn(state);
      const other = randomState(prng(seed + 1000));
      const wrong = validateState(other).length === 0 ? decideOn(other) : undefined;
      for (let i = 0; i < 100; i++) {
        const w = rng.pick(state.workloads).name;
        const direction = rng.chance(0.5) ? 'ingress' : 'egress';
        const peer = address(rng, state);
        const protocol = rng.pick(PROTOCOLS);
        const port = rng.int(PORT_LO - 1, PORT_LO + 12);
        const model = evaluatePolicy(state, w, direction, peer, protocol, port);
        expect(decide(w, direction, parseAddress(peer)!, protocol, port)).toEqual(model);
        if (!wrong || !other.workloads.some((o) => o.name === w)) continue;
        const theirs = wrong(w, direction, parseAddress(peer)!, protocol, port);
        if (JSON.stringify(theirs) !== JSON.stringify(model)) differs++;
      }
    }
    expect(differs).toBeGreaterThan(0);
  });

  it('refuses a workload the state does not hold', () => {
    const decide = createDecider({ ruleSet: () => undefined, group: () => undefined });
    expect(() => decide('w9', 'ingress', parseAddress('10.0.0.1')!, 6, 80)).toThrow(
      expect.objectContaining({ code: 'POLICY_UNKNOWN_WORKLOAD' }),
    );
  });
});

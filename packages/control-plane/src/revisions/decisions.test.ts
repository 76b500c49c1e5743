import { type Decide, decideOn, type PolicyState, parseAddress } from '@bulkhead/policy';
import { describe, expect, it } from 'vitest';
import { prng } from '../random.test-util.js';
import { createDecisions } from './decisions.js';
import { change, PORTS, policy, workload } from './random-states.test-util.js';

/** Every answer of `decide` on `state`'s workloads, peers 10.0.0.0-9 and the ports in use. */
function answers(decide: Decide, state: PolicyState): string {
  const all = state.workloads.flatMap((w) =>
    Array.from({ length: 10 }, (_, a) => parseAddress(`10.0.0.${a}`)!).flatMap((peer) =>
      PORTS.flatMap((port) =>
        (['ingress', 'egress'] as const).map((d) => decide(w.name, d, peer, 6, port)),
      ),
    ),
  );
  return JSON.stringify(all);
}

describe('impact decisions', () => {
  it('derived from the one before decide as a fresh calculator does', () => {
    let derived = 0;
    for (let seed = 1; seed <= 10; seed++) {
      const rng = prng(seed);
      const decisions = createDecisions();
      let provisioned: PolicyState = {
        workloads: Array.from({ length: 5 }, (_, i) => workload(rng, i)),
        ipLists: [],
        services: [],
        policies: Array.from({ length: 3 }, (_, i) => policy(rng, i)),
      };
      for (let step = 0; step < 10; step++) {
        const candidate = change(rng, provisioned);
        // As the gate asks: the provisioned side first, kept while the candidate's is made.
        const before = decisions.of(provisioned);
        const after = decisions.of(candidate, before);
        if (after !== before) derived++;
        const where = `seed ${seed} step ${step}`;
        expect(answers(before, provisioned), where).toEqual(
          answers(decideOn(provisioned), provisioned),
        );
        expect(answers(after, candidate), where).toEqual(answers(decideOn(candidate), candidate));
        if (rng.int(3) > 0) provisioned = candidate; // provisioned, or refused and tried again
      }
    }
    expect(derived).toBeGreaterThan(30);
  });

  it('gives a state derived from a kept calculator a decider of its own', () => {
    // Impact keeps the state before's answers by decider (policy's ImpactMemo): a decider
    // that went on answering for another state would serve stale answers.
    const rng = prng(7);
    const decisions = createDecisions(1);
    let state: PolicyState = {
      workloads: Array.from({ length: 5 }, (_, i) => workload(rng, i)),
      ipLists: [],
      services: [],
      policies: Array.from({ length: 3 }, (_, i) => policy(rng, i)),
    };
    const seen = new Set([decisions.of(state)]);
    for (let step = 0; step < 5; step++) {
      state = change(rng, { ...state, policies: [...state.policies, policy(rng, 3 + step)] });
      const decide = decisions.of(state);
      expect(seen.has(decide)).toBe(false);
      seen.add(decide);
    }
  });
});

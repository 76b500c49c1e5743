import {
  type Decide,
  decideOn,
  type Policy,
  type PolicyState,
  parseAddress,
  type Workload,
} from '@bulkhead/policy';
import { describe, expect, it } from 'vitest';
import { prng, type Rng } from '../random.test-util.js';
import { createDecisions } from './decisions.js';

const APPS = ['web', 'db', 'batch'];
const PORTS = [22, 80, 5432];
const mode = { ingress: 'enforce', egress: 'monitor' } as const;
const workload = (rng: Rng, i: number): Workload => ({
  name: `w${i}`,
  addresses: [`10.0.0.${1 + rng.int(8)}`],
  labels: { app: rng.pick(APPS), env: rng.pick(['prod', 'staging']) },
  mode,
});
const policy = (rng: Rng, i: number): Policy => ({
  name: `p${i}`,
  scope: { matchLabels: { app: rng.pick(APPS) } },
  ingress: [
    {
      action: rng.pick(['allow', 'allow', 'deny'] as const),
      peers: [
        rng.int(2)
          ? { selector: { matchLabels: { env: rng.pick(['prod', 'staging']) } } }
          : { cidr: `10.0.0.${2 * rng.int(4)}/31` },
      ],
      services: [{ protocol: 'tcp', port: rng.pick(PORTS) }],
    },
  ],
});

/** A few labels, addresses, policies changed, added or removed; the rest shared, as a provision does. */
function change(rng: Rng, s: PolicyState): PolicyState {
  const workloads = [...s.workloads];
  const policies = [...s.policies];
  for (let k = 0; k < 1 + rng.int(2); k++) {
    const i = rng.int(6);
    const at = workloads.findIndex((w) => w.name === `w${i}`);
    const p = policies.findIndex((x) => x.name === `p${i % 3}`);
    switch (rng.int(5)) {
      case 0:
        if (at >= 0) workloads.splice(at, 1);
        break;
      case 1:
        if (p >= 0) policies.splice(p, 1);
        else policies.push(policy(rng, i % 3));
        break;
      case 2:
        if (p >= 0) policies[p] = policy(rng, i % 3);
        break;
      case 3:
        // A mode alone: decisions do not change.
        if (at >= 0)
          workloads[at] = { ...workloads[at]!, mode: { ingress: 'monitor', egress: 'monitor' } };
        break;
      default:
        if (at >= 0) workloads[at] = { ...workload(rng, i), addresses: workloads[at]!.addresses };
        else workloads.push(workload(rng, i));
    }
  }
  return { ...s, workloads, policies };
}

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
});

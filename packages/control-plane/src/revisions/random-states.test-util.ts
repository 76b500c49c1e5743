// Random policy states for this directory's property tests: a few workloads on 10.0.0.0-9,
// policies on three apps, and `change`, what a provision does to a state.
import type { Policy, PolicyRule, PolicyState, Workload } from '@bulkhead/policy';
import type { Rng } from '../random.test-util.js';

const APPS = ['web', 'db', 'batch'];
export const PORTS = [22, 80, 5432];
const mode = { ingress: 'enforce', egress: 'monitor' } as const;
export const workload = (rng: Rng, i: number): Workload => ({
  name: `w${i}`,
  addresses: [`10.0.0.${1 + rng.int(8)}`],
  labels: { app: rng.pick(APPS), env: rng.pick(['prod', 'staging']) },
  mode,
});
const rule = (rng: Rng): PolicyRule => ({
  action: rng.pick(['allow', 'allow', 'deny'] as const),
  peers: [
    rng.pick([
      { selector: { matchLabels: { env: rng.pick(['prod', 'staging']) } } },
      { cidr: `10.0.0.${2 * rng.int(4)}/31` },
      { cidr: '10.0.0.0/28' },
    ]),
  ],
  services: [{ protocol: 'tcp', port: rng.pick(PORTS) }],
});

/** Rules both ways, so that flows are allowed and denied at both of their ends. */
export const policy = (rng: Rng, i: number): Policy => ({
  name: `p${i}`,
  scope: { matchLabels: { app: rng.pick(APPS) } },
  ingress: [rule(rng), rule(rng)],
  egress: [rule(rng)],
});

/** A few labels, addresses, policies changed, added or removed; the rest shared, as a provision does. */
export function change(rng: Rng, s: PolicyState): PolicyState {
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

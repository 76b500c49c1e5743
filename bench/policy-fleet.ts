// The benchmark policy state of the compile and calc benches: `apps` applications, each with
// one policy of five rules (web and api peers, a corp IP list with an exception, a staging deny,
// egress to everything on http), and `workloads` hosts spread over the apps and the roles.
import type { PolicyState } from '@bulkhead/policy';

export const ROLES = ['web', 'api', 'db', 'cache'];

export function fleet(apps: number, workloads: number): PolicyState {
  const state: PolicyState = { workloads: [], ipLists: [], services: [], policies: [] };
  state.services.push({
    name: 'http',
    ports: [
      { protocol: 'tcp', port: 80 },
      { protocol: 'tcp', port: 443 },
    ],
  });
  state.services.push({ name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] });
  state.ipLists.push({ name: 'corp', cidrs: ['10.0.0.0/8'], except: ['10.1.0.0/16'] });
  let n = 0;
  for (let a = 0; a < apps; a++) {
    const hosts = Math.floor(((a + 1) * workloads) / apps) - Math.floor((a * workloads) / apps);
    // Role by role, so that hosts of one role get adjacent addresses.
    for (const [r, role] of ROLES.entries()) {
      for (let k = 0; k * ROLES.length + r < hosts; k++, n++) {
        state.workloads.push({
          name: `app${a}-${role}-${k}`,
          addresses: [
            `172.${16 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`,
            `fd00::${n.toString(16)}`,
          ],
          labels: { app: `app${a}`, role, env: k % 2 ? 'prod' : 'staging' },
          mode: { ingress: 'enforce', egress: 'monitor' },
        });
      }
    }
    state.policies.push(appPolicy(a));
  }
  return state;
}

/** App `a`'s policy; `sshPort` lets a benchmark change one rule. */
export function appPolicy(a: number, sshPort = 22): PolicyState['policies'][number] {
  return {
    name: `app${a}`,
    scope: { matchLabels: { app: `app${a}` } },
    ingress: [
      {
        action: 'allow',
        peers: [{ selector: { matchLabels: { app: `app${a}`, role: 'web' } } }],
        services: ['http'],
      },
      {
        action: 'allow',
        peers: [{ selector: { matchLabels: { app: `app${a}`, role: 'api' } } }],
        services: ['pg'],
      },
      {
        action: 'allow',
        peers: [{ ipList: 'corp' }],
        services: [{ protocol: 'tcp', port: sshPort }],
      },
      {
        action: 'deny',
        peers: [
          { selector: { matchExpressions: [{ key: 'env', operator: 'In', values: ['staging'] }] } },
        ],
        services: ['pg'],
      },
    ],
    egress: [{ action: 'allow', peers: [{ selector: {} }], services: ['http'] }],
  };
}

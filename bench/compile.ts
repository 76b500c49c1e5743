// Compiler scaling: how long one provision's compile takes for fleets of growing size, and how
// many map elements the busiest host gets. Prints one JSON object.
import { compile, type PolicyState } from '@bulkhead/policy';

function fleet(apps: number, hostsPerRole: number): PolicyState {
  const roles = ['web', 'api', 'db', 'cache'];
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
    for (const role of roles) {
      for (let h = 0; h < hostsPerRole; h++, n++) {
        state.workloads.push({
          name: `app${a}-${role}-${h}`,
          addresses: [
            `172.${16 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`,
            `fd00::${n.toString(16)}`,
          ],
          labels: { app: `app${a}`, role, env: h % 2 ? 'prod' : 'staging' },
          mode: { ingress: 'enforce', egress: 'monitor' },
        });
      }
    }
    state.policies.push({
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
        { action: 'allow', peers: [{ ipList: 'corp' }], services: [{ protocol: 'tcp', port: 22 }] },
        {
          action: 'deny',
          peers: [
            {
              selector: { matchExpressions: [{ key: 'env', operator: 'In', values: ['staging'] }] },
            },
          ],
          services: ['pg'],
        },
      ],
      egress: [{ action: 'allow', peers: [{ selector: {} }], services: ['http'] }],
    });
  }
  return state;
}

const results = [];
for (const [apps, perRole] of [
  [10, 5],
  [50, 5],
  [100, 10],
] as const) {
  const state = fleet(apps, perRole);
  compile(state, 1); // warm up
  const runs = 3;
  const t0 = performance.now();
  let out = compile(state, 1);
  for (let i = 1; i < runs; i++) out = compile(state, 1);
  const ms = (performance.now() - t0) / runs;
  if (out.diagnostics.length) throw new Error(JSON.stringify(out.diagnostics.slice(0, 3)));
  const entries = out.ruleSets.map((r) => r.entries.length);
  results.push({
    workloads: state.workloads.length,
    policies: state.policies.length,
    compileMs: Math.round(ms),
    totalEntries: entries.reduce((a, b) => a + b, 0),
    maxEntriesPerHost: Math.max(...entries),
  });
}
console.log(JSON.stringify({ compile: results }));

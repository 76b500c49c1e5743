// Compiler scaling: how long one provision's compile takes for fleets of growing size, and how
// many map elements the busiest host gets. Prints one JSON object.
import { compile } from '@bulkhead/policy';
import { fleet } from './policy-fleet.js';

const results = [];
for (const [apps, perRole] of [
  [10, 5],
  [50, 5],
  [100, 10],
] as const) {
  const state = fleet(apps, apps * perRole * 4);
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

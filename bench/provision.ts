// A provision's own cost at fleet scale (issue 8), in process and without agent streams: the
// policy-fleet state (10,000 workloads x 2,000 rules; 1,000 with --short) in a store, then
// `control-plane.ts`'s label change (a staging web host to prod and back, drafted and provisioned
// as a revision of its own) and a one-policy edit provisioned from the draft. For each, the CPU
// of the provision's transaction (the edit, the states, validation, the impact gate, the
// revision and its audit: what the provision stages cost) apart from the whole call (+ the
// publisher: every changed agent's state, and the rule-set sizes), medians. Prints one JSON
// object. Machines are noisy: compare runs on the same machine only, back to back.
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Pki } from '../packages/control-plane/dist/pki.js';
import {
  createDomains,
  createSqliteStores,
  createStreamRegistry,
  storePolicyObjects,
} from './control-plane-internal.js';
import { median } from './fleet-util.js';
import { fleet } from './policy-fleet.js';

const short = process.argv.includes('--short') || process.env.BENCH_SHORT === '1';
const WORKLOADS = short ? 1000 : 10_000;
const LABEL_CHANGES = 21;
const POLICY_EDITS = 11;

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

const dir = mkdtempSync(join(tmpdir(), 'bulkhead-bench-provision-'));
try {
  const path = join(dir, 'provision.db');
  const state = fleet(400, WORKLOADS);
  const stores = createSqliteStores({ path });
  stores.tx(() => {
    for (const w of state.workloads) stores.policy.upsertWorkload(w);
    storePolicyObjects(stores, state, 'scale');
  });
  // The outermost transaction's CPU: the provision stages, before the publisher runs.
  let txMs = 0;
  let depth = 0;
  const tx = stores.tx;
  stores.tx = <T>(fn: () => T): T => {
    const c = depth++ === 0 ? cpuMs() : undefined;
    try {
      return tx(fn);
    } finally {
      depth--;
      if (c !== undefined) txMs += cpuMs() - c;
    }
  };
  const { policy, revisions } = createDomains({
    stores,
    pki: {} as Pki,
    streams: createStreamRegistry(),
    log: pino({ level: 'silent' }),
  });
  const host = state.workloads.find((w) => w.name === 'app0-web-0')!;
  const label = { txCpuMs: [] as number[], cpuMs: [] as number[] };
  for (let i = 0; i < LABEL_CHANGES; i++) {
    txMs = 0;
    const c = cpuMs();
    revisions.provisionWorkload('bench', host.name, 'relabel', { confirm: true }, () =>
      policy.patchWorkload('bench', host.name, {
        labels: { ...host.labels, env: i % 2 ? 'staging' : 'prod' },
      }),
    );
    label.cpuMs.push(cpuMs() - c);
    label.txCpuMs.push(txMs);
  }
  const edited = state.policies[3]!;
  const edit = { txCpuMs: [] as number[], cpuMs: [] as number[] };
  for (let i = 0; i < POLICY_EDITS; i++) {
    const ingress = edited.ingress!.slice(0, i % 2 ? 2 : 3);
    policy.putResource('bench', 'policies', edited.name, { ...edited, ingress });
    txMs = 0;
    const c = cpuMs();
    revisions.provision('bench', 'edit', { confirm: true });
    edit.cpuMs.push(cpuMs() - c);
    edit.txCpuMs.push(txMs);
  }
  const loadavg1 = loadavg()[0]!.toFixed(2);
  stores.close();
  console.log(
    JSON.stringify({
      provision: {
        workloads: WORKLOADS,
        rules: 400 * 5,
        labelChange: { txCpuMedianMs: median(label.txCpuMs), cpuMedianMs: median(label.cpuMs) },
        policyEdit: { txCpuMedianMs: median(edit.txCpuMs), cpuMedianMs: median(edit.cpuMs) },
        loadavg1,
      },
    }),
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}

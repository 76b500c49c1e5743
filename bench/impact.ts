// Impact analysis at fleet scale (issue 8): `plan` (POST /v1/impact on the draft) and the
// provision gate over 10,000 workloads x 2,000 rules and 1,000,000 flow rows (1,000 workloads
// and 20,000 rows with --short), the flows written to the store as telemetry writes them (the
// destination's ingress row, and the source's egress row when a workload owns the source).
// The draft removes the api -> db rule of some apps (flows newly blocked) and moves ssh.
// Reported: the first plan (both sides' decisions built, the flows read and folded), a second
// one (both kept, nothing read), one after telemetry updated 1% of the rows (those read), one
// after telemetry batches of new rows evicted 10% of them (the store is at its row cap: every
// new row evicts the oldest; the removals are taken out of the kept fold), the same question to
// a new gate (a whole read: the report to match), the memory the plans keep (heap and array
// buffers: the fold of the flows, the answers of the state before, two calculators), the flow
// read alone (as the flows view reads them, and as the plan does), the provision, and the
// model's evaluator (`evaluatePolicy`, the path before) on a sample of distinct flows, per flow,
// with its projection to all of them.
// `--short` (or BENCH_SHORT=1) for CI; BENCH_WORKLOADS, BENCH_ROWS, BENCH_EVICT_BATCHES and
// BENCH_MODEL_SAMPLE set the sizes (a sample of 0 skips the model). Machines are noisy: compare
// runs on the same machine.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { impact, type ObservedFlow } from '@bulkhead/policy';
import { pino } from 'pino';
import type { FlowDelta } from '../packages/control-plane/dist/visibility/store.js';
import {
  createDomains,
  createSqliteStores,
  createStreamRegistry,
  storePolicyObjects,
} from './control-plane-internal.js';
import { appPolicy, fleet as policyFleet } from './policy-fleet.js';

const { createImpactGate } = (await import(
  new URL('../../packages/control-plane/dist/revisions/impact-gate.js', import.meta.url).href
)) as typeof import('../packages/control-plane/dist/revisions/impact-gate.js');

const short = process.argv.includes('--short') || process.env.BENCH_SHORT === '1';
const WORKLOADS = Number(process.env.BENCH_WORKLOADS ?? (short ? 1000 : 10_000));
const APPS = 400;
const ROWS = Number(process.env.BENCH_ROWS ?? (short ? 20_000 : 1_000_000));
const MODEL_SAMPLE = Number(process.env.BENCH_MODEL_SAMPLE ?? (short ? 200 : 500));
const BATCH = 5000;
/** Telemetry batches of ROWS / 200 new rows each at the row cap (20: 10% of the rows evicted). */
const EVICT_BATCHES = Number(process.env.BENCH_EVICT_BATCHES ?? 20);

type Timed<T> = { ms: number; cpuMs: number; value: T };
function timed<T>(fn: () => T): Timed<T> {
  const cpu = process.cpuUsage();
  const t = performance.now();
  const value = fn();
  const used = process.cpuUsage(cpu);
  return {
    ms: Math.round(performance.now() - t),
    cpuMs: Math.round((used.user + used.system) / 1000),
    value,
  };
}

const state = policyFleet(APPS, WORKLOADS);
const byAddress = new Map(state.workloads.map((w) => [w.addresses[0]!, w]));
const dir = mkdtempSync(join(tmpdir(), 'bulkhead-bench-impact-'));
try {
  // At its cap once the flows are in.
  const stores = createSqliteStores({ path: join(dir, 'impact.db'), maxFlowRows: ROWS });
  stores.tx(() => {
    for (const w of state.workloads) stores.policy.upsertWorkload(w);
    storePolicyObjects(stores, state, 'base');
  });
  // Distinct connections until ROWS rows: peers of the same app and of others, the corp
  // range, on the policies' ports and others.
  const now = new Date().toISOString();
  const perWorkload = new Map<string, FlowDelta[]>();
  const report = (
    workload: string,
    f: Omit<FlowDelta, 'direction'>,
    direction: 'ingress' | 'egress',
  ) => {
    const list = perWorkload.get(workload) ?? [];
    perWorkload.set(workload, list);
    list.push({ ...f, direction });
  };
  const PORTS = [80, 443, 5432, 22, 8080];
  let rows = 0;
  for (let k = 0; rows < ROWS; k++) {
    const dst = state.workloads[k % WORKLOADS]!;
    const round = Math.floor(k / WORKLOADS);
    const peer = round % 5 === 4 ? undefined : state.workloads[(k * 7 + round * 131) % WORKLOADS]!;
    const src = peer?.addresses[0] ?? `10.${2 + (round % 200)}.${(k >> 8) & 255}.${k & 255}`;
    const flow = {
      src,
      dst: dst.addresses[0]!,
      protocol: 6,
      port: PORTS[(k + round) % PORTS.length]!,
      verdict: 'allowed' as const,
      ruleId: 'bench',
      connections: 1 + (k % 7),
      bytes: 1000,
      firstSeen: now,
      lastSeen: now,
    };
    report(dst.name, flow, 'ingress');
    rows++;
    const owner = byAddress.get(src);
    if (owner && rows < ROWS) {
      report(owner.name, flow, 'egress');
      rows++;
    }
  }
  const ingest = timed(() => {
    const names = [...perWorkload.keys()];
    for (let i = 0; i < names.length; i += BATCH / 100) {
      stores.tx(() => {
        for (const name of names.slice(i, i + BATCH / 100)) {
          stores.visibility.recordTelemetry(`a-${name}`, name, perWorkload.get(name)!, []);
        }
      });
    }
  });
  perWorkload.clear();

  const { policy, revisions } = createDomains({
    stores,
    pki: {} as never,
    streams: createStreamRegistry(),
    log: pino({ level: 'silent' }),
  });
  // The draft: no api -> db access in every 10th app, ssh on another port in every 7th.
  const draft = state.policies.map((old, a) => {
    if (a % 10 !== 0 && a % 7 !== 0) return old;
    const p = appPolicy(a, a % 7 === 0 ? 2222 : 22);
    if (a % 10 === 0) p.ingress = p.ingress!.filter((_, i) => i !== 1);
    policy.putResource('bench', 'policies', p.name, p);
    return p;
  });
  const read = timed(() => stores.visibility.queryFlows({}).length);
  const readLean = timed(() => {
    let n = 0;
    for (const _ of stores.visibility.observedFlows()) n++;
    return n;
  });
  const heap = () => {
    global.gc?.();
    // The fold keeps typed arrays, whose contents are outside the JS heap.
    const { heapUsed, arrayBuffers } = process.memoryUsage();
    return heapUsed + arrayBuffers;
  };
  const heapBefore = heap();
  const first = timed(() => revisions.impact({ target: 'draft' }));
  const second = timed(() => revisions.impact({ target: 'draft' }));
  const keptMiB = Math.round((heap() - heapBefore) / 2 ** 20);
  // Telemetry on 1% of the rows (each seen again), then the same plan.
  const seenAgain = stores.visibility.queryFlows({ limit: Math.ceil(rows / 100) });
  stores.tx(() => {
    for (const { workload, ...f } of seenAgain) {
      stores.visibility.recordTelemetry(`a-${workload}`, workload, [{ ...f, connections: 1 }], []);
    }
  });
  const afterWrites = timed(() => revisions.impact({ target: 'draft' }));

  // New rows at the cap, each evicting the oldest: unowned sources (10.240/12) to the workloads.
  const perBatch = Math.ceil(ROWS / 200);
  let evicted = 0;
  const evictingWrites = timed(() => {
    for (let b = 0, k = 0; b < EVICT_BATCHES; b++) {
      const batch = new Map<string, FlowDelta[]>();
      for (let n = 0; n < perBatch; n++, k++) {
        const dst = state.workloads[(k * 13) % WORKLOADS]!;
        const list = batch.get(dst.name) ?? [];
        batch.set(dst.name, list);
        list.push({
          direction: 'ingress',
          src: `10.${240 + ((k >> 16) & 15)}.${(k >> 8) & 255}.${k & 255}`,
          dst: dst.addresses[0]!,
          protocol: 6,
          port: PORTS[k % PORTS.length]!,
          verdict: 'allowed',
          ruleId: 'bench',
          connections: 1,
          bytes: 100,
          firstSeen: now,
          lastSeen: now,
        });
      }
      stores.tx(() => {
        for (const [name, list] of batch) {
          stores.visibility.recordTelemetry(`a-${name}`, name, list, []);
        }
      });
    }
    evicted = rows + EVICT_BATCHES * perBatch - stores.visibility.flowCount();
  });
  const afterEvictions = timed(() => revisions.impact({ target: 'draft' }));
  // The same question to a new gate (a whole read, both calculators built): the report to
  // match. Not a second domain: its publisher would hold a second compiled fleet.
  const fresh = timed(() =>
    createImpactGate(stores.visibility).between(state, { ...state, policies: draft }),
  );
  if (JSON.stringify(fresh.value) !== JSON.stringify(afterEvictions.value)) {
    throw new Error('the plan after evictions differs from a fresh one');
  }
  const provision = timed(() => revisions.provision('bench', 'bench', { confirm: true }));

  // The path before: evaluatePolicy on whole states, on a sample of distinct flows.
  const flows: ObservedFlow[] = stores.visibility.queryFlows({ limit: MODEL_SAMPLE });
  const model = timed(() => impact(state, { ...state, policies: draft }, flows));
  const summary = first.value.summary;
  const same = (r: typeof summary) => JSON.stringify(r) === JSON.stringify(summary);
  if (
    summary.newlyBlocked === 0 ||
    !same(second.value.summary) ||
    !same(afterWrites.value.summary)
  ) {
    throw new Error(`the plan missed the flows the draft blocks: ${JSON.stringify(summary)}`);
  }
  // The kept fold and answers report what the first plan read and asked.
  if (JSON.stringify(second.value) !== JSON.stringify(first.value)) {
    throw new Error('the second plan differs from the first');
  }
  console.log(
    JSON.stringify({
      impact: {
        workloads: WORKLOADS,
        rules: APPS * 5,
        flowRows: rows,
        distinctFlows: summary.flows,
        ingest: { ms: ingest.ms, rowsPerSec: Math.round((rows / ingest.ms) * 1000) },
        readFlows: { ms: read.ms, cpuMs: read.cpuMs, rows: read.value },
        readObserved: { ms: readLean.ms, cpuMs: readLean.cpuMs, rows: readLean.value },
        firstPlan: { ms: first.ms, cpuMs: first.cpuMs },
        secondPlan: { ms: second.ms, cpuMs: second.cpuMs },
        planAfterWrites: { ms: afterWrites.ms, cpuMs: afterWrites.cpuMs, rows: seenAgain.length },
        evictingWrites: {
          batches: EVICT_BATCHES,
          rows: EVICT_BATCHES * perBatch,
          evicted,
          ms: evictingWrites.ms,
          cpuUsPerRow: +((evictingWrites.cpuMs * 1000) / (EVICT_BATCHES * perBatch)).toFixed(1),
        },
        planAfterEvictions: {
          ms: afterEvictions.ms,
          cpuMs: afterEvictions.cpuMs,
          distinctFlows: afterEvictions.value.summary.flows,
        },
        freshPlanAfterEvictions: { ms: fresh.ms, cpuMs: fresh.cpuMs },
        keptMiB,
        provision: { ms: provision.ms, cpuMs: provision.cpuMs },
        summary,
        groups: first.value.groups.length,
        modelEvaluator: {
          sampleRows: flows.length,
          cpuMs: model.cpuMs,
          msPerFlow: +(model.cpuMs / flows.length).toFixed(2),
          projectedPlanSec: Math.round((model.cpuMs / flows.length) * summary.flows) / 1000,
        },
        rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
      },
    }),
  );
  stores.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}

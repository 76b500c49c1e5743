// The calculation graph at fleet scale: cold load, then one label change, one rule change
// and one workload added, each timed from the call to the encoded delta; memory after the
// cold load; and the bytes that would travel (proto-encoded AddressGroup, GroupUpdate,
// GroupRuleSet): once per distinct message, and summed over the agents that receive it.
// `--short` runs the 1k fleet with few repetitions (seconds, for CI). Prints one JSON object.
// Run with `node --expose-gc` so memory is measured after a collection.
import {
  type CalcDelta,
  type Calculator,
  compile,
  createCalculator,
  type IpRange,
  toAddressRange,
} from '@bulkhead/policy';
import { AddressGroup, GroupRuleSet, GroupUpdate, RuleSet } from '@bulkhead/proto';
import { median } from './fleet-util.js';
import { appPolicy, fleet } from './policy-fleet.js';

const short = process.argv.includes('--short');
const APPS = 400; // 5 rules each: 2,000 rules
const sizes = short ? [1000] : [1000, 10_000];
const REPEAT = short ? 5 : 21;

const groupBytes = (id: string, ranges: readonly IpRange[]) =>
  AddressGroup.encode({ id, ranges: ranges.map(toAddressRange) }).finish().length;

/**
 * Encodes a delta's messages (timed): the changed rule sets and one GroupUpdate per group.
 * Returns bytes once per message and summed over the agents that receive each.
 */
function encodeDelta(delta: CalcDelta) {
  let unique = 0;
  let toAgents = 0;
  /** Group id -> receivers that get it whole instead (they list it in groupsAdded). */
  const whole = new Map<string, number>();
  for (const w of delta.workloads) {
    const bytes = w.ruleSet ? GroupRuleSet.encode(w.ruleSet).finish().length : 0;
    unique += bytes;
    toAgents += bytes;
    for (const id of w.groupsAdded) whole.set(id, (whole.get(id) ?? 0) + 1);
  }
  for (const g of delta.groups) {
    const bytes = GroupUpdate.encode({
      id: g.id,
      added: g.added.map(toAddressRange),
      removed: g.removed.map(toAddressRange),
      created: g.created ?? false,
      deleted: g.deleted ?? false,
    }).finish().length;
    unique += bytes;
    toAgents += bytes * (g.workloads.length - (whole.get(g.id) ?? 0));
  }
  return { unique, toAgents };
}

/**
 * Full contents of the groups a workload newly refers to (a new host's first sync). Not
 * timed: a fan-out layer encodes a group once per version and serves every agent from it.
 */
function fullGroupBytes(calc: Calculator, delta: CalcDelta) {
  return delta.workloads.reduce(
    (n, w) => n + w.groupsAdded.reduce((m, id) => m + groupBytes(id, calc.group(id)!), 0),
    0,
  );
}

/** Times `step(i)` (the change and encoding its delta) REPEAT times. */
function measure(calc: Calculator, step: (i: number) => CalcDelta) {
  const ms: number[] = [];
  let last: ReturnType<typeof summary> | undefined;
  for (let i = 0; i < REPEAT; i++) {
    const t0 = performance.now();
    const delta = step(i);
    const bytes = encodeDelta(delta);
    ms.push(performance.now() - t0);
    last = summary(delta, bytes, fullGroupBytes(calc, delta));
  }
  return { medianMs: median(ms), maxMs: +Math.max(...ms).toFixed(2), ...last! };
}

function summary(delta: CalcDelta, bytes: { unique: number; toAgents: number }, full: number) {
  const recipients = new Set(delta.groups.flatMap((g) => g.workloads));
  for (const w of delta.workloads) recipients.add(w.workloadId);
  return {
    groupsChanged: delta.groups.length,
    elementsChanged: delta.groups.reduce((n, g) => n + g.added.length + g.removed.length, 0),
    ruleSetsChanged: delta.workloads.length,
    agentsReached: recipients.size,
    bytesUnique: bytes.unique,
    bytesToAgents: bytes.toAgents,
    /** Groups sent whole to workloads that newly refer to them (counted in no other field). */
    bytesFullGroups: full,
  };
}

const mib = (n: number) => Math.round(n / 2 ** 20);
const gc = (globalThis as { gc?: () => void }).gc;

// Warm the JIT first, as in a control plane that has been running: the first load of a
// process spends about a second compiling the code it runs.
createCalculator().load(fleet(APPS, 400));
if (!short) compile(fleet(APPS, 400), 1);

const results = [];
for (const workloads of sizes) {
  const state = fleet(APPS, workloads);
  gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const calc = createCalculator();
  const t0 = performance.now();
  const cold = calc.load(state);
  const coldLoadMs = performance.now() - t0;
  if (cold.diagnostics.length) throw new Error(JSON.stringify(cold.diagnostics.slice(0, 3)));
  const t1 = performance.now();
  const snapshot = calc.snapshot();
  const groupSize = new Map([...snapshot.groups].map(([id, r]) => [id, groupBytes(id, r)]));
  let ruleSetBytes = 0;
  let toAgents = 0;
  for (const ruleSet of snapshot.ruleSets.values()) {
    const bytes = GroupRuleSet.encode(ruleSet).finish().length;
    ruleSetBytes += bytes;
    toAgents += bytes;
    for (const id of new Set(ruleSet.rules.flatMap((r) => r.groups)))
      toAgents += groupSize.get(id)!;
  }
  const coldEncodeMs = performance.now() - t1;
  gc?.();
  const memory = process.memoryUsage();

  // One label change: a staging web host goes to prod (leaves the staging deny's group).
  const host = state.workloads.find((w) => w.name === 'app0-web-0')!;
  const label = measure(
    calc,
    (i) =>
      calc.upsertWorkload({ ...host, labels: { ...host.labels, env: i % 2 ? 'staging' : 'prod' } })
        .delta,
  );
  // One rule change: app0's ssh rule moves port.
  const rule = measure(calc, (i) => calc.upsertPolicy(appPolicy(0, i % 2 ? 22 : 2222)).delta);
  // One workload added to app0 (a new name and address each time).
  const added = measure(
    calc,
    (i) =>
      calc.upsertWorkload({
        ...host,
        name: `app0-web-new${i}`,
        addresses: [`192.168.${i >> 8}.${i & 255}`],
      }).delta,
  );

  results.push({
    workloads,
    policies: APPS,
    rules: APPS * 5,
    coldLoadMs: Math.round(coldLoadMs),
    coldEncodeMs: Math.round(coldEncodeMs),
    rssMiB: mib(memory.rss),
    heapMiB: mib(memory.heapUsed),
    calcHeapMiB: mib(memory.heapUsed - heapBefore),
    groups: snapshot.groups.size,
    groupElements: [...snapshot.groups.values()].reduce((n, r) => n + r.length, 0),
    coldBytes: {
      groupsUnique: [...groupSize.values()].reduce((a, b) => a + b, 0),
      ruleSetsUnique: ruleSetBytes,
      toAgents,
    },
    change: { label, rule, workloadAdded: added },
  });
}

// The first design on the same fleet, same run (1k only: 10k takes about a minute).
let baseline: object | undefined;
if (!short) {
  const state = fleet(APPS, 1000);
  const t0 = performance.now();
  const out = compile(state, 1);
  const compileMs = performance.now() - t0;
  baseline = {
    workloads: 1000,
    policies: APPS,
    compileMs: Math.round(compileMs),
    entries: out.ruleSets.reduce((n, r) => n + r.entries.length, 0),
    bytesToAgents: out.ruleSets.reduce((n, r) => n + RuleSet.encode(r).finish().length, 0),
  };
}
console.log(JSON.stringify({ calc: { short, results, compileBaseline: baseline } }));

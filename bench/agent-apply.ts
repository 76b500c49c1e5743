// Agent apply at scale, in the current network namespace (run under `unshare --net`): a cold
// full sync of a policy in group form whose one IP-list group holds N ranges, then deltas of
// 100 changed elements (50 ranges leave, 50 arrive) and a rule change, through the agent's
// dataplane on libnftables; wall time and the process RSS after each. Prints JSON.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDataplane, QUIET_MS } from '@bulkhead/agent';
import { createNftDriver } from '@bulkhead/nftables';
import {
  Action,
  type AddressRange,
  Direction,
  type GroupRuleSet,
  Mode,
  type PolicyUpdate,
} from '@bulkhead/proto';
import { pino } from 'pino';

// --short (CI, so that the bench keeps working): 5,000 elements.
const N = Number(
  process.env.BENCH_ELEMENTS ?? (process.argv.includes('--short') ? 5_000 : 100_000),
);
const IN = Direction.DIRECTION_INGRESS;
const GROUP = 'list:bench';

function host(i: number): AddressRange {
  // Distinct, non-adjacent addresses, as the data-plane bench uses.
  const a = `172.${16 + (i >> 15)}.${(i >> 7) & 255}.${(i & 127) * 2}`;
  return { from: a, to: a };
}

function ruleSet(port: number): GroupRuleSet {
  return {
    workloadId: 'bench',
    revision: 0,
    hash: `rules-${port}`,
    ingressMode: Mode.MODE_ENFORCE,
    egressMode: Mode.MODE_MONITOR,
    rules: [
      {
        id: 'p/ingress/0',
        direction: IN,
        action: Action.ACTION_ALLOW,
        policy: 'p',
        groups: [GROUP],
        services: [{ protocol: 6, portFrom: port, portTo: port }],
      },
    ],
  };
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => host(from + i));
let revision = 1;
const update = (u: Partial<PolicyUpdate>): PolicyUpdate => {
  const r = revision++;
  return {
    baseHash: `h${r - 1}`,
    hash: `h${r}`,
    revision: r,
    full: false,
    last: true,
    ruleSet: undefined,
    groups: [],
    ...u,
  };
};

const mib = () => Math.round(process.memoryUsage().rss / 2 ** 20);
const heapMib = () => Math.round(process.memoryUsage().heapUsed / 2 ** 20);
const stateDir = mkdtempSync(join(tmpdir(), 'bulkhead-bench-'));
const driver = createNftDriver({ backend: 'libnftables' });
const dp = createDataplane({
  driver,
  stateDir,
  failsafe: { controlPlane: [], admin: undefined },
  logger: pino({ level: 'silent' }),
});
const idleRssMiB = mib();
const timed = async (u: PolicyUpdate) => {
  const t0 = performance.now();
  const r = await dp.apply(u);
  if (!r.ok) throw r.error;
  const ms = Math.round(performance.now() - t0);
  await dp.persisted(); // not part of the apply: it runs after it, in the background
  return { ms, path: r.path, rssMiB: mib(), heapMiB: heapMib() };
};
const cold = await timed(
  update({
    baseHash: '',
    full: true,
    ruleSet: ruleSet(5000),
    groups: [{ id: GROUP, created: true, deleted: false, added: range(0, N), removed: [] }],
  }),
);
// 100 elements change: 50 leave, 50 new ones arrive.
let next = N;
const groupDelta = () => {
  const from = next - N;
  next += 50;
  return update({
    groups: [
      {
        id: GROUP,
        created: false,
        deleted: false,
        removed: range(from, 50),
        added: range(next - 50, 50),
      },
    ],
  });
};
const delta = await timed(groupDelta());
const deltas: number[] = [];
for (let i = 0; i < 10; i++) deltas.push((await timed(groupDelta())).ms);
const ruleChange = await timed(update({ ruleSet: ruleSet(5001) }));
const check = async (elements: boolean) => {
  const t0 = performance.now();
  const drift = await dp.reconcile({ elements });
  if (drift) throw new Error(`unexpected drift ${JSON.stringify(drift)}`);
  return Math.round(performance.now() - t0);
};
const structureCheckMs = await check(false);
// What stays once the agent is idle: its telemetry ticks QUIET_MS and 2 x QUIET_MS after the
// last large write collect V8's heap and trim malloc's (heap.ts); one more tick after that.
const tick = async (ms: number) => {
  await new Promise((r) => setTimeout(r, ms));
  await dp.collect();
};
await tick(QUIET_MS + 500);
await tick(QUIET_MS + 500);
await tick(1000);
const settled = {
  rssMiB: mib(),
  heapMiB: heapMib(),
  externalMiB: Math.round(process.memoryUsage().external / 2 ** 20),
};
const checkMs = await check(true);
console.log(
  JSON.stringify({
    agentApply: {
      elements: N,
      idleRssMiB,
      cold,
      delta100: { ...delta, next10Ms: deltas },
      ruleChange,
      structureCheckMs,
      settled,
      elementCheckMs: checkMs,
      rssAfterCheckMiB: mib(),
    },
  }),
);
driver.close();
rmSync(stateDir, { recursive: true, force: true });

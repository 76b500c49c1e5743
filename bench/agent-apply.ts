// Agent apply at scale, in the current network namespace (run under `unshare --net`): a cold
// load of a RuleSet with N map elements, then a delta of 100 changed elements, through the
// agent's dataplane on libnftables; wall time and the process RSS after each. Prints JSON.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDataplane } from '@bulkhead/agent';
import { createNftDriver } from '@bulkhead/nftables';
import { Action, Direction, type Entry, Mode, type RuleSet } from '@bulkhead/proto';
import { pino } from 'pino';

const N = Number(process.env.BENCH_ELEMENTS ?? 100_000);
const IN = Direction.DIRECTION_INGRESS;

function host(i: number): string {
  // Distinct, non-adjacent addresses, as the data-plane bench uses.
  return `172.${16 + (i >> 15)}.${(i >> 7) & 255}.${(i & 127) * 2}`;
}

function ruleSet(revision: number, from: number, n: number): RuleSet {
  const entries: Entry[] = [];
  for (let i = from; i < from + n; i++) {
    const a = host(i);
    entries.push({
      direction: IN,
      addrFrom: a,
      addrTo: a,
      protocol: 6,
      portFrom: 5000,
      portTo: 5000,
      rule: 0,
    });
  }
  return {
    workloadId: 'bench',
    revision,
    hash: `h${revision}`,
    ingressMode: Mode.MODE_ENFORCE,
    egressMode: Mode.MODE_MONITOR,
    rules: [{ id: 'p/ingress/0', direction: IN, action: Action.ACTION_ALLOW, policy: 'p' }],
    entries,
  };
}

const mib = () => Math.round(process.memoryUsage().rss / 2 ** 20);
const stateDir = mkdtempSync(join(tmpdir(), 'bulkhead-bench-'));
const driver = createNftDriver({ backend: 'libnftables' });
const dp = createDataplane({
  driver,
  stateDir,
  failsafe: { controlPlane: [], admin: undefined },
  logger: pino({ level: 'silent' }),
});
const idleRssMiB = mib();
const timed = async (rs: RuleSet) => {
  const t0 = performance.now();
  const r = await dp.apply(rs);
  if (!r.ok) throw r.error;
  return { ms: Math.round(performance.now() - t0), path: r.path, rssMiB: mib() };
};
const cold = await timed(ruleSet(1, 0, N));
// 100 elements change: 50 leave, 50 new ones arrive.
const delta = await timed(ruleSet(2, 50, N));
const deltas: number[] = [];
for (let r = 3; r < 13; r++) deltas.push((await timed(ruleSet(r, 50 + (r - 2) * 50, N))).ms);
const check = async (elements: boolean) => {
  const t0 = performance.now();
  const drift = await dp.reconcile({ elements });
  if (drift) throw new Error(`unexpected drift ${JSON.stringify(drift)}`);
  return Math.round(performance.now() - t0);
};
const structureCheckMs = await check(false);
const checkMs = await check(true);
console.log(
  JSON.stringify({
    agentApply: {
      elements: N,
      idleRssMiB,
      cold,
      delta100: { ...delta, next10Ms: deltas },
      structureCheckMs,
      elementCheckMs: checkMs,
      rssAfterCheckMiB: mib(),
    },
  }),
);
driver.close();
rmSync(stateDir, { recursive: true, force: true });

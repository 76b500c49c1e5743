// Real nftables (run inside `unshare --net`): for random small policy states from the
// calculator, the kernel decides probe datagrams the way `evaluateGroups` says (verdict and
// deciding rule, read back from the rule counters), and after random sequences of the
// calculator's deltas the table lists exactly as a fresh full load of the final state.
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNftDriver, type NftDriver, Transaction } from '@bulkhead/nftables';
import { type Calculator, evaluateGroups } from '@bulkhead/policy';
import { type GroupRuleSet, Mode, type PolicyUpdate, Verdict } from '@bulkhead/proto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataplane, type Dataplane } from './dataplane.js';
import {
  currentPolicy,
  normalTable,
  prng,
  randomCalculator,
  randomChange,
  updateFor,
} from './delta.test-util.js';
import { fixtureFailsafe, fullUpdate } from './fixture.test-util.js';
import { planFull } from './model.js';
import { renderModel } from './render.js';

const DEV = 'bhprobe1';
const logger = pino({ level: 'silent' });

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'ignore' });
}

/** One datagram out; 'EPERM' when the output hook dropped it. */
function sendUdp(address: string, port: number): Promise<string | undefined> {
  const sock = createSocket(address.includes(':') ? 'udp6' : 'udp4');
  return new Promise((resolve) => {
    sock.send('x', port, address, (err) => {
      sock.close();
      resolve((err as NodeJS.ErrnoException | null)?.code);
    });
  });
}

/** Egress enforced, so that every policy decision shows as a drop or a pass. */
function enforced(rs: GroupRuleSet): GroupRuleSet {
  return { ...rs, egressMode: Mode.MODE_ENFORCE };
}

function enforcedUpdate(u: PolicyUpdate): PolicyUpdate {
  return u.ruleSet ? { ...u, ruleSet: enforced(u.ruleSet) } : u;
}

// The calculator's address universe: 10.0.0.0-31 and fd00::-1f; ports around 20-29.
const PEERS = [
  ...Array.from({ length: 32 }, (_, i) => `10.0.0.${i}`),
  ...Array.from({ length: 32 }, (_, i) => `fd00::${i.toString(16)}`),
];
const PORTS = [20, 22, 25, 29];

describe('group form on real nftables', () => {
  let driver: NftDriver;
  let stateDir: string;

  beforeAll(async () => {
    driver = createNftDriver({ backend: 'libnftables' });
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-upd-itest-'));
    // Route the universe to a device, so a datagram reaches the output hook.
    ip('link', 'add', DEV, 'type', 'veth', 'peer', 'name', `${DEV}p`);
    ip('addr', 'add', '10.0.0.100/24', 'dev', DEV);
    ip('addr', 'add', 'fd00::100/64', 'dev', DEV, 'nodad');
    ip('link', 'set', DEV, 'up');
    ip('link', 'set', `${DEV}p`, 'up');
  });
  afterAll(async () => {
    try {
      ip('link', 'del', DEV);
    } catch {
      // gone with the namespace
    }
    await driver
      .apply(new Transaction().delete({ table: { family: 'inet', name: 'bulkhead' } }))
      .catch(() => undefined);
    driver.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  /** Probes every peer on a few udp ports; returns the mismatches with evaluateGroups. */
  async function probe(dp: Dataplane, calc: Calculator, rand: () => number): Promise<string[]> {
    const policy = currentPolicy(calc);
    const rs = enforced(policy.ruleSet);
    const bad: string[] = [];
    await dp.collect();
    for (const peer of PEERS) {
      if (rand() < 0.5) continue; // half of them per state keeps the run short
      const port = PORTS[Math.floor(rand() * PORTS.length)]!;
      const want = evaluateGroups(rs, (id) => calc.group(id), 'egress', peer, 17, port);
      const err = await sendUdp(peer, port);
      const counted = (await dp.collect()).filter((c) => c.packets > 0);
      const got = counted.map((c) => [c.ruleId, c.verdict]);
      const expected = [
        want.ruleId ?? 'default',
        want.action === 'allow' ? Verdict.VERDICT_ALLOWED : Verdict.VERDICT_DENIED,
      ];
      const dropped = err === 'EPERM';
      if (
        JSON.stringify(got) !== JSON.stringify([expected]) ||
        dropped !== (want.action === 'deny')
      ) {
        bad.push(`${peer} udp/${port}: want ${expected} got ${JSON.stringify(got)} ${err}`);
      }
    }
    return bad;
  }

  it.each([1, 2, 3, 4])(
    'the kernel decides as evaluateGroups, and deltas list as a fresh full load (seed %i)',
    async (seed) => {
      const rand = prng(seed * 7919);
      const calc = randomCalculator(rand);
      const dp = createDataplane({ driver, stateDir, failsafe: fixtureFailsafe, logger });
      const first = fullUpdate(currentPolicy(calc), 'h0', 1);
      expect((await dp.apply(enforcedUpdate(first))).error).toBeUndefined();
      expect(await probe(dp, calc, rand)).toEqual([]);
      let hash = 'h0';
      let deltas = 0;
      for (let step = 1; deltas < 6 && step < 40; step++) {
        const u = updateFor(randomChange(rand, calc), calc, hash, `h${step}`, step + 1);
        if (!u) continue;
        const result = await dp.apply(enforcedUpdate(u));
        expect(result.error).toBeUndefined();
        expect(result.path).toBe('delta');
        hash = u.hash;
        deltas++;
        expect(await probe(dp, calc, rand)).toEqual([]);
      }
      const policy = currentPolicy(calc);
      const fresh = renderModel({ ...policy, ruleSet: enforced(policy.ruleSet) }, fixtureFailsafe);
      await driver.apply(planFull({ ...fresh, name: 'bhfresh' }));
      const list = async (name: string) =>
        normalTable(await driver.list({ list: { table: { family: 'inet', name } } }), name);
      expect(await list('bulkhead')).toEqual(await list('bhfresh'));
      await driver.apply(new Transaction().delete({ table: { family: 'inet', name: 'bhfresh' } }));
      await dp.persisted();
    },
  );
});

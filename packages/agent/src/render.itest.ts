// Real nftables: run inside a throwaway network namespace (scripts/test.sh uses unshare --net).
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNftDriver, type NftDriver, type NftObject, Transaction } from '@bulkhead/nftables';
import { Direction, Mode, Verdict } from '@bulkhead/proto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readCounterDeltas } from './counters.js';
import { createDataplane } from './dataplane.js';
import {
  FIXTURE_GROUPS,
  fixtureChain,
  fixtureFailsafe,
  fixturePolicy,
  fixtureUpdate,
  refusedUpdate,
} from './fixture.test-util.js';
import { planFull } from './model.js';
import { renderModel } from './render.js';

const renderRuleSet = (mode: Mode) => planFull(renderModel(fixturePolicy(mode), fixtureFailsafe));

const DEV = 'bhtest0';

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'ignore' });
}

/** One UDP datagram to an address routed out of the test device (it goes nowhere). */
async function sendUdp(address: string, port: number): Promise<void> {
  const sock = createSocket('udp4');
  await new Promise<void>((resolve) => {
    // Enforce mode drops it in the output hook: the send then fails with EPERM, as intended.
    sock.send('x', port, address, () => resolve());
  });
  sock.close();
}

async function table(driver: NftDriver): Promise<NftObject[]> {
  return driver.list({ list: { table: { family: 'inet', name: 'bulkhead' } } });
}

function named(objects: NftObject[], kind: string): Map<string, Record<string, unknown>> {
  return new Map(
    objects
      .map((o) => o[kind] as Record<string, unknown> | undefined)
      .filter((o): o is Record<string, unknown> => o !== undefined)
      .map((o) => [o.name as string, o]),
  );
}

describe.each(['libnftables', 'nft'] as const)(
  'rendered RuleSets on real nftables (%s)',
  (backend) => {
    let driver: NftDriver;
    let stateDir: string;
    const logger = pino({ level: 'silent' });

    beforeAll(async () => {
      driver = createNftDriver({ backend });
      stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-itest-'));
      // The fixture's egress entries cover 10.2.0.0/24: route it to a dummy device so a
      // datagram reaches the output hook (it then waits for ARP that nobody answers). veth,
      // because this kernel has no dummy driver.
      ip('link', 'add', DEV, 'type', 'veth', 'peer', 'name', `${DEV}p`);
      ip('addr', 'add', '10.2.0.100/24', 'dev', DEV);
      ip('link', 'set', DEV, 'up');
    });

    afterAll(async () => {
      try {
        ip('link', 'del', DEV);
      } catch {
        // already gone with the namespace
      }
      await driver
        ?.apply(new Transaction().delete({ table: { family: 'inet', name: 'bulkhead' } }))
        .catch(() => undefined);
      driver?.close();
      await rm(stateDir, { recursive: true, force: true });
    });

    it('accepts both modes, holds every map with its elements, and replaces cleanly', async () => {
      for (const mode of [Mode.MODE_MONITOR, Mode.MODE_ENFORCE]) {
        const rs = fixtureUpdate(mode);
        await driver.apply(renderRuleSet(mode));
        const objects = await table(driver);
        const sets = named(objects, 'set');
        // Two per group, three service sets, four flow sets.
        expect(sets.size).toBe(2 * FIXTURE_GROUPS.size + 3 + 8 + 1);
        const elements = [...sets.values()].reduce(
          (n, m) => n + ((m.elem as unknown[] | undefined)?.length ?? 0),
          0,
        );
        const ranges = [...FIXTURE_GROUPS.values()].reduce((n, g) => n + g.length, 0);
        expect(elements).toBe(ranges + 4); // + the service sets' 4 port ranges
        const counters = [...named(objects, 'counter').keys()].sort();
        const deny = mode === Mode.MODE_ENFORCE ? 'denied' : 'would_deny';
        expect(counters).toEqual(
          [
            `${fixtureChain(2)}_allowed`,
            `${fixtureChain(3)}_${deny}`,
            `${fixtureChain(0)}_allowed`,
            `${fixtureChain(1)}_${deny}`,
            `in_default_${deny}`,
            `out_default_${deny}`,
          ].sort(),
        );
        // Replacing leaves exactly one table, not two generations side by side.
        expect(named(objects, 'chain').size).toBe(2 + rs.ruleSet!.rules.length + 2);
      }
    });

    it('counts real packets per rule and resets on read', async () => {
      const rs = fixturePolicy(Mode.MODE_ENFORCE).ruleSet;
      await driver.apply(renderRuleSet(Mode.MODE_ENFORCE));
      await sendUdp('10.2.0.7', 9999); // list:out, udp 0-65535 -> deny rule 1
      await sendUdp('10.2.0.1', 5432); // udp, not the tcp allow: still rule 1
      const first = await readCounterDeltas(driver, rs);
      expect(first).toEqual([
        {
          ruleId: 'web/egress/1',
          direction: Direction.DIRECTION_EGRESS,
          verdict: Verdict.VERDICT_DENIED,
          packets: 2,
          bytes: expect.any(Number),
        },
      ]);
      expect(first[0]!.bytes).toBeGreaterThan(0);
      expect(await readCounterDeltas(driver, rs)).toEqual([]);

      await driver.apply(renderRuleSet(Mode.MODE_MONITOR));
      await sendUdp('10.2.0.9', 1);
      const monitor = await readCounterDeltas(driver, rs);
      expect(monitor.map((c) => [c.ruleId, c.verdict, c.packets])).toEqual([
        ['web/egress/1', Verdict.VERDICT_WOULD_DENY, 1],
      ]);
    });

    it('a refused batch leaves the old table; a restarted dataplane keeps it', async () => {
      const dp = createDataplane({
        driver,
        stateDir,
        failsafe: fixtureFailsafe,
        logger,
      });
      const good = fixtureUpdate(Mode.MODE_ENFORCE, 11);
      expect((await dp.apply(good)).ok).toBe(true);
      await sendUdp('10.2.0.7', 7);
      expect((await dp.collect()).map((c) => [c.ruleId, c.packets])).toEqual([['web/egress/1', 1]]);
      expect(await dp.collect()).toEqual([]);
      const before = await table(driver);

      // Overlapping intervals in one set: renders fine, the kernel refuses the whole batch.
      const result = await dp.apply(refusedUpdate(Mode.MODE_MONITOR, 12));
      expect(result.ok).toBe(false);
      expect(result.error?.code).toBe('APPLY_FAILED');
      expect(await table(driver)).toEqual(before);
      expect(dp.applied?.revision).toBe(11);
      await dp.persisted();

      const restarted = createDataplane({ driver, stateDir, failsafe: fixtureFailsafe, logger });
      expect(await restarted.restore()).toBe('unchanged');
      expect(await table(driver)).toEqual(before);
    });
  },
);

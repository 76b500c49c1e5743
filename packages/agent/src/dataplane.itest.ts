// Real nftables (run inside `unshare --net`): counters survive a revision (update.itest.ts
// checks the delta path against a fresh full load), and tampering is noticed (nft monitor and
// the periodic compare), reported and repaired, with a denied packet denied again.
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type NftDriver, Transaction } from '@bulkhead/nftables';
import { Mode, type PolicyUpdate } from '@bulkhead/proto';
import { pino } from 'pino';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createDataplane, DATAPLANE_TAMPERED, type Dataplane } from './dataplane.js';
import { normalTable } from './delta.test-util.js';
import type { Drift } from './drift.js';
import { fixtureChain, fixtureFailsafe, fixtureUpdate } from './fixture.test-util.js';
import { sendUdp, useTestLink } from './link.test-util.js';
import { createAgentMetrics } from './metrics.js';
import { groupSet } from './render.js';
import { type DriftWatch, watchDrift } from './watch.js';

const DEV = 'bhtest1';
/** The IPv4 set of the fixture's denied egress group (10.2.0.0/24). */
const OUT4 = groupSet('list:out', 4);
const logger = pino({ level: process.env.H3_LOG ?? 'silent' });

function nft(...args: string[]): void {
  execFileSync('nft', args, { stdio: 'ignore' });
}

async function listed(driver: NftDriver, name = 'bulkhead'): Promise<unknown> {
  return normalTable(await driver.list({ list: { table: { family: 'inet', name } } }), name);
}

/** Polls until `ok()` (a wait, not a timing assertion: the bound is generous). */
async function until(ok: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (
    !(await Promise.resolve()
      .then(ok)
      .catch(() => false))
  ) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('dataplane on real nftables', () => {
  let driver: NftDriver;
  let stateDir: string;

  const link = useTestLink(DEV);
  beforeAll(() => {
    driver = link.driver();
  });
  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-dp-itest-'));
  });
  afterEach(async () => {
    for (const name of ['bulkhead', 'bhfresh']) {
      await driver
        .apply(new Transaction().delete({ table: { family: 'inet', name } }))
        .catch(() => undefined);
    }
    await rm(stateDir, { recursive: true, force: true });
  });

  it('keeps counters of unchanged rules across a revision', async () => {
    const dp = createDataplane({ driver, stateDir, failsafe: fixtureFailsafe, logger });
    await dp.apply(fixtureUpdate(Mode.MODE_ENFORCE, 1));
    expect(await sendUdp('10.2.0.7', 9)).toBe('EPERM'); // deny rule 3
    const next: PolicyUpdate = {
      baseHash: 'hash-1',
      hash: 'hash-2',
      revision: 2,
      full: false,
      last: true,
      ruleSet: undefined,
      groups: [
        {
          id: 'list:out',
          created: false,
          deleted: false,
          added: [{ from: '10.2.1.0', to: '10.2.1.255' }],
          removed: [],
        },
      ],
    };
    expect((await dp.apply(next)).path).toBe('delta');
    const counters = await driver.list({
      list: { counter: { family: 'inet', table: 'bulkhead', name: `${fixtureChain(1)}_denied` } },
    });
    expect(counters[0]?.counter).toMatchObject({ packets: 1 });
    // The state is written in the background: let it land before the dir is removed.
    await dp.persisted();
  });

  describe('tampering', () => {
    let dp: Dataplane;
    let watch: DriftWatch;
    let drifts: Drift[];
    const metrics = createAgentMetrics();
    const tamperMetric = async () =>
      (
        await metrics.registry.getSingleMetric('bulkhead_dataplane_tampered_total')?.get()
      )?.values.reduce((n, v) => n + v.value, 0) ?? 0;

    beforeEach(async () => {
      drifts = [];
      dp = createDataplane({
        driver,
        stateDir,
        failsafe: fixtureFailsafe,
        logger,
        onTamper: (d) => {
          drifts.push(d);
          metrics.observeTamper(d);
        },
      });
      await dp.apply(fixtureUpdate(Mode.MODE_ENFORCE, 1));
    });
    afterEach(async () => {
      watch?.stop();
      await dp.persisted();
    });

    it.each<[string, string[][], Partial<Drift>]>([
      [
        'a flushed chain',
        [['flush', 'chain', 'inet', 'bulkhead', 'output']],
        { chains: ['output'] },
      ],
      ['a deleted table', [['delete', 'table', 'inet', 'bulkhead']], { tableMissing: true }],
      [
        'an inserted foreign rule',
        [['insert', 'rule', 'inet', 'bulkhead', 'output', 'ip', 'daddr', '10.2.0.0/24', 'accept']],
        { chains: ['output'] },
      ],
      [
        'a changed set element',
        [
          ['delete', 'element', 'inet', 'bulkhead', OUT4, '{ 10.2.0.0/24 . ipv4 }'],
          ['add', 'element', 'inet', 'bulkhead', OUT4, '{ 10.2.0.0/25 . ipv4 }'],
        ],
        { elements: [expect.objectContaining({ set: OUT4, missing: 1, extra: 1 })] },
      ],
    ])(
      '%s is repaired and reported, by monitor or by the periodic check',
      async (_what, commands, expected) => {
        const want = await listed(driver);
        const before = await tamperMetric();
        // Monitor: immediate; periodic check every second as the backstop.
        watch = watchDrift({ dataplane: dp, logger, intervalMs: 1000, monitor: true });
        await new Promise((r) => setTimeout(r, 300)); // let nft monitor subscribe
        expect(await sendUdp('10.2.0.7', 9)).toBe('EPERM');
        for (const c of commands) nft(...c);
        await until(() => drifts.length > 0);
        expect(drifts[0]).toMatchObject(expected);
        await until(async () => JSON.stringify(await listed(driver)) === JSON.stringify(want));
        expect(await sendUdp('10.2.0.7', 9)).toBe('EPERM'); // denied again
        expect(dp.flows.take(0).events.map((e) => e.code)).toContain(DATAPLANE_TAMPERED);
        expect(await tamperMetric()).toBe(before + 1);
      },
    );

    it('the agent own applies are not tampering', async () => {
      watch = watchDrift({ dataplane: dp, logger, intervalMs: 60_000, monitor: true });
      await new Promise((r) => setTimeout(r, 300));
      for (let revision = 2; revision <= 4; revision++) {
        const rs = fixtureUpdate(revision % 2 ? Mode.MODE_ENFORCE : Mode.MODE_MONITOR, revision);
        expect((await dp.apply(rs)).path).toBe('delta');
      }
      await dp.collect(); // a flow drain writes too
      await new Promise((r) => setTimeout(r, 500));
      expect(drifts).toEqual([]);
      // ...while a foreign change in the same period is caught by the monitor alone.
      nft('flush', 'chain', 'inet', 'bulkhead', 'input');
      await until(() => drifts.length > 0);
      expect(drifts[0]?.chains).toEqual(['input']);
    });
  });
});

import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NftError } from '@bulkhead/nftables';
import { createFakeNft, type FakeNft } from '@bulkhead/nftables/testing';
import { Direction, Mode, PolicyUpdate, Verdict } from '@bulkhead/proto';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, type MockInstance, vi } from 'vitest';
import { createDataplane, type Dataplane, type DataplaneOptions } from './dataplane.js';
import {
  fixtureChain,
  fixtureFailsafe,
  fixtureUpdate,
  refusedUpdate,
} from './fixture.test-util.js';
import { createAgentMetrics } from './metrics.js';

describe('dataplane', () => {
  let stateDir: string;
  let kernel: FakeNft;
  let applies: MockInstance;
  const newKernel = () => {
    kernel = createFakeNft();
    applies = vi.spyOn(kernel, 'apply');
  };
  const table = () => kernel.dump().filter((o) => JSON.stringify(o).includes('"bulkhead"'));
  const refused = (revision: number) => refusedUpdate(Mode.MODE_MONITOR, revision);
  const logger = pino({ level: 'silent' });
  const make = (extra: Partial<DataplaneOptions> = {}): Dataplane =>
    createDataplane({
      driver: kernel,
      stateDir,
      failsafe: fixtureFailsafe,
      logger,
      ...extra,
    });
  const persisted = async () => PolicyUpdate.decode(await readFile(join(stateDir, 'policy.bin')));

  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-agent-'));
    newKernel();
  });
  afterEach(async () => {
    await rm(stateDir, { recursive: true, force: true });
  });

  it('applies, then persists the state as one full update', async () => {
    const dp = make();
    const rs = fixtureUpdate(Mode.MODE_ENFORCE, 3);
    const result = await dp.apply(rs);
    expect(result.ok).toBe(true);
    expect(table().some((o) => 'set' in o)).toBe(true);
    expect(dp.applied).toMatchObject({ hash: rs.hash, revision: 3, ruleSet: rs.ruleSet });
    await dp.persisted();
    expect(await persisted()).toEqual(rs);
    expect((await stat(join(stateDir, 'policy.bin'))).mode & 0o777).toBe(0o600);
  });

  it('a refused batch keeps the previous rules and file, and reports APPLY_FAILED', async () => {
    const outcomes: boolean[] = [];
    const dp = make({ onApply: (_rs, r) => outcomes.push(r.ok) });
    const first = fixtureUpdate(Mode.MODE_ENFORCE, 1);
    await dp.apply(first);
    const before = table();
    const result = await dp.apply(refused(2));
    expect(result.ok).toBe(false);
    expect(result.error?.code).toBe('APPLY_FAILED');
    expect(result.error?.cause).toBeInstanceOf(NftError);
    expect(table()).toEqual(before);
    expect(dp.applied?.hash).toBe(first.hash);
    await dp.persisted();
    expect(await persisted()).toEqual(first);
    expect(outcomes).toEqual([true, false]);
  });

  it('replaces the control plane failsafe addresses in one small transaction, and persists them', async () => {
    const dp = make();
    await dp.apply(fixtureUpdate(Mode.MODE_ENFORCE, 1));
    kernel.setCounter(`${fixtureChain(2)}_allowed`, 5, 500);
    const output = () =>
      JSON.stringify(
        kernel.dump().filter((o) => (o.rule as { chain?: string } | undefined)?.chain === 'output'),
      );
    expect(output()).toContain('"10.9.0.1"');
    const moved = [
      { address: '10.9.0.2', port: 8443 },
      { address: 'fd00::9', port: 8443 },
    ];
    expect(await dp.setControlPlane(moved)).toBe(true);
    expect(output()).toContain('"10.9.0.2"');
    expect(output()).toContain('"fd00::9"');
    expect(output()).not.toContain('"10.9.0.1"');
    // One delta: the output chain refilled, no table, set or counter declared again.
    const tx = JSON.stringify(kernel.lastTransaction!.commands);
    expect(tx).not.toMatch(/"(table|set|counter)":\{"family"/);
    expect(
      kernel
        .dump()
        .map((o) => o.counter as { name: string } | undefined)
        .find((c) => c?.name === `${fixtureChain(2)}_allowed`),
    ).toMatchObject({ packets: 5 });
    // The same addresses again: nothing written.
    const applied = applies.mock.calls.length;
    expect(await dp.setControlPlane([...moved].reverse())).toBe(true);
    expect(applies.mock.calls.length).toBe(applied);
    await dp.persisted();
    const rendering = JSON.parse(await readFile(join(stateDir, 'dataplane.json'), 'utf8'));
    expect(rendering.failsafe.controlPlane).toEqual(moved);
  });

  it('reports an unrenderable RuleSet without touching the kernel', async () => {
    const dp = make();
    const bad = fixtureUpdate();
    bad.ruleSet!.rules[0]!.direction = 0;
    const result = await dp.apply(bad);
    expect(result.error?.code).toBe('RULESET_INVALID');
    expect(applies).not.toHaveBeenCalled();
    await expect(readFile(join(stateDir, 'policy.bin'))).rejects.toThrow();
  });

  it('a restart leaves a kernel that already holds the persisted RuleSet alone', async () => {
    const first = make();
    await first.apply(fixtureUpdate(Mode.MODE_ENFORCE, 5));
    await first.persisted();
    kernel.setCounter(`${fixtureChain(2)}_allowed`, 4, 400);
    const restarted = make();
    expect(await restarted.restore()).toBe('unchanged');
    expect(applies).toHaveBeenCalledTimes(1);
    expect(restarted.applied?.revision).toBe(5);
    // Counters survive the restart because the table was not replaced.
    expect(await restarted.collect()).toEqual([
      {
        ruleId: 'web/ingress/0',
        direction: Direction.DIRECTION_INGRESS,
        verdict: Verdict.VERDICT_ALLOWED,
        packets: 4,
        bytes: 400,
      },
    ]);
  });

  it('a restart re-applies the persisted RuleSet when the kernel lost it or differs', async () => {
    const first = make();
    await first.apply(fixtureUpdate(Mode.MODE_ENFORCE, 5));
    await first.persisted();
    newKernel(); // a reboot: empty kernel, same state dir
    const restarted = make();
    expect(await restarted.restore()).toBe('applied');
    expect(applies).toHaveBeenCalledTimes(1);
    expect(restarted.applied?.revision).toBe(5);
    // A changed failsafe is a different rendering too.
    const again = make({ failsafe: { ...fixtureFailsafe, admin: undefined } });
    const before = applies.mock.calls.length;
    expect(await again.restore()).toBe('applied');
    // What the table held is drained first (flow generation flips), then it is loaded whole.
    expect(applies.mock.calls.length).toBeGreaterThan(before);
    expect(JSON.stringify(kernel.lastTransaction!.commands)).toMatch(/"delete":\{"table":/);
    await again.persisted();
    await restarted.persisted();
  });

  it('a restart that replaces a differing table first collects what the table counted', async () => {
    const first = make();
    await first.apply(fixtureUpdate(Mode.MODE_ENFORCE, 5));
    await first.persisted();
    kernel.setCounter(`${fixtureChain(2)}_allowed`, 4, 400);
    // The kernel differs from the persisted rendering: the table is loaded again, whole.
    const restarted = make({ failsafe: { ...fixtureFailsafe, admin: undefined } });
    expect(await restarted.restore()).toBe('applied');
    expect(restarted.applied?.revision).toBe(5);
    expect(await restarted.collect()).toEqual([
      {
        ruleId: 'web/ingress/0',
        direction: Direction.DIRECTION_INGRESS,
        verdict: Verdict.VERDICT_ALLOWED,
        packets: 4,
        bytes: 400,
      },
    ]);
    await restarted.persisted();
  });

  it('without state, restore does nothing; a corrupt file is ignored', async () => {
    expect(await make().restore()).toBe('none');
    await writeFile(join(stateDir, 'policy.bin'), Buffer.from([0xff, 0xff, 0xff]));
    expect(await make().restore()).toBe('none');
    expect(applies).not.toHaveBeenCalled();
  });

  it('reads counters before replacing the table so no delta is lost', async () => {
    const seen: number[] = [];
    const dp = make({ onCounters: (c) => seen.push(c.length) });
    await dp.apply(fixtureUpdate(Mode.MODE_ENFORCE, 1));
    kernel.setCounter(`${fixtureChain(3)}_denied`, 2, 100);
    kernel.setCounter('in_default_denied', 1, 60);
    await dp.apply(fixtureUpdate(Mode.MODE_MONITOR, 2));
    kernel.setCounter(`${fixtureChain(3)}_would_deny`, 7, 700);
    const got = await dp.collect();
    expect(got.map((c) => [c.ruleId, c.verdict, c.packets])).toEqual([
      ['web/ingress/1', Verdict.VERDICT_DENIED, 2],
      ['default', Verdict.VERDICT_DENIED, 1],
      ['web/ingress/1', Verdict.VERDICT_WOULD_DENY, 7],
    ]);
    expect(await dp.collect()).toEqual([]);
    expect(seen).toEqual([2, 1]);
  });

  describe('flows', () => {
    const key = (src: string, port: number, code: number) => ({
      concat: [src, '10.0.9.1', 6, port, code],
    });
    const metricsText = async (m: ReturnType<typeof createAgentMetrics>) => m.registry.metrics();
    const withMetrics = (extra: Partial<DataplaneOptions> = {}) => {
      const m = createAgentMetrics();
      const dp = make({
        now: () => 42,
        onFlows: (r) => m.observeFlows(r),
        onFlowsDropped: (n) => m.observeFlowsDropped(n),
        ...extra,
      });
      return { dp, m };
    };

    it('drains flows at collect and before an apply, each through the RuleSet that recorded it', async () => {
      const { dp, m } = withMetrics();
      await dp.apply(fixtureUpdate(Mode.MODE_MONITOR, 1));
      kernel.packetAdd('flows_in4', key('10.0.1.5', 53, 4), 60);
      // The replace would empty the set: the flow must be read first, as would-deny.
      await dp.apply(fixtureUpdate(Mode.MODE_ENFORCE, 2));
      kernel.packetAdd('flows_in4', key('10.0.1.5', 53, 4), 60);
      kernel.packetAdd('flows_out4', key('10.0.9.1', 5432, 1), 60);
      await dp.collect();
      const { flows } = dp.flows.take(50);
      expect(flows.map((f) => [f.direction, f.src, f.ruleId, f.verdict, f.packets])).toEqual([
        [Direction.DIRECTION_INGRESS, '10.0.1.5', 'web/ingress/1', Verdict.VERDICT_WOULD_DENY, 1],
        [Direction.DIRECTION_INGRESS, '10.0.1.5', 'web/ingress/1', Verdict.VERDICT_DENIED, 1],
        [Direction.DIRECTION_EGRESS, '10.0.9.1', 'web/egress/0', Verdict.VERDICT_ALLOWED, 1],
      ]);
      expect(flows[0]!.firstSeenUnixMs).toBe(42);
      // Drained: a second collect finds nothing new.
      await dp.collect();
      expect(dp.flows.take(60).flows).toEqual([]);
      const text = await metricsText(m);
      expect(text).toContain(
        'bulkhead_flows_observed_total{direction="ingress",verdict="would_deny"} 1',
      );
      expect(text).toContain(
        'bulkhead_flows_observed_total{direction="ingress",verdict="denied"} 1',
      );
      expect(text).toContain(
        'bulkhead_flows_observed_total{direction="egress",verdict="allowed"} 1',
      );
    });

    it('soak: a tiny flow table fills, is reported as FLOW_TABLE_FULL once per read, then drains', async () => {
      const { dp, m } = withMetrics({ flowTable: { size: 2, timeoutSeconds: 60 } });
      await dp.apply(fixtureUpdate(Mode.MODE_ENFORCE, 1));
      const recorded = Array.from({ length: 50 }, (_, i) =>
        kernel.packetAdd('flows_in4', key(`10.0.0.${i + 1}`, 80, 3), 60),
      );
      expect(recorded.filter(Boolean)).toHaveLength(2);
      await dp.collect();
      const first = dp.flows.take(43);
      expect(first.flows).toHaveLength(2);
      expect(first.events).toEqual([
        {
          code: 'FLOW_TABLE_FULL',
          message: expect.stringContaining('flows_in4'),
          timeUnixMs: 42,
          attributes: { set: 'flows_in4', entries: '2', size: '2' },
        },
      ]);
      let text = await metricsText(m);
      expect(text).toContain('bulkhead_flow_table_full_total{set="flows_in4"} 1');
      expect(text).toContain('bulkhead_flow_table_entries{set="flows_in4"} 2');
      expect(text).not.toContain('bulkhead_flow_table_full_total{set="flows_out4"}');
      // Drained, so the table has room again: new flows are recorded, no new event.
      expect(kernel.packetAdd('flows_in4', key('10.0.0.99', 80, 3), 60)).toBe(true);
      await dp.collect();
      const second = dp.flows.take(44);
      expect(second.flows.map((f) => f.src)).toEqual(['10.0.0.99']);
      expect(second.events).toEqual([]);
      text = await metricsText(m);
      expect(text).toContain('bulkhead_flow_table_full_total{set="flows_in4"} 1');
      expect(text).toContain('bulkhead_flow_table_entries{set="flows_in4"} 1');
    });

    it('caps pending flows: new keys past --max-pending-flows are dropped, counted, reported', async () => {
      const { dp, m } = withMetrics({ maxPendingFlows: 3 });
      await dp.apply(fixtureUpdate(Mode.MODE_ENFORCE, 1));
      for (let i = 1; i <= 5; i++) kernel.packetAdd('flows_in4', key(`10.0.0.${i}`, 80, 0), 60);
      await dp.collect();
      // Not taken (stream down): the next read finds no room either.
      kernel.packetAdd('flows_in4', key('10.0.0.6', 80, 0), 60);
      await dp.collect();
      const { flows, events } = dp.flows.take(45);
      expect(flows).toHaveLength(3);
      expect(events).toEqual([
        expect.objectContaining({
          code: 'FLOWS_DROPPED',
          attributes: expect.objectContaining({ count: '3' }),
        }),
      ]);
      expect(await metricsText(m)).toMatch(/bulkhead_flows_dropped_total 3\b/);
    });
  });
});

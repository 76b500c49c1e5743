import { type NftDriver, Transaction } from '@bulkhead/nftables';
import { createFakeNft, type FakeNft } from '@bulkhead/nftables/testing';
import { Direction, Mode, Verdict } from '@bulkhead/proto';
import { beforeEach, describe, expect, it } from 'vitest';
import { fixtureFailsafe, fixturePolicy, fixtureRuleSet } from './fixture.test-util.js';
import { deleteFlows, mapFlowSets, readFlows } from './flows.js';
import { planFull } from './model.js';
import { FLOW_GEN_SET, renderModel } from './render.js';

const IN = Direction.DIRECTION_INGRESS;
const OUT = Direction.DIRECTION_EGRESS;
const T = { family: 'inet', table: 'bulkhead' };

/** One element as `nft -j list set` shows it (protocol by name, counter inside). */
function listed(val: unknown[], packets: number, bytes: number): unknown {
  return { elem: { val: { concat: val }, expires: 3599, counter: { packets, bytes } } };
}

function set(name: string, elem: unknown[], size = 65536): Record<string, unknown> {
  return { set: { ...T, name, size, elem } };
}

describe('mapFlowSets', () => {
  const objects = [
    set('flows_in4', [
      listed(['10.0.0.5', '10.0.9.1', 'tcp', 80, 3], 3, 180), // rule 2: allow
      listed(['10.0.1.5', '10.0.9.1', 'udp', 53, 4], 1, 60), // rule 3: deny
      listed(['192.0.2.1', '10.0.9.1', 'icmp', 0, 0], 2, 168), // default
      listed(['10.0.0.6', '10.0.9.1', 'tcp', 80, 9], 1, 60), // no rule 8: not attributable
    ]),
    set('flows_out6', [listed(['fd09::1', 'fd02::7', 'ipv6-icmp', 0, 2], 1, 104)]), // rule 1
    set('flows_in6', []),
    set('flows_out4', [listed(['10.0.9.1', '10.2.0.1', 'tcp', 5432, 4], 1, 60)]), // rule 3 is ingress
  ];

  it('maps elements to FlowRecords with the verdict of the rule and mode (enforce)', () => {
    const read = mapFlowSets(objects, fixtureRuleSet(Mode.MODE_ENFORCE), 1000);
    expect(read.records).toEqual([
      {
        direction: IN,
        src: '10.0.0.5',
        dst: '10.0.9.1',
        protocol: 6,
        port: 80,
        verdict: Verdict.VERDICT_ALLOWED,
        ruleId: 'web/ingress/0',
        packets: 3,
        bytes: 180,
        firstSeenUnixMs: 1000,
        lastSeenUnixMs: 1000,
      },
      expect.objectContaining({
        protocol: 17,
        port: 53,
        verdict: Verdict.VERDICT_DENIED,
        ruleId: 'web/ingress/1',
      }),
      expect.objectContaining({
        src: '192.0.2.1',
        protocol: 1,
        port: 0,
        verdict: Verdict.VERDICT_DENIED,
        ruleId: 'default',
        packets: 2,
      }),
      expect.objectContaining({
        direction: OUT,
        src: 'fd09::1',
        dst: 'fd02::7',
        protocol: 58,
        verdict: Verdict.VERDICT_DENIED,
        ruleId: 'web/egress/1',
      }),
    ]);
  });

  it('reports deny and default as would-deny in monitor; allow stays allowed', () => {
    const read = mapFlowSets(objects, fixtureRuleSet(Mode.MODE_MONITOR), 1000);
    expect(read.records.map((r) => [r.ruleId, r.verdict])).toEqual([
      ['web/ingress/0', Verdict.VERDICT_ALLOWED],
      ['web/ingress/1', Verdict.VERDICT_WOULD_DENY],
      ['default', Verdict.VERDICT_WOULD_DENY],
      ['web/egress/1', Verdict.VERDICT_WOULD_DENY],
    ]);
    const mixed = fixtureRuleSet(Mode.MODE_MONITOR);
    mixed.ingressMode = Mode.MODE_ENFORCE;
    expect(mapFlowSets(objects, mixed, 0).records.map((r) => r.verdict)).toEqual([
      Verdict.VERDICT_ALLOWED,
      Verdict.VERDICT_DENIED,
      Verdict.VERDICT_DENIED,
      Verdict.VERDICT_WOULD_DENY,
    ]);
  });

  it('deletes every element read, attributable or not, and reports fullness per set', () => {
    const read = mapFlowSets(objects, fixtureRuleSet(), 0);
    expect(read.elems.get('flows_in4')).toHaveLength(4);
    expect(read.elems.get('flows_out4')).toEqual([
      { concat: ['10.0.9.1', '10.2.0.1', 'tcp', 5432, 4] },
    ]);
    expect(read.sets).toEqual([
      { set: 'flows_in4', entries: 4, size: 65536 },
      { set: 'flows_out6', entries: 1, size: 65536 },
      { set: 'flows_in6', entries: 0, size: 65536 },
      { set: 'flows_out4', entries: 1, size: 65536 },
    ]);
  });
});

describe('readFlows and deleteFlows on the kernel-like fake', () => {
  let kernel: FakeNft;
  const rs = fixtureRuleSet(Mode.MODE_ENFORCE);
  const key = (src: string, port: number, code: number) => ({
    concat: [src, '10.0.9.1', 6, port, code],
  });
  const elems = async (name: string) => {
    const [s] = await kernel.list({ list: { set: { ...T, name } } });
    return ((s as { set: { elem?: unknown[] } }).set.elem ?? []).length;
  };

  beforeEach(async () => {
    kernel = createFakeNft();
    await kernel.apply(planFull(renderModel(fixturePolicy(Mode.MODE_ENFORCE), fixtureFailsafe)));
  });

  it('reads what the packet path recorded and drains exactly what it read', async () => {
    kernel.packetAdd('flows_in4', key('10.0.0.5', 80, 3), 60);
    kernel.packetAdd('flows_in4', key('10.0.0.5', 80, 3), 60);
    kernel.packetAdd('flows_in4', key('10.0.0.7', 81, 0), 40);
    const read = await readFlows(kernel, rs, 5);
    expect(read.records.map((r) => [r.src, r.port, r.ruleId, r.packets, r.bytes])).toEqual([
      ['10.0.0.5', 80, 'web/ingress/0', 2, 120],
      ['10.0.0.7', 81, 'default', 1, 40],
    ]);
    // A flow recorded between the read and the drain is not lost.
    kernel.packetAdd('flows_in4', key('10.0.0.8', 82, 0), 40);
    await deleteFlows(kernel, read);
    const again = await readFlows(kernel, rs, 6);
    expect(again.records.map((r) => r.src)).toEqual(['10.0.0.8']);
  });

  it('still drains the others when an element vanished before the drain', async () => {
    // Generation b: what readFlows leaves for deleteFlows.
    kernel.packetAdd('flows_in4_b', key('10.0.0.5', 80, 3), 60);
    kernel.packetAdd('flows_in4_b', key('10.0.0.6', 80, 3), 60);
    const read = await readFlows(kernel, rs, 5);
    expect(read.records).toHaveLength(2);
    // As if the kernel's timeout had removed it.
    await kernel.apply(
      new Transaction().delete({
        element: { ...T, name: 'flows_in4_b', elem: [read.elems.get('flows_in4_b')![0]] },
      }),
    );
    await deleteFlows(kernel, read);
    expect(await elems('flows_in4_b')).toBe(0);
  });

  it('loses and doubles nothing that the packet path counts at any moment of the drains', async () => {
    // The packet path as the rendering makes it: into generation b while flow_gen holds
    // the families, else into a. One packet of one flow before every kernel call.
    let sent = 0;
    const packet = async () => {
      const [gen] = await kernel.list({ list: { set: { ...T, name: FLOW_GEN_SET } } });
      const b = ((gen as { set: { elem?: unknown[] } }).set.elem ?? []).length > 0;
      kernel.packetAdd(b ? 'flows_in4_b' : 'flows_in4', key('10.0.0.5', 80, 3), 60);
      sent++;
    };
    const driver: NftDriver = {
      ...kernel,
      apply: async (tx) => {
        await packet();
        return kernel.apply(tx);
      },
      list: async (cmd) => {
        await packet();
        return kernel.list(cmd);
      },
    };
    let read = 0;
    for (let i = 0; i < 20; i++) {
      const r = await readFlows(driver, rs, i);
      await deleteFlows(driver, r);
      read += r.records.reduce((n, f) => n + f.packets, 0);
    }
    await packet();
    const last = await readFlows(kernel, rs, 99);
    read += last.records.reduce((n, f) => n + f.packets, 0);
    expect(sent).toBeGreaterThan(100);
    expect(read).toBe(sent);
  });

  it('reads nothing, and fails nothing, when the table has no flow sets', async () => {
    const empty = createFakeNft();
    const read = await readFlows(empty, rs, 0);
    expect(read.records).toEqual([]);
    await deleteFlows(empty, read);
  });
});

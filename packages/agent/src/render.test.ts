import type { NftCommand } from '@bulkhead/nftables';
import { createFakeNft } from '@bulkhead/nftables/testing';
import { Mode } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import { AgentError } from './errors.js';
import { FIXTURE_GROUPS, fixtureFailsafe, fixturePolicy } from './fixture.test-util.js';
import { planFull } from './model.js';
import {
  type Failsafe,
  type FlowTableOptions,
  type GroupPolicy,
  groupSet,
  renderModel,
  ruleChain,
  serviceSet,
} from './render.js';

/** The fixture's rule chains, by rule index (0, 1 egress allow/deny; 2, 3 ingress allow/deny). */
const R = fixturePolicy().ruleSet.rules.map(ruleChain);

const renderRuleSet = (p: GroupPolicy, f: Failsafe, flows?: FlowTableOptions) =>
  planFull(renderModel(p, f, flows));
const renderCommands = (p: GroupPolicy, f: Failsafe, flows?: FlowTableOptions) =>
  renderRuleSet(p, f, flows).commands;
const fixtureRuleSet = fixturePolicy;

type Obj = Record<string, Record<string, unknown>>;

function added(cmds: NftCommand[], kind: string): Record<string, unknown>[] {
  return cmds
    .map((c) => (c.add as Obj | undefined)?.[kind])
    .filter((x): x is Record<string, unknown> => x !== undefined);
}

function rulesOf(cmds: NftCommand[], chain: string): unknown[][] {
  return added(cmds, 'rule')
    .filter((r) => r.chain === chain)
    .map((r) => r.expr as unknown[]);
}

/** The last rule of a chain: the one that counts and decides. */
function verdictOf(cmds: NftCommand[], chain: string): unknown[] | undefined {
  return rulesOf(cmds, chain).at(-1);
}

describe('renderModel (group form)', () => {
  const enforce = renderCommands(fixtureRuleSet(Mode.MODE_ENFORCE), fixtureFailsafe);
  const monitor = renderCommands(fixtureRuleSet(Mode.MODE_MONITOR), fixtureFailsafe);

  it('replaces the table atomically: add, delete, add first', () => {
    const t = { table: { family: 'inet', name: 'bulkhead' } };
    expect(enforce.slice(0, 3)).toEqual([{ add: t }, { delete: t }, { add: t }]);
    expect(enforce.slice(3).some((c) => 'delete' in c || 'flush' in c)).toBe(false);
  });

  it('returns a valid Transaction holding the same commands', () => {
    const tx = renderRuleSet(fixtureRuleSet(), fixtureFailsafe);
    expect(tx.error).toBeUndefined();
    expect(tx.commands).toEqual(enforce);
  });

  it('applies to a kernel-like fake in both modes, replacing the table each time', async () => {
    const fake = createFakeNft();
    for (const mode of [Mode.MODE_MONITOR, Mode.MODE_ENFORCE, Mode.MODE_MONITOR]) {
      await fake.apply(renderRuleSet(fixtureRuleSet(mode), fixtureFailsafe));
    }
    const dump = fake.dump();
    expect(dump.filter((o) => 'table' in o)).toHaveLength(1);
    // Two sets per group, one service set per rule with ports, 2 x 4 flow sets, flow_gen.
    expect(dump.filter((o) => 'set' in o)).toHaveLength(2 * FIXTURE_GROUPS.size + 3 + 8 + 1);
    expect(
      dump.filter((o) => 'counter' in o).map((o) => (o.counter as { name: string }).name),
    ).toContain(`${R[1]}_would_deny`);
  });

  it('has base chains input and output with policy accept', () => {
    const base = added(enforce, 'chain').filter((c) => c.hook !== undefined);
    expect(base).toEqual([
      expect.objectContaining({
        name: 'input',
        hook: 'input',
        type: 'filter',
        prio: 0,
        policy: 'accept',
      }),
      expect.objectContaining({
        name: 'output',
        hook: 'output',
        type: 'filter',
        prio: 0,
        policy: 'accept',
      }),
    ]);
  });

  it("holds each group in one interval set per family, and each rule's ports in one set", () => {
    const sets = new Map(added(enforce, 'set').map((m) => [m.name, m]));
    expect(sets.get(groupSet('sel:web', 4))).toMatchObject({
      type: ['ipv4_addr', 'nf_proto'],
      flags: ['interval'],
      elem: [
        { concat: [{ range: ['10.0.0.0', '10.0.0.255'] }, 'ipv4'] },
        { concat: ['10.0.1.5', 'ipv4'] },
      ],
    });
    expect(sets.get(groupSet('sel:web', 6))).toMatchObject({
      type: ['ipv6_addr', 'nf_proto'],
      elem: [{ concat: [{ range: ['fd00::', 'fd00::ffff'] }, 'ipv6'] }],
    });
    // An empty family is declared too (a later update may fill it) but has no elements.
    expect(sets.get(groupSet('list:out', 6))).toEqual({
      family: 'inet',
      table: 'bulkhead',
      name: groupSet('list:out', 6),
      type: ['ipv6_addr', 'nf_proto'],
      flags: ['interval'],
    });
    expect(groupSet('list:out', 6)).toMatch(/^g6_[0-9a-f]{16}$/);
    const rules = fixturePolicy().ruleSet.rules;
    expect(sets.get(serviceSet(rules[0]!))).toMatchObject({
      type: ['inet_proto', 'inet_service'],
      flags: ['interval'],
      elem: [{ concat: [6, 5432] }, { concat: [132, { range: [1000, 2000] }] }],
    });
    expect(sets.get(serviceSet(rules[1]!))).toMatchObject({
      elem: [{ concat: [17, { range: [0, 65535] }] }],
    });
    // Any protocol needs no service set.
    expect(sets.has(serviceSet(rules[3]!))).toBe(false);
  });

  it('merges overlapping port ranges of a protocol (an interval set refuses overlaps)', () => {
    const p = fixturePolicy();
    p.ruleSet.rules[0]!.services = [
      { protocol: 6, portFrom: 10, portTo: 20 },
      { protocol: 6, portFrom: 15, portTo: 30 },
      { protocol: 6, portFrom: 31, portTo: 31 },
      { protocol: 17, portFrom: 5, portTo: 5 },
    ];
    const set = added(renderCommands(p, fixtureFailsafe), 'set').find(
      (x) => x.name === serviceSet(p.ruleSet.rules[0]!),
    );
    expect(set?.elem).toEqual([{ concat: [6, { range: [10, 31] }] }, { concat: [17, 5] }]);
  });

  it('puts failsafe rules first, then deny rules, then allow rules, then the default', () => {
    const input = rulesOf(enforce, 'input');
    expect(input[0]).toEqual([
      { match: { op: '==', left: { meta: { key: 'iif' } }, right: 'lo' } },
      { accept: null },
    ]);
    expect(JSON.stringify(input[1])).toContain('established');
    expect(JSON.stringify(input[2])).toContain('nd-neighbor-solicit');
    expect(input[3]).toEqual([
      {
        match: {
          op: '==',
          left: { payload: { protocol: 'ip', field: 'saddr' } },
          right: { prefix: { addr: '10.8.0.0', len: 16 } },
        },
      },
      { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 22 } },
      { accept: null },
    ]);
    expect(JSON.stringify(input[4])).toContain('fd08::');
    const addr = (family: 4 | 6, id: string, field = 'saddr') => ({
      match: {
        op: '==',
        left: {
          concat: [
            { payload: { protocol: family === 4 ? 'ip' : 'ip6', field } },
            { meta: { key: 'nfproto' } },
          ],
        },
        right: `@${groupSet(id, family)}`,
      },
    });
    const l4 = (right: unknown) => ({
      match: { op: '==', left: { meta: { key: 'l4proto' } }, right },
    });
    const ports = (rule: number) => ({
      match: {
        op: '==',
        left: {
          concat: [{ meta: { key: 'l4proto' } }, { payload: { protocol: 'th', field: 'dport' } }],
        },
        right: `@${serviceSet(fixturePolicy().ruleSet.rules[rule]!)}`,
      },
    });
    const jump = (rule: number) => ({ jump: { target: R[rule] } });
    expect(input.slice(5)).toEqual([
      // The deny rule (any protocol), per group and family: no service match.
      [addr(4, 'cidr:bad'), jump(3)],
      [addr(6, 'cidr:bad'), jump(3)],
      [addr(4, 'list:db'), jump(3)],
      [addr(6, 'list:db'), jump(3)],
      // Then the allow rule: ports, then icmp for IPv4 only and icmpv6 for IPv6 only.
      [addr(4, 'sel:web'), ports(2), jump(2)],
      [addr(4, 'sel:web'), l4(1), jump(2)],
      [addr(6, 'sel:web'), ports(2), jump(2)],
      [addr(6, 'sel:web'), l4(58), jump(2)],
      [{ jump: { target: 'in_default' } }],
    ]);

    const output = rulesOf(enforce, 'output');
    expect(JSON.stringify(output)).toContain('"oif"');
    expect(output).toContainEqual([
      {
        match: {
          op: '==',
          left: { payload: { protocol: 'ip', field: 'daddr' } },
          right: '10.9.0.1',
        },
      },
      { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 8443 } },
      { accept: null },
    ]);
    // Egress looks up the destination; the deny rule (index 1) comes before the allow (0).
    expect(output.slice(-7)).toEqual([
      [addr(4, 'list:out', 'daddr'), ports(1), jump(1)],
      [addr(4, 'list:out', 'daddr'), l4(47), jump(1)],
      [addr(6, 'list:out', 'daddr'), ports(1), jump(1)],
      [addr(6, 'list:out', 'daddr'), l4(47), jump(1)],
      [addr(4, 'list:db', 'daddr'), ports(0), jump(0)],
      [addr(6, 'list:db', 'daddr'), ports(0), jump(0)],
      [{ jump: { target: 'out_default' } }],
    ]);
  });

  it('counts and decides in each rule chain: enforce drops denies', () => {
    expect(verdictOf(enforce, R[0]!)).toEqual([{ counter: `${R[0]}_allowed` }, { accept: null }]);
    expect(verdictOf(enforce, R[1]!)).toEqual([{ counter: `${R[1]}_denied` }, { drop: null }]);
    expect(verdictOf(enforce, 'in_default')).toEqual([
      { counter: 'in_default_denied' },
      { drop: null },
    ]);
    expect(verdictOf(enforce, 'out_default')).toEqual([
      { counter: 'out_default_denied' },
      { drop: null },
    ]);
    expect(added(enforce, 'counter').map((c) => c.name)).toEqual([
      `${R[0]}_allowed`,
      `${R[1]}_denied`,
      `${R[2]}_allowed`,
      `${R[3]}_denied`,
      'in_default_denied',
      'out_default_denied',
    ]);
  });

  it('monitor differs from enforce exactly in the deny and default verdicts', () => {
    expect(verdictOf(monitor, R[1]!)).toEqual([
      { counter: `${R[1]}_would_deny` },
      { accept: null },
    ]);
    expect(verdictOf(monitor, 'out_default')).toEqual([
      { counter: 'out_default_would_deny' },
      { accept: null },
    ]);
    expect(monitor.length).toBe(enforce.length);
    const differing = enforce
      .map((c, i) => (JSON.stringify(c) === JSON.stringify(monitor[i]) ? undefined : i))
      .filter((i) => i !== undefined)
      .map((i) => JSON.stringify(enforce[i]!));
    // 2 deny rules + 2 defaults, each a counter and a rule (whose comment digests it).
    expect(differing).toHaveLength(8);
    for (const d of differing) {
      expect(d).toMatch(/_denied|"comment"/);
    }
  });

  it('declares two generations of four flow sets with per-element counters, and flow_gen, before any rule adds to them', () => {
    for (const cmds of [
      enforce,
      renderCommands(fixtureRuleSet(), fixtureFailsafe, { size: 2, timeoutSeconds: 60 }),
    ]) {
      const sets = added(cmds, 'set').filter((x) => String(x.name).startsWith('flows_'));
      expect(sets.map((x) => x.name)).toEqual([
        'flows_in4',
        'flows_in6',
        'flows_out4',
        'flows_out6',
        'flows_in4_b',
        'flows_in6_b',
        'flows_out4_b',
        'flows_out6_b',
      ]);
      expect(added(cmds, 'set').find((x) => x.name === 'flow_gen')).toEqual({
        family: 'inet',
        table: 'bulkhead',
        name: 'flow_gen',
        type: 'nf_proto',
      });
      const firstRule = cmds.findIndex((c) => (c.add as Obj | undefined)?.rule !== undefined);
      const lastSet = cmds.findLastIndex((c) => (c.add as Obj | undefined)?.set !== undefined);
      expect(lastSet).toBeLessThan(firstRule);
    }
    const byName = new Map(added(enforce, 'set').map((x) => [x.name, x]));
    expect(byName.get('flows_in4')).toEqual({
      family: 'inet',
      table: 'bulkhead',
      name: 'flows_in4',
      type: ['ipv4_addr', 'ipv4_addr', 'inet_proto', 'inet_service', 'mark'],
      flags: ['timeout'],
      timeout: 3600,
      size: 65536,
      stmt: [{ counter: null }],
    });
    expect(byName.get('flows_out6')?.type).toEqual([
      'ipv6_addr',
      'ipv6_addr',
      'inet_proto',
      'inet_service',
      'mark',
    ]);
    const tiny = renderCommands(fixtureRuleSet(), fixtureFailsafe, { size: 2, timeoutSeconds: 60 });
    expect(added(tiny, 'set').find((x) => x.name === 'flows_in4')).toMatchObject({
      size: 2,
      timeout: 60,
    });
  });

  it('records new connections in every rule and default chain, before the verdict, in both modes', () => {
    const nfproto = (v: string) => ({
      match: { op: '==', left: { meta: { key: 'nfproto' } }, right: v },
    });
    const l4 = (op: string) => ({
      match: { op, left: { meta: { key: 'l4proto' } }, right: { set: [6, 17, 132] } },
    });
    const key = (proto: string, port: unknown, code: number) => ({
      concat: [
        { payload: { protocol: proto, field: 'saddr' } },
        { payload: { protocol: proto, field: 'daddr' } },
        { meta: { key: 'l4proto' } },
        port,
        code,
      ],
    });
    const dport = { payload: { protocol: 'th', field: 'dport' } };
    // Generation a while flow_gen does not hold the family, b while it does.
    const inGen = (gen: string) => ({
      match: {
        op: gen === 'a' ? '!=' : '==',
        left: { meta: { key: 'nfproto' } },
        right: '@flow_gen',
      },
    });
    const expected = (dir: string, code: number) =>
      ['a', 'b'].flatMap((gen) => {
        const suffix = gen === 'b' ? '_b' : '';
        return [
          [
            nfproto('ipv4'),
            inGen(gen),
            l4('=='),
            { set: { op: 'add', elem: key('ip', dport, code), set: `@flows_${dir}4${suffix}` } },
          ],
          [
            nfproto('ipv4'),
            inGen(gen),
            l4('!='),
            { set: { op: 'add', elem: key('ip', 0, code), set: `@flows_${dir}4${suffix}` } },
          ],
          [
            nfproto('ipv6'),
            inGen(gen),
            l4('=='),
            { set: { op: 'add', elem: key('ip6', dport, code), set: `@flows_${dir}6${suffix}` } },
          ],
          [
            nfproto('ipv6'),
            inGen(gen),
            l4('!='),
            { set: { op: 'add', elem: key('ip6', 0, code), set: `@flows_${dir}6${suffix}` } },
          ],
        ];
      });
    for (const cmds of [enforce, monitor]) {
      // Fixture rules: 0, 1 egress; 2, 3 ingress. Code = index + 1, default = 0.
      const chains: [string, string, number][] = [
        [R[0]!, 'out', 1],
        [R[1]!, 'out', 2],
        [R[2]!, 'in', 3],
        [R[3]!, 'in', 4],
        ['in_default', 'in', 0],
        ['out_default', 'out', 0],
      ];
      for (const [chain, dir, code] of chains) {
        const rules = rulesOf(cmds, chain);
        expect(rules).toHaveLength(9);
        expect(rules.slice(0, 8)).toEqual(expected(dir, code));
        // The verdict rule stands alone: it never depends on the set having room.
        expect(JSON.stringify(rules[8])).not.toContain('@flows');
      }
    }
  });

  it('renders the same input to the same commands; each rule is named by its expression', () => {
    expect(renderCommands(fixtureRuleSet(), fixtureFailsafe)).toEqual(enforce);
    const rules = added(enforce, 'rule');
    for (const r of rules) expect(r.comment).toMatch(/^bh:[0-9a-f]{20}$/);
    // Same expression, same comment (the nine record/verdict rules differ per chain).
    const comments = (cmds: NftCommand[]) => added(cmds, 'rule').map((r) => r.comment);
    expect(new Set(comments(enforce)).size).toBeLessThan(rules.length);
    const otherFailsafe = renderCommands(fixtureRuleSet(), {
      ...fixtureFailsafe,
      admin: undefined,
    });
    expect(comments(otherFailsafe)).not.toEqual(comments(enforce));
  });

  it('names rule chains by rule id, so a rule added in front renames nothing', () => {
    const shifted = fixtureRuleSet();
    shifted.ruleSet.rules.unshift({ ...shifted.ruleSet.rules[2]!, id: 'a/ingress/0' });
    const chainOf = (cmds: NftCommand[], id: string) =>
      added(cmds, 'chain').find((c) => c.name === ruleChain({ id }));
    expect(chainOf(renderCommands(shifted, fixtureFailsafe), 'web/ingress/0')).toEqual(
      chainOf(enforce, 'web/ingress/0'),
    );
    const dup = fixtureRuleSet();
    dup.ruleSet.rules[1]!.id = dup.ruleSet.rules[0]!.id;
    expect(() => renderCommands(dup, fixtureFailsafe)).toThrow(
      expect.objectContaining({ code: 'RULESET_INVALID' }),
    );
  });

  it('rejects a malformed rule set or range with RULESET_INVALID', () => {
    const bad = fixtureRuleSet();
    bad.ruleSet.rules[0]!.groups = ['list:missing'];
    expect(() => renderCommands(bad, fixtureFailsafe)).toThrow(
      expect.objectContaining({ code: 'RULESET_INVALID' }),
    );
    for (const range of [
      { from: '10.0.0.1', to: 'fd00::1' },
      { from: '10.0.0.9', to: '10.0.0.1' },
      { from: 'fd00::2', to: 'fd00::1' },
      { from: '10.0.0.1"}]', to: '10.0.0.1"}]' },
    ]) {
      const groups = new Map([...FIXTURE_GROUPS, ['sel:web', [range]]]);
      expect(() => renderCommands({ ...fixtureRuleSet(), groups }, fixtureFailsafe)).toThrow(
        AgentError,
      );
    }
    // Group ids never reach nft syntax: any text becomes a digest.
    const odd = '"; flush ruleset; "\u00e9';
    const p = fixtureRuleSet();
    p.ruleSet.rules[0]!.groups = [odd];
    const groups = new Map([...FIXTURE_GROUPS, [odd, []]]);
    const ok = renderCommands({ ...p, groups }, fixtureFailsafe);
    expect(JSON.stringify(ok)).not.toContain('flush ruleset');
  });

  it('rejects a bad admin CIDR with CONFIG_INVALID', () => {
    expect(() =>
      renderCommands(fixtureRuleSet(), {
        ...fixtureFailsafe,
        admin: { cidrs: ['10.0.0.0/33'], port: 22 },
      }),
    ).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
  });
});

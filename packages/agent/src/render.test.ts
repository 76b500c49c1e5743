import type { NftCommand } from '@bulkhead/nftables';
import { createFakeNft } from '@bulkhead/nftables/testing';
import { Mode } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import { AgentError } from './errors.js';
import { fixtureFailsafe, fixtureRuleSet } from './fixture.test-util.js';
import { renderCommands, renderRuleSet, ruleChain } from './render.js';

/** The fixture's rule chains, by rule index. */
const R = fixtureRuleSet().rules.map(ruleChain);

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

describe('renderRuleSet', () => {
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
    expect(dump.filter((o) => 'map' in o)).toHaveLength(10);
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

  it('has one verdict map per direction, family and kind', () => {
    const maps = added(enforce, 'map');
    expect(maps.map((m) => m.name).sort()).toEqual(
      [
        'in4_ports',
        'in4_proto',
        'in4_any',
        'in6_ports',
        'in6_proto',
        'in6_any',
        'out4_ports',
        'out4_any',
        'out6_ports',
        'out6_proto',
      ].sort(),
    );
    const byName = new Map(maps.map((m) => [m.name, m]));
    expect(byName.get('in4_ports')).toMatchObject({
      type: ['ipv4_addr', 'inet_proto', 'inet_service'],
      map: 'verdict',
      flags: ['interval'],
      elem: [
        [
          { concat: [{ range: ['10.0.0.0', '10.0.0.255'] }, 6, { range: [80, 90] }] },
          { jump: { target: R[0] } },
        ],
        [{ concat: ['10.0.1.5', 17, 53] }, { jump: { target: R[1] } }],
      ],
    });
    expect(byName.get('in6_any')).toMatchObject({
      type: 'ipv6_addr',
      elem: [[{ range: ['fd01::', 'fd01::ff'] }, { jump: { target: R[1] } }]],
    });
    expect(byName.get('out6_proto')).toMatchObject({
      type: ['ipv6_addr', 'inet_proto'],
      elem: [[{ concat: [{ range: ['fd02::', 'fd02::ff'] }, 47] }, { jump: { target: R[3] } }]],
    });
  });

  it('puts failsafe rules first, then lookups most specific first, then the default', () => {
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
    const lookups = input.slice(5, -1).map((e) => (e[0] as { vmap: { data: string } }).vmap.data);
    expect(lookups).toEqual([
      '@in4_ports',
      '@in4_proto',
      '@in4_any',
      '@in6_ports',
      '@in6_proto',
      '@in6_any',
    ]);
    expect(input.at(-1)).toEqual([{ jump: { target: 'in_default' } }]);

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
    const outLookups = output
      .filter((e) => 'vmap' in (e[0] as object))
      .map((e) => (e[0] as { vmap: { key: unknown; data: string } }).vmap);
    expect(outLookups.map((v) => v.data)).toEqual([
      '@out4_ports',
      '@out4_any',
      '@out6_ports',
      '@out6_proto',
    ]);
    // Egress looks up the destination.
    expect(JSON.stringify(outLookups[0]!.key)).toContain('daddr');
    expect(JSON.stringify(outLookups[0]!.key)).not.toContain('saddr');
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

  it('declares four flow sets with per-element counters, before any rule adds to them', () => {
    for (const cmds of [
      enforce,
      renderCommands(fixtureRuleSet(), fixtureFailsafe, { size: 2, timeoutSeconds: 60 }),
    ]) {
      const sets = added(cmds, 'set');
      expect(sets.map((x) => x.name)).toEqual([
        'flows_in4',
        'flows_in6',
        'flows_out4',
        'flows_out6',
      ]);
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
    expect(added(tiny, 'set')[0]).toMatchObject({ size: 2, timeout: 60 });
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
    const expected = (dir: string, code: number) => [
      [
        nfproto('ipv4'),
        l4('=='),
        { set: { op: 'add', elem: key('ip', dport, code), set: `@flows_${dir}4` } },
      ],
      [
        nfproto('ipv4'),
        l4('!='),
        { set: { op: 'add', elem: key('ip', 0, code), set: `@flows_${dir}4` } },
      ],
      [
        nfproto('ipv6'),
        l4('=='),
        { set: { op: 'add', elem: key('ip6', dport, code), set: `@flows_${dir}6` } },
      ],
      [
        nfproto('ipv6'),
        l4('!='),
        { set: { op: 'add', elem: key('ip6', 0, code), set: `@flows_${dir}6` } },
      ],
    ];
    for (const cmds of [enforce, monitor]) {
      // Fixture rules: 0, 1 ingress; 2, 3 egress. Code = index + 1, default = 0.
      const chains: [string, string, number][] = [
        [R[0]!, 'in', 1],
        [R[1]!, 'in', 2],
        [R[2]!, 'out', 3],
        [R[3]!, 'out', 4],
        ['in_default', 'in', 0],
        ['out_default', 'out', 0],
      ];
      for (const [chain, dir, code] of chains) {
        const rules = rulesOf(cmds, chain);
        expect(rules).toHaveLength(5);
        expect(rules.slice(0, 4)).toEqual(expected(dir, code));
        // The verdict rule stands alone: it never depends on the set having room.
        expect(JSON.stringify(rules[4])).not.toContain('@flows');
      }
    }
  });

  it('renders the same input to the same commands; each rule is named by its expression', () => {
    expect(renderCommands(fixtureRuleSet(), fixtureFailsafe)).toEqual(enforce);
    const rules = added(enforce, 'rule');
    for (const r of rules) expect(r.comment).toMatch(/^bh:[0-9a-f]{20}$/);
    // Same expression, same comment (the five record/verdict rules differ per chain).
    const comments = (cmds: NftCommand[]) => added(cmds, 'rule').map((r) => r.comment);
    expect(new Set(comments(enforce)).size).toBeLessThan(rules.length);
    const otherFailsafe = renderCommands(fixtureRuleSet(), {
      ...fixtureFailsafe,
      admin: undefined,
    });
    expect(comments(otherFailsafe)).not.toEqual(comments(enforce));
  });

  it('names rule chains by rule id, so a rule added in front renames nothing', () => {
    const rs = fixtureRuleSet();
    const shifted = fixtureRuleSet();
    shifted.rules.unshift({ ...rs.rules[0]!, id: 'new/ingress/0' });
    for (const e of shifted.entries) e.rule += 1;
    const targets = (cmds: NftCommand[]) =>
      added(cmds, 'map').flatMap((m) => (m.elem as unknown[][]).map((x) => JSON.stringify(x)));
    expect(targets(renderCommands(shifted, fixtureFailsafe))).toEqual(targets(enforce));
    const dup = fixtureRuleSet();
    dup.rules[1]!.id = dup.rules[0]!.id;
    expect(() => renderCommands(dup, fixtureFailsafe)).toThrow(
      expect.objectContaining({ code: 'RULESET_INVALID' }),
    );
  });

  it('rejects a malformed RuleSet with RULESET_INVALID', () => {
    const bad = fixtureRuleSet();
    bad.entries[0]!.rule = 99;
    expect(() => renderCommands(bad, fixtureFailsafe)).toThrow(
      expect.objectContaining({ code: 'RULESET_INVALID' }),
    );
    const mixed = fixtureRuleSet();
    mixed.entries[0]!.addrTo = 'fd00::1';
    expect(() => renderCommands(mixed, fixtureFailsafe)).toThrow(AgentError);
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

import { createHash } from 'node:crypto';
import { Action, Direction, Mode, RuleSet } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import { compile, hashRuleSet } from './compile.js';
import { evaluate, evaluatePolicy } from './evaluate.js';
import type { Policy, PolicyRule, PolicyState, Workload } from './model.js';

const TCP = 6;
const UDP = 17;
const ICMP = 1;
const ICMPV6 = 58;
const GRE = 47;

function workload(name: string, addresses: string[], labels: Record<string, string>): Workload {
  return { name, addresses, labels, mode: { ingress: 'enforce', egress: 'monitor' } };
}

const web = workload('web', ['10.0.0.1', 'fd00::1'], { app: 'web' });
const api = workload('api', ['10.0.0.2', 'fd00::2'], { app: 'api' });
const db = workload('db', ['10.0.0.3', 'fd00::3'], { app: 'db' });

function stateWith(policies: Policy[], extra: Partial<PolicyState> = {}): PolicyState {
  return { workloads: [web, api, db], ipLists: [], services: [], policies, ...extra };
}

/** Compiles and returns a checker that asks both the entries and the model, and insists they agree. */
function compiled(state: PolicyState, name = 'db') {
  const result = compile(state, 1);
  expect(result.diagnostics).toEqual([]);
  const ruleSet = result.ruleSets.find((r) => r.workloadId === name)!;
  const check = (
    direction: 'ingress' | 'egress',
    peer: string,
    protocol: number,
    port?: number,
  ) => {
    const fromEntries = evaluate(ruleSet, direction, peer, protocol, port);
    expect(fromEntries).toEqual(evaluatePolicy(state, name, direction, peer, protocol, port));
    return fromEntries;
  };
  return { ruleSet, check };
}

const ingressPolicy = (rules: PolicyRule[], name = 'db'): Policy => ({
  name,
  scope: { matchLabels: { app: 'db' } },
  ingress: rules,
});

describe('compile semantics', () => {
  it('denies by default', () => {
    const { ruleSet, check } = compiled(stateWith([]));
    expect(ruleSet.rules).toEqual([]);
    expect(ruleSet.entries).toEqual([]);
    expect(check('ingress', '10.0.0.1', TCP, 22)).toEqual({ action: 'deny' });
  });

  it('allows from selected workloads to the given port only', () => {
    const { ruleSet, check } = compiled(
      stateWith(
        [
          ingressPolicy([
            {
              action: 'allow',
              peers: [{ selector: { matchLabels: { app: 'api' } } }],
              services: ['pg'],
            },
          ]),
        ],
        { services: [{ name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] }] },
      ),
    );
    expect(check('ingress', '10.0.0.2', TCP, 5432)).toEqual({
      action: 'allow',
      ruleId: 'db/ingress/0',
    });
    expect(check('ingress', 'fd00::2', TCP, 5432)).toEqual({
      action: 'allow',
      ruleId: 'db/ingress/0',
    });
    expect(check('ingress', '10.0.0.2', TCP, 5433)).toEqual({ action: 'deny' });
    expect(check('ingress', '10.0.0.2', UDP, 5432)).toEqual({ action: 'deny' });
    expect(check('ingress', '10.0.0.1', TCP, 5432)).toEqual({ action: 'deny' });
    expect(check('egress', '10.0.0.2', TCP, 5432)).toEqual({ action: 'deny' });
    expect(ruleSet.entries).toEqual([
      {
        direction: Direction.DIRECTION_INGRESS,
        addrFrom: '10.0.0.2',
        addrTo: '10.0.0.2',
        protocol: TCP,
        portFrom: 5432,
        portTo: 5432,
        rule: 0,
      },
      {
        direction: Direction.DIRECTION_INGRESS,
        addrFrom: 'fd00::2',
        addrTo: 'fd00::2',
        protocol: TCP,
        portFrom: 5432,
        portTo: 5432,
        rule: 0,
      },
    ]);
  });

  it('lets a finer deny beat a coarser allow, and a coarser deny beat a finer allow', () => {
    const { ruleSet, check } = compiled(
      stateWith([
        ingressPolicy([
          { action: 'allow', peers: [{ cidr: '10.0.0.0/8' }] },
          {
            action: 'deny',
            peers: [{ cidr: '10.1.0.0/16' }],
            services: [{ protocol: 'tcp', port: 22 }],
          },
          {
            action: 'allow',
            peers: [{ cidr: '192.168.0.0/16' }],
            services: [{ protocol: 'tcp', port: 443 }],
          },
          { action: 'deny', peers: [{ cidr: '192.168.1.0/24' }] },
        ]),
      ]),
    );
    expect(check('ingress', '10.1.2.3', TCP, 22)).toEqual({
      action: 'deny',
      ruleId: 'db/ingress/1',
    });
    expect(check('ingress', '10.1.2.3', TCP, 23)).toEqual({
      action: 'allow',
      ruleId: 'db/ingress/0',
    });
    expect(check('ingress', '10.2.0.1', TCP, 22)).toEqual({
      action: 'allow',
      ruleId: 'db/ingress/0',
    });
    expect(check('ingress', '192.168.0.1', TCP, 443)).toEqual({
      action: 'allow',
      ruleId: 'db/ingress/2',
    });
    expect(check('ingress', '192.168.1.1', TCP, 443)).toEqual({
      action: 'deny',
      ruleId: 'db/ingress/3',
    });
    // The tcp/22 cell exists as its own entry, decided by the deny.
    expect(ruleSet.entries).toContainEqual({
      direction: Direction.DIRECTION_INGRESS,
      addrFrom: '10.1.0.0',
      addrTo: '10.1.255.255',
      protocol: TCP,
      portFrom: 22,
      portTo: 22,
      rule: 1,
    });
  });

  it('subtracts exceptions of cidr peers and IP lists', () => {
    const { check } = compiled(
      stateWith(
        [
          ingressPolicy([
            { action: 'allow', peers: [{ cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] }] },
            {
              action: 'allow',
              peers: [{ ipList: 'vpn' }],
              services: [{ protocol: 'udp', port: 53 }],
            },
          ]),
        ],
        {
          ipLists: [
            {
              name: 'vpn',
              cidrs: ['172.16.0.0/12', '2001:db8::/32'],
              except: ['172.16.0.0/16', '2001:db8::/48'],
            },
          ],
        },
      ),
    );
    expect(check('ingress', '10.0.255.255', TCP, 80)).toEqual({
      action: 'allow',
      ruleId: 'db/ingress/0',
    });
    expect(check('ingress', '10.1.0.0', TCP, 80)).toEqual({ action: 'deny' });
    expect(check('ingress', '10.1.255.255', TCP, 80)).toEqual({ action: 'deny' });
    expect(check('ingress', '10.2.0.0', TCP, 80)).toEqual({
      action: 'allow',
      ruleId: 'db/ingress/0',
    });
    expect(check('ingress', '172.17.0.1', UDP, 53)).toEqual({
      action: 'allow',
      ruleId: 'db/ingress/1',
    });
    expect(check('ingress', '172.16.9.9', UDP, 53)).toEqual({ action: 'deny' });
    expect(check('ingress', '2001:db8:1::1', UDP, 53)).toEqual({
      action: 'allow',
      ruleId: 'db/ingress/1',
    });
    expect(check('ingress', '2001:db8::1', UDP, 53)).toEqual({ action: 'deny' });
  });

  it('treats no services and protocol any as every protocol', () => {
    const { ruleSet, check } = compiled(
      stateWith([
        ingressPolicy([
          { action: 'allow', peers: [{ cidr: '10.0.0.1/32' }] },
          { action: 'allow', peers: [{ cidr: '10.0.0.2/32' }], services: [{ protocol: 'any' }] },
        ]),
      ]),
    );
    for (const peer of ['10.0.0.1', '10.0.0.2']) {
      for (const protocol of [TCP, UDP, ICMP, GRE])
        expect(check('ingress', peer, protocol, 9).action).toBe('allow');
    }
    expect(ruleSet.entries.map((e) => [e.addrFrom, e.protocol, e.rule])).toEqual([
      ['10.0.0.1', 0, 0],
      ['10.0.0.2', 0, 1],
    ]);
  });

  it('matches port ranges inclusively and merges adjacent ports and addresses', () => {
    const { ruleSet, check } = compiled(
      stateWith([
        ingressPolicy([
          {
            action: 'allow',
            peers: [
              {
                selector: {
                  matchExpressions: [{ key: 'app', operator: 'In', values: ['web', 'api'] }],
                },
              },
            ],
            services: [
              { protocol: 'tcp', port: 8000, endPort: 8049 },
              { protocol: 'tcp', port: 8050, endPort: 8100 },
            ],
          },
        ]),
      ]),
    );
    expect(check('ingress', '10.0.0.1', TCP, 7999).action).toBe('deny');
    expect(check('ingress', '10.0.0.1', TCP, 8000).action).toBe('allow');
    expect(check('ingress', '10.0.0.2', TCP, 8100).action).toBe('allow');
    expect(check('ingress', '10.0.0.2', TCP, 8101).action).toBe('deny');
    expect(
      ruleSet.entries.map((e) => `${e.addrFrom}-${e.addrTo}/${e.portFrom}-${e.portTo}`),
    ).toEqual(['10.0.0.1-10.0.0.2/8000-8100', 'fd00::1-fd00::2/8000-8100']);
  });

  it('keeps icmp to IPv4 peers and icmpv6 to IPv6 peers; no port means all ports', () => {
    const { check } = compiled(
      stateWith([
        ingressPolicy([
          {
            action: 'allow',
            peers: [{ cidr: '0.0.0.0/0' }, { cidr: '::/0' }],
            services: [{ protocol: 'icmp' }],
          },
          {
            action: 'allow',
            peers: [{ cidr: '0.0.0.0/0' }, { cidr: '::/0' }],
            services: [{ protocol: 'icmpv6' }],
          },
          { action: 'allow', peers: [{ cidr: 'fd00::/64' }], services: [{ protocol: 'udp' }] },
        ]),
      ]),
    );
    expect(check('ingress', '192.0.2.1', ICMP)).toEqual({
      action: 'allow',
      ruleId: 'db/ingress/0',
    });
    expect(check('ingress', 'fd00::9', ICMP)).toEqual({ action: 'deny' });
    expect(check('ingress', 'fd00::9', ICMPV6)).toEqual({
      action: 'allow',
      ruleId: 'db/ingress/1',
    });
    expect(check('ingress', '192.0.2.1', ICMPV6)).toEqual({ action: 'deny' });
    expect(check('ingress', 'fd00::9', UDP, 1)).toEqual({
      action: 'allow',
      ruleId: 'db/ingress/2',
    });
    expect(check('ingress', 'fd00::9', UDP, 65535)).toEqual({
      action: 'allow',
      ruleId: 'db/ingress/2',
    });
    expect(check('ingress', 'fd00:0:0:1::9', UDP, 1)).toEqual({ action: 'deny' });
  });

  it('treats egress peers as destinations and applies only policies whose scope selects the workload', () => {
    const state = stateWith([
      {
        name: 'web-out',
        scope: { matchLabels: { app: 'web' } },
        egress: [{ action: 'allow', peers: [{ selector: { matchLabels: { app: 'db' } } }] }],
      },
    ]);
    const forWeb = compiled(state, 'web');
    expect(forWeb.check('egress', '10.0.0.3', TCP, 5432)).toEqual({
      action: 'allow',
      ruleId: 'web-out/egress/0',
    });
    expect(forWeb.check('ingress', '10.0.0.3', TCP, 5432)).toEqual({ action: 'deny' });
    const forDb = compiled(state, 'db');
    expect(forDb.ruleSet.rules).toEqual([]);
  });

  it('orders rules by id and decides by the lowest-index deny', () => {
    const rules: PolicyRule[] = Array.from({ length: 11 }, (_, i) => ({
      action: i === 2 || i === 10 ? 'deny' : 'allow',
      peers: [{ cidr: '10.0.0.0/8' }],
    }));
    const { ruleSet, check } = compiled(
      stateWith([
        ingressPolicy(rules, 'z'),
        ingressPolicy([{ action: 'allow', peers: [{ selector: {} }] }], 'a'),
      ]),
    );
    expect(ruleSet.rules.map((r) => r.id)).toEqual([
      'a/ingress/0',
      'z/ingress/0',
      'z/ingress/1',
      'z/ingress/10',
      'z/ingress/2',
      ...[3, 4, 5, 6, 7, 8, 9].map((i) => `z/ingress/${i}`),
    ]);
    expect(ruleSet.rules[3]).toEqual({
      id: 'z/ingress/10',
      direction: Direction.DIRECTION_INGRESS,
      action: Action.ACTION_DENY,
      policy: 'z',
    });
    expect(check('ingress', '10.0.0.1', TCP, 1)).toEqual({
      action: 'deny',
      ruleId: 'z/ingress/10',
    });
  });
});

describe('compile output', () => {
  const state = stateWith(
    [
      ingressPolicy([
        {
          action: 'allow',
          peers: [{ selector: { matchLabels: { app: 'web' } } }, { ipList: 'vpn' }],
          services: ['pg', 'dns'],
        },
        { action: 'deny', peers: [{ cidr: '10.8.1.0/24' }, { cidr: 'fd00::/120' }] },
      ]),
      {
        name: 'all-out',
        scope: {},
        egress: [{ action: 'allow', peers: [{ cidr: '0.0.0.0/0' }], services: ['dns'] }],
      },
    ],
    {
      ipLists: [{ name: 'vpn', cidrs: ['10.8.0.0/16', 'fd00::/64'] }],
      services: [
        { name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] },
        {
          name: 'dns',
          ports: [
            { protocol: 'udp', port: 53 },
            { protocol: 'tcp', port: 53 },
          ],
        },
      ],
    },
  );

  it('emits one RuleSet per workload, sorted by name, with modes and revision', () => {
    const { ruleSets } = compile(state, 42);
    expect(ruleSets.map((r) => r.workloadId)).toEqual(['api', 'db', 'web']);
    for (const r of ruleSets) {
      expect(r.revision).toBe(42);
      expect(r.ingressMode).toBe(Mode.MODE_ENFORCE);
      expect(r.egressMode).toBe(Mode.MODE_MONITOR);
    }
  });

  it('hashes content (not the revision) as the README defines it', () => {
    const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
    for (const r of compile(state, 1).ruleSets) {
      const digest = sha(
        RuleSet.encode(RuleSet.create({ rules: r.rules, entries: r.entries })).finish(),
      );
      const expected = sha(
        RuleSet.encode(
          RuleSet.create({
            workloadId: r.workloadId,
            ingressMode: r.ingressMode,
            egressMode: r.egressMode,
            hash: digest,
          }),
        ).finish(),
      );
      expect(r.hash).toBe(expected);
      // What an agent recomputes after decoding equals what the compiler stamped.
      expect(hashRuleSet(RuleSet.decode(RuleSet.encode(r).finish()))).toBe(r.hash);
    }
    const before = compile(state, 1).ruleSets.map((r) => r.hash);
    expect(compile(state, 2).ruleSets.map((r) => r.hash)).toEqual(before);
    const changed = structuredClone(state);
    changed.services[0]!.ports[0]!.port = 5433;
    const after = compile(changed, 1).ruleSets.map((r) => r.hash);
    expect(after[0]).toBe(before[0]); // api: unaffected
    expect(after[1]).not.toBe(before[1]); // db: its rule changed
    const enforced = structuredClone(state);
    enforced.workloads[0]!.mode.egress = 'enforce';
    const moded = compile(enforced, 1).ruleSets;
    const index = moded.findIndex((r) => r.workloadId === enforced.workloads[0]!.name);
    expect(moded[index]!.hash).not.toBe(before[index]);
  });

  it('shares frozen rules and entries between workloads of the same policy set', () => {
    const twins = structuredClone(state);
    twins.workloads.push({ ...structuredClone(twins.workloads[0]!), name: 'zz', addresses: [] });
    const { ruleSets } = compile(twins, 1);
    const original = ruleSets.find((r) => r.workloadId === twins.workloads[0]!.name)!;
    const twin = ruleSets.find((r) => r.workloadId === 'zz')!;
    expect(twin.entries).toBe(original.entries);
    expect(twin.rules).toBe(original.rules);
    expect(twin.hash).not.toBe(original.hash); // the workload id counts
    expect(Object.isFrozen(twin.entries) && Object.isFrozen(twin.entries[0])).toBe(true);
    expect(() => {
      twin.entries[0]!.rule = 9;
    }).toThrow(TypeError);
  });

  it('is byte-identical for the same input in another order', () => {
    const reordered: PolicyState = {
      workloads: [...state.workloads]
        .reverse()
        .map((w) => ({ ...w, addresses: [...w.addresses].reverse() })),
      ipLists: state.ipLists.map((l) => ({ ...l, cidrs: [...l.cidrs].reverse() })),
      services: [...state.services].reverse().map((s) => ({ ...s, ports: [...s.ports].reverse() })),
      policies: [...state.policies].reverse().map((p) => ({
        ...p,
        ingress: p.ingress?.map((r) => ({
          ...r,
          peers: [...r.peers].reverse(),
          services: r.services && [...r.services].reverse(),
        })),
      })),
    };
    const bytes = (s: PolicyState) =>
      compile(s, 7).ruleSets.map((r) => Buffer.from(RuleSet.encode(r).finish()).toString('hex'));
    expect(bytes(reordered)).toEqual(bytes(state));
  });

  it('returns diagnostics and no RuleSets for invalid input', () => {
    const broken = structuredClone(state);
    broken.policies[0]!.ingress![0]!.services = ['pg', 'ldap'];
    expect(compile(broken, 1)).toEqual({
      ruleSets: [],
      diagnostics: [
        { path: 'policies[0].ingress[0].services[1]', message: "unknown service 'ldap'" },
      ],
    });
  });
});

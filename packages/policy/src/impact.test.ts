import { describe, expect, it } from 'vitest';
import { evaluatePolicy } from './evaluate.js';
import { analyzeImpact, type Flow, impact } from './impact.js';
import type { ObservedFlow } from './impact-flows.js';
import { parseAddress } from './ip.js';
import type { PolicyState, Workload } from './model.js';
import { address, prng, type Rng, randomState, rule, selector } from './random.test-util.js';

const base: PolicyState = {
  workloads: [
    {
      name: 'db',
      addresses: ['10.0.0.3'],
      labels: { app: 'db' },
      mode: { ingress: 'monitor', egress: 'monitor' },
    },
  ],
  ipLists: [],
  services: [],
  policies: [
    {
      name: 'db',
      scope: { matchLabels: { app: 'db' } },
      ingress: [
        {
          action: 'allow',
          peers: [{ cidr: '10.0.0.0/24' }],
          services: [{ protocol: 'tcp', port: 5432 }],
        },
      ],
    },
  ],
};

const flows: Flow[] = [
  { workload: 'db', direction: 'ingress', peer: '10.0.0.1', protocol: 6, port: 5432 },
  { workload: 'db', direction: 'ingress', peer: '10.0.0.2', protocol: 6, port: 5432 },
  { workload: 'db', direction: 'ingress', peer: '10.0.0.1', protocol: 6, port: 22 },
  { workload: 'gone', direction: 'ingress', peer: '10.0.0.1', protocol: 6, port: 22 },
];

describe('analyzeImpact', () => {
  it('reports nothing for an unchanged policy', () => {
    expect(analyzeImpact(base, structuredClone(base), flows)).toEqual([]);
  });

  it('reports newly denied, newly allowed and re-attributed flows', () => {
    const after = structuredClone(base);
    after.policies[0]!.ingress!.unshift(
      { action: 'deny', peers: [{ cidr: '10.0.0.2/32' }] },
      {
        action: 'allow',
        peers: [{ cidr: '10.0.0.1/32' }],
        services: [{ protocol: 'tcp', port: 22 }],
      },
    );
    expect(analyzeImpact(base, after, flows)).toEqual([
      {
        flow: flows[0],
        change: 'rule',
        before: { action: 'allow', ruleId: 'db/ingress/0' },
        after: { action: 'allow', ruleId: 'db/ingress/2' },
      },
      {
        flow: flows[1],
        change: 'denied',
        before: { action: 'allow', ruleId: 'db/ingress/0' },
        after: { action: 'deny', ruleId: 'db/ingress/0' },
      },
      {
        flow: flows[2],
        change: 'allowed',
        before: { action: 'deny' },
        after: { action: 'allow', ruleId: 'db/ingress/1' },
      },
    ]);
  });
});

const MONITOR = { ingress: 'monitor', egress: 'monitor' } as const;
const TCP = 6;
const DAY = 86_400_000;
const NOW = Date.UTC(2026, 0, 15);

function workload(name: string, ip: string, labels: Record<string, string>): Workload {
  return { name, addresses: [ip], labels, mode: { ...MONITOR } };
}

function find(state: PolicyState, name: string): Workload {
  return state.workloads.find((w) => w.name === name)!;
}

describe('impact: the classic outages', () => {
  it('(a) an undeclared license server, egress enforced: newly blocked by no rule', () => {
    const before: PolicyState = {
      workloads: [
        workload('app1', '10.0.1.1', { app: 'billing', role: 'api' }),
        workload('db1', '10.0.2.1', { app: 'billing', role: 'db' }),
      ],
      ipLists: [{ name: 'license-server', cidrs: ['192.0.2.10/32'] }],
      services: [],
      policies: [],
    };
    // The owners declared only the database.
    const after = structuredClone(before);
    after.policies.push({
      name: 'billing-api',
      scope: { matchLabels: { app: 'billing', role: 'api' } },
      egress: [
        {
          action: 'allow',
          peers: [{ selector: { matchLabels: { app: 'billing', role: 'db' } } }],
          services: [{ protocol: 'tcp', port: 5432 }],
        },
      ],
    });
    find(after, 'app1').mode.egress = 'enforce';
    const flows: ObservedFlow[] = [
      { src: '10.0.1.1', dst: '10.0.2.1', protocol: TCP, port: 5432, connections: 900 },
      { src: '10.0.1.1', dst: '192.0.2.10', protocol: TCP, port: 27000, connections: 3 },
    ];
    const report = impact(before, after, flows);
    expect(report.summary).toEqual({
      newlyBlocked: 1,
      newlyAllowed: 0,
      stillWouldDeny: 1,
      flows: 2,
    });
    const [first, second] = report.groups;
    expect(first).toEqual({
      change: 'newly-blocked',
      src: { key: 'app=billing,role=api', labels: { app: 'billing', role: 'api' } },
      dst: { key: 'ipList:license-server', ipLists: ['license-server'] },
      protocol: TCP,
      port: 27000,
      connections: 3,
      decidedBy: [{ direction: 'egress', ruleId: 'no rule', outcome: 'blocked' }],
      flows: [
        {
          flow: flows[1],
          change: 'newly-blocked',
          connections: 3,
          before: [
            {
              workload: 'app1',
              direction: 'egress',
              mode: 'monitor',
              outcome: 'would-deny',
              ruleId: 'no rule',
            },
          ],
          after: [
            {
              workload: 'app1',
              direction: 'egress',
              mode: 'enforce',
              outcome: 'blocked',
              ruleId: 'no rule',
            },
          ],
        },
      ],
    });
    // The database flow is allowed at the app, but the db's ingress still has no policy.
    expect(second).toMatchObject({
      change: 'still-would-deny',
      dst: { key: 'app=billing,role=db' },
      decidedBy: [
        { direction: 'egress', ruleId: 'billing-api/egress/0', outcome: 'allowed' },
        { direction: 'ingress', ruleId: 'no rule', outcome: 'would-deny' },
      ],
    });
  });

  it('(b) a weekly batch job to the database, db ingress enforced: newly blocked', () => {
    const before: PolicyState = {
      workloads: [
        workload('web1', '10.0.3.1', { app: 'shop', role: 'web' }),
        workload('web2', '10.0.3.2', { app: 'shop', role: 'web' }),
        workload('batch1', '10.0.4.1', { app: 'shop', role: 'batch' }),
        workload('db1', '10.0.5.1', { app: 'shop', role: 'db' }),
      ],
      ipLists: [],
      services: [],
      policies: [],
    };
    const after = structuredClone(before);
    after.policies.push({
      name: 'shop-db',
      scope: { matchLabels: { app: 'shop', role: 'db' } },
      ingress: [
        {
          action: 'allow',
          peers: [{ selector: { matchLabels: { app: 'shop', role: 'web' } } }],
          services: [{ protocol: 'tcp', port: 5432 }],
        },
      ],
    });
    find(after, 'db1').mode.ingress = 'enforce';
    const sixDaysAgo = NOW - 6 * DAY;
    // Each flow comes from both ends, as agents report it.
    const flows: ObservedFlow[] = [
      {
        src: '10.0.3.1',
        dst: '10.0.5.1',
        protocol: TCP,
        port: 5432,
        connections: 8000,
        lastSeen: NOW,
      },
      {
        src: '10.0.3.1',
        dst: '10.0.5.1',
        protocol: TCP,
        port: 5432,
        connections: 8000,
        lastSeen: NOW - 5,
      },
      {
        src: '10.0.3.2',
        dst: '10.0.5.1',
        protocol: TCP,
        port: 5432,
        connections: 7000,
        lastSeen: NOW - 9,
      },
      {
        src: '10.0.4.1',
        dst: '10.0.5.1',
        protocol: TCP,
        port: 5432,
        connections: 1,
        lastSeen: sixDaysAgo,
      },
      {
        src: '10.0.4.1',
        dst: '10.0.5.1',
        protocol: TCP,
        port: 5432,
        connections: 1,
        lastSeen: sixDaysAgo,
      },
    ];
    const report = impact(before, after, flows);
    expect(report.summary).toEqual({
      newlyBlocked: 1,
      newlyAllowed: 0,
      stillWouldDeny: 2,
      flows: 3,
    });
    expect(report.groups[0]).toMatchObject({
      change: 'newly-blocked',
      src: { key: 'app=shop,role=batch' },
      dst: { key: 'app=shop,role=db' },
      connections: 1,
      lastSeen: sixDaysAgo,
      decidedBy: [
        { direction: 'egress', ruleId: 'no rule', outcome: 'would-deny' },
        { direction: 'ingress', ruleId: 'no rule', outcome: 'blocked' },
      ],
    });
    expect(report.groups[0]!.flows.map((f) => f.flow)).toEqual([flows[3]]);
    // Both web servers form one group: connections summed, lastSeen the latest.
    expect(report.groups[1]).toMatchObject({
      change: 'still-would-deny',
      src: { key: 'app=shop,role=web' },
      connections: 15000,
      lastSeen: NOW,
    });
    expect(report.groups[1]!.flows.map((f) => f.flow.src)).toEqual(['10.0.3.1', '10.0.3.2']);
    expect(report.groups).toHaveLength(2);
  });
});

describe('impact', () => {
  const before: PolicyState = {
    workloads: [
      workload('web1', '10.0.3.1', { app: 'shop', role: 'web' }),
      workload('db1', '10.0.5.1', { app: 'shop', role: 'db' }),
      workload('bare', '10.0.6.1', { env: 'lab' }),
    ],
    ipLists: [
      { name: 'office', cidrs: ['172.16.0.0/12'] },
      { name: 'office-lan', cidrs: ['172.16.1.0/24'] },
    ],
    services: [],
    policies: [
      {
        name: 'shop-db',
        scope: { matchLabels: { role: 'db' } },
        ingress: [
          {
            action: 'allow',
            peers: [{ selector: { matchLabels: { role: 'web' } } }],
            services: [{ protocol: 'tcp', port: 5432 }],
          },
        ],
      },
      {
        name: 'shop-web',
        scope: { matchLabels: { role: 'web' } },
        egress: [
          {
            action: 'allow',
            peers: [{ selector: { matchLabels: { role: 'db' } } }],
            services: [{ protocol: 'tcp', port: 5432 }],
          },
        ],
      },
    ],
  };
  const flows: ObservedFlow[] = [
    { src: '10.0.3.1', dst: '10.0.5.1', protocol: TCP, port: 5432, connections: 50 },
    { src: '172.16.1.7', dst: '10.0.5.1', protocol: TCP, port: 22, connections: 4 },
    { src: '10.0.6.1', dst: '10.0.5.1', protocol: TCP, port: 22 },
    { src: '198.51.100.1', dst: '10.0.5.1', protocol: TCP, port: 22, connections: 2 },
  ];

  it('turns would-deny flows into newly-blocked on a mode change alone', () => {
    const after = structuredClone(before);
    find(after, 'db1').mode.ingress = 'enforce';
    const report = impact(before, after, flows);
    expect(report.summary).toEqual({
      newlyBlocked: 3,
      newlyAllowed: 0,
      stillWouldDeny: 0,
      flows: 4,
    });
    // Groups name workloads by labels (else by name), IP lists (all that hold it), addresses.
    expect(report.groups.map((g) => [g.change, g.src.key, g.connections])).toEqual([
      ['newly-blocked', 'ipList:office,office-lan', 4],
      ['newly-blocked', '198.51.100.1', 2],
      ['newly-blocked', 'workload:bare', 1],
    ]);
    expect(report.groups[2]!.decidedBy).toEqual([
      { direction: 'egress', ruleId: 'no rule', outcome: 'would-deny' },
      { direction: 'ingress', ruleId: 'no rule', outcome: 'blocked' },
    ]);
    // The same flows before the mode change: passing, still would be denied.
    const today = impact(before, before, flows);
    expect(today.summary).toEqual({
      newlyBlocked: 0,
      newlyAllowed: 0,
      stillWouldDeny: 3,
      flows: 4,
    });
  });

  it('reports an added allow as newly-allowed, with its rule', () => {
    const after = structuredClone(before);
    after.policies.push({
      name: 'ssh',
      scope: { matchLabels: { role: 'db' } },
      ingress: [
        {
          action: 'allow',
          peers: [{ ipList: 'office' }],
          services: [{ protocol: 'tcp', port: 22 }],
        },
      ],
    });
    const report = impact(before, after, flows);
    expect(report.summary.newlyAllowed).toBe(1);
    expect(report.groups.find((g) => g.change === 'newly-allowed')).toMatchObject({
      src: { ipLists: ['office', 'office-lan'] },
      port: 22,
      decidedBy: [{ direction: 'ingress', ruleId: 'ssh/ingress/0', outcome: 'allowed' }],
    });
  });

  it('reports nothing new for an unrelated change', () => {
    const after = structuredClone(before);
    after.services.push({ name: 'dns', ports: [{ protocol: 'udp', port: 53 }] });
    after.workloads.push(workload('other', '10.0.9.9', { app: 'other' }));
    after.policies.push({
      name: 'other',
      scope: { matchLabels: { app: 'other' } },
      ingress: [{ action: 'deny', peers: [{ cidr: '0.0.0.0/0' }] }],
    });
    find(after, 'other').mode = { ingress: 'enforce', egress: 'enforce' };
    expect(impact(before, after, flows)).toEqual(impact(before, before, flows));
    // Where everything observed is allowed, that is an empty report.
    const allowed = impact(before, after, [flows[0]!]);
    expect(allowed).toEqual({
      summary: { newlyBlocked: 0, newlyAllowed: 0, stillWouldDeny: 0, flows: 1 },
      groups: [],
    });
  });

  it("names an added deny rule's id, and blocks an allowed flow when enforced", () => {
    const after = structuredClone(before);
    after.policies.push({
      name: 'quarantine',
      scope: { matchLabels: { role: 'db' } },
      ingress: [{ action: 'deny', peers: [{ cidr: '10.0.3.1/32' }] }],
    });
    find(after, 'db1').mode.ingress = 'enforce';
    const report = impact(before, after, [flows[0]!]);
    expect(report.groups).toEqual([
      expect.objectContaining({
        change: 'newly-blocked',
        decidedBy: [
          { direction: 'egress', ruleId: 'shop-web/egress/0', outcome: 'allowed' },
          { direction: 'ingress', ruleId: 'quarantine/ingress/0', outcome: 'blocked' },
        ],
      }),
    ]);
  });

  it('adds up the rows one end reported and counts both ends once', () => {
    const after = structuredClone(before);
    find(after, 'db1').mode.ingress = 'enforce';
    // db1 saw 8 connections from bare on tcp/22: 5 would-deny under one rule, 3 allowed
    // under another (the flow store keeps a row per verdict and rule). bare's egress saw the
    // same 8 in one row.
    const tuple = { src: '10.0.6.1', dst: '10.0.5.1', protocol: TCP, port: 22 };
    const rows: ObservedFlow[] = [
      { ...tuple, workload: 'db1', direction: 'ingress', connections: 5 },
      { ...tuple, workload: 'db1', direction: 'ingress', connections: 3 },
      { ...tuple, workload: 'bare', direction: 'egress', connections: 8 },
    ];
    const report = impact(before, after, rows);
    expect(report.groups.map((g) => [g.change, g.connections])).toEqual([['newly-blocked', 8]]);
    expect(report.groups[0]!.flows[0]!.connections).toBe(8);
    // One end alone says as much; an end that saw fewer does not lower the count.
    expect(impact(before, after, rows.slice(0, 2)).groups[0]!.connections).toBe(8);
    const fewer = [...rows.slice(0, 2), { ...rows[2]!, connections: 6 }];
    expect(impact(before, after, fewer).groups[0]!.connections).toBe(8);
  });

  it('sorts newly-blocked first, then by connections; ports are ignored for icmp', () => {
    const after = structuredClone(before);
    find(after, 'db1').mode.ingress = 'enforce';
    after.policies[0]!.ingress!.push({ action: 'allow', peers: [{ cidr: '198.51.100.0/24' }] });
    const report = impact(before, after, [
      ...flows,
      { src: '10.0.6.1', dst: '10.0.5.1', protocol: 1, port: 8, connections: 5 },
      { src: '10.0.6.1', dst: '10.0.5.1', protocol: 1, port: 0, connections: 7 },
    ]);
    expect(report.summary.flows).toBe(5);
    expect(
      report.groups.map((g) => [g.change, g.src.key, g.protocol, g.port, g.connections]),
    ).toEqual([
      ['newly-blocked', 'workload:bare', 1, 0, 7],
      ['newly-blocked', 'ipList:office,office-lan', TCP, 22, 4],
      ['newly-blocked', 'workload:bare', TCP, 22, 1],
      ['newly-allowed', '198.51.100.1', TCP, 22, 2],
    ]);
  });

  it('decides at every workload that owns an address', () => {
    const after = structuredClone(before);
    // A second workload on the database's address, enforcing: it alone blocks the flow.
    after.workloads.push({
      ...workload('db2', '10.0.5.1', { app: 'shop', role: 'replica' }),
      mode: { ingress: 'enforce', egress: 'monitor' },
    });
    const report = impact(before, after, [flows[0]!]);
    expect(report.groups[0]!.flows[0]!.after.map((e) => [e.workload, e.outcome])).toEqual([
      ['web1', 'allowed'],
      ['db1', 'allowed'],
      ['db2', 'blocked'],
    ]);
    expect(report.summary.newlyBlocked).toBe(1);
  });

  it('honours groupBy and keeps extra flow fields', () => {
    const report = impact(before, before, [{ ...flows[1]!, note: 'x' }], { groupBy: ['app'] });
    expect(report.groups[0]!.dst).toEqual({ key: 'app=shop', labels: { app: 'shop' } });
    expect(report.groups[0]!.flows[0]!.flow.note).toBe('x');
  });
});

// For random states and a random edit: a flow is reported newly-blocked exactly when it
// passed at every end before and is blocked at some end after, recomputed here from
// evaluatePolicy and the modes with a plain scan for the ends.
describe('impact property', () => {
  // Deeper: POLICY_PROPERTY_STATES=5000 POLICY_PROPERTY_SEED=100000 (as property.test.ts).
  const STATES = Number(process.env.POLICY_PROPERTY_STATES ?? 150);
  const SEED = Number(process.env.POLICY_PROPERTY_SEED ?? 1);
  const PROTOCOLS = [6, 6, 17, 132, 1, 58];

  function edit(rng: Rng, state: PolicyState): PolicyState {
    const out = structuredClone(state);
    const w = rng.pick(out.workloads);
    const p = rng.pick(out.policies);
    switch (rng.int(0, 7)) {
      case 0:
        w.mode = {
          ingress: rng.pick(['monitor', 'enforce']),
          egress: rng.pick(['monitor', 'enforce']),
        };
        break;
      case 1:
        p.ingress = [...(p.ingress ?? []), rule(rng, out.ipLists, out.services)];
        break;
      case 2:
        p.egress = [...(p.egress ?? []), rule(rng, out.ipLists, out.services)];
        break;
      case 3:
        p.scope = selector(rng);
        break;
      case 4:
        if (rng.chance(0.5)) p.ingress?.pop();
        else p.egress?.pop();
        break;
      case 6:
        // Addresses are facts that change too: hosts come, go and share addresses.
        if (rng.chance(0.5)) w.addresses.push(rng.pick(out.workloads).addresses[0]!);
        else w.addresses.push(address(rng, rng.chance(0.6) ? 4 : 6));
        break;
      case 7:
        out.workloads = out.workloads.filter((x) => x !== w);
        break;
      default:
        w.labels = rng.chance(0.5) ? {} : { app: rng.pick(['a', 'b', 'c']) };
    }
    return out;
  }

  function outcomes(state: PolicyState, src: string, dst: string, protocol: number, port: number) {
    const same = (a: string, b: string) => {
      const [x, y] = [parse(a), parse(b)];
      return x.family === y.family && x.value === y.value;
    };
    const out: string[] = [];
    for (const w of state.workloads) {
      for (const [direction, self, peer] of [
        ['egress', src, dst],
        ['ingress', dst, src],
      ] as const) {
        if (!w.addresses.some((a) => same(a, self))) continue;
        const { action } = evaluatePolicy(state, w.name, direction, peer, protocol, port);
        out.push(
          action === 'allow'
            ? 'allowed'
            : w.mode[direction] === 'enforce'
              ? 'blocked'
              : 'would-deny',
        );
      }
    }
    return out;
  }

  it(
    `on ${STATES} random states`,
    () => {
      const hits = { blocked: 0, allowed: 0 };
      for (let n = 0; n < STATES; n++) {
        const rng = prng(SEED + n);
        const before = randomState(rng);
        for (const w of before.workloads) w.mode.egress = rng.pick(['monitor', 'enforce']);
        const after = edit(rng, before);
        const flows: ObservedFlow[] = Array.from({ length: 30 }, () => {
          const family = rng.chance(0.6) ? 4 : 6;
          // Mostly workload addresses, so that flows have ends to decide at.
          const pickAddress = () => {
            const owned = before.workloads
              .flatMap((w) => w.addresses)
              .filter((a) => parse(a).family === family);
            return owned.length > 0 && rng.chance(0.7) ? rng.pick(owned) : address(rng, family);
          };
          return {
            src: pickAddress(),
            dst: pickAddress(),
            protocol: rng.pick(PROTOCOLS),
            port: rng.int(19, 31),
          };
        });
        const report = impact(before, after, flows);
        const reported = new Map(
          report.groups
            .filter((g) => g.change !== 'still-would-deny')
            .flatMap((g) => g.flows.map((f) => [JSON.stringify(f.flow), g.change] as const)),
        );
        const expected = new Map<string, string>();
        const seen = new Set<string>();
        for (const f of flows) {
          const port = [6, 17, 132].includes(f.protocol) ? f.port! : 0;
          const key = `${formatKey(f.src)} ${formatKey(f.dst)} ${f.protocol} ${port}`;
          if (seen.has(key)) continue;
          seen.add(key);
          const was = outcomes(before, f.src, f.dst, f.protocol, port);
          const now = outcomes(after, f.src, f.dst, f.protocol, port);
          const allowed = (o: string[]) => o.length > 0 && o.every((x) => x === 'allowed');
          if (!was.includes('blocked') && now.includes('blocked')) {
            expected.set(JSON.stringify(f), 'newly-blocked');
          } else if (!allowed(was) && allowed(now)) {
            expected.set(JSON.stringify(f), 'newly-allowed');
          }
        }
        expect(reported, `seed ${SEED + n}`).toEqual(expected);
        const count = (c: string) => [...expected.values()].filter((x) => x === c).length;
        expect(report.summary.newlyBlocked).toBe(count('newly-blocked'));
        expect(report.summary.newlyAllowed).toBe(count('newly-allowed'));
        hits.blocked += count('newly-blocked');
        hits.allowed += count('newly-allowed');
        expect(report.summary.flows).toBe(seen.size);
      }
      // The search must reach both outcomes, or the equality above proves little.
      expect(hits.blocked).toBeGreaterThan(STATES / 10);
      expect(hits.allowed).toBeGreaterThan(STATES / 10);
    },
    Math.max(60_000, STATES * 50),
  );
});

function parse(text: string) {
  const a = parseAddress(text);
  if (!a) throw new Error(`bad address ${text}`);
  return a;
}

function formatKey(text: string): string {
  const a = parse(text);
  return `${a.family}/${a.value}`;
}

import { describe, expect, it } from 'vitest';
import { compile } from './compile.js';
import { diffRuleSets, diffStates } from './diff.js';
import type { PolicyState } from './model.js';

const monitor = { ingress: 'monitor', egress: 'monitor' } as const;

const base: PolicyState = {
  workloads: [
    { name: 'db', addresses: ['10.0.0.3'], labels: { app: 'db' }, mode: monitor },
    { name: 'web', addresses: ['10.0.0.2'], labels: { app: 'web' }, mode: monitor },
  ],
  ipLists: [{ name: 'vpn', cidrs: ['10.8.0.0/16'] }],
  services: [{ name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] }],
  policies: [
    {
      name: 'db',
      scope: { matchLabels: { app: 'db' } },
      ingress: [
        {
          action: 'allow',
          peers: [{ selector: { matchLabels: { app: 'web' } } }],
          services: ['pg'],
        },
        { action: 'allow', peers: [{ ipList: 'vpn' }], services: ['pg'] },
      ],
    },
  ],
};

describe('diffStates', () => {
  it('reports nothing for equal states, also with other key order and empty optionals', () => {
    const same = structuredClone(base);
    same.workloads.reverse();
    same.policies[0] = {
      ingress: same.policies[0]!.ingress,
      egress: [],
      scope: { matchLabels: { app: 'db' }, matchExpressions: [] },
      name: 'db',
    };
    same.ipLists[0]!.except = [];
    expect(diffStates(base, same)).toEqual([]);
  });

  it('lists added, removed and changed objects by kind then name, with fields and rules', () => {
    const after = structuredClone(base);
    const db = after.policies[0]!;
    db.ingress![1]!.services = [{ protocol: 'tcp', port: 22 }];
    db.ingress!.push({ action: 'deny', peers: [{ cidr: '10.9.0.0/16' }] });
    db.egress = [{ action: 'allow', peers: [{ cidr: '0.0.0.0/0' }] }];
    after.policies.push({
      name: 'a-new',
      scope: {},
      ingress: [{ action: 'allow', peers: [{ cidr: '10.0.0.0/8' }] }],
    });
    after.services = [];
    after.ipLists.push({ name: 'lic', cidrs: ['192.0.2.10'] });
    after.workloads[0]!.addresses = ['10.0.0.99']; // a fact, not an edit
    after.workloads[1]!.mode = { ingress: 'enforce', egress: 'monitor' };
    after.workloads[1]!.labels.role = 'front';

    const changes = diffStates(base, after);
    expect(changes.map((c) => [c.kind, c.name, c.change])).toEqual([
      ['Policy', 'a-new', 'added'],
      ['Policy', 'db', 'changed'],
      ['Service', 'pg', 'removed'],
      ['IpList', 'lic', 'added'],
      ['Workload', 'web', 'changed'],
    ]);
    expect(changes[0]).toEqual({
      kind: 'Policy',
      name: 'a-new',
      change: 'added',
      after: after.policies[1],
      rules: { added: ['a-new/ingress/0'], removed: [], changed: [] },
    });
    expect(changes[1]).toMatchObject({
      fields: ['egress', 'ingress'],
      rules: {
        added: ['db/egress/0', 'db/ingress/2'],
        removed: [],
        changed: ['db/ingress/1'],
      },
      before: base.policies[0],
      after: db,
    });
    expect(changes[2]).toEqual({
      kind: 'Service',
      name: 'pg',
      change: 'removed',
      before: base.services[0],
    });
    expect(changes[4]!.fields).toEqual(['labels', 'mode']);
  });

  it('reports removed rules and a changed scope or description', () => {
    const after = structuredClone(base);
    after.policies[0]!.ingress!.pop();
    after.policies[0]!.scope = { matchLabels: { app: 'db2' } };
    after.policies[0]!.description = 'why';
    expect(diffStates(base, after)).toEqual([
      expect.objectContaining({
        fields: ['description', 'ingress', 'scope'],
        rules: { added: [], removed: ['db/ingress/1'], changed: [] },
      }),
    ]);
    expect(diffStates(after, { ...after, policies: [] })[0]).toMatchObject({
      change: 'removed',
      rules: { added: [], removed: ['db/ingress/0'], changed: [] },
    });
  });

  it('ignores a workload whose addresses alone changed', () => {
    const after = structuredClone(base);
    after.workloads[0]!.addresses.push('fd00::3');
    expect(diffStates(base, after)).toEqual([]);
  });
});

describe('diffRuleSets', () => {
  const compiled = (state: PolicyState, revision = 1) => {
    const result = compile(state, revision);
    expect(result.diagnostics).toEqual([]);
    return result.ruleSets;
  };

  it('reports nothing when only the revision changed', () => {
    expect(diffRuleSets(compiled(base, 1), compiled(base, 2))).toEqual([]);
  });

  it('reports rules and entries per workload whose hash changed', () => {
    const after = structuredClone(base);
    // Inserted first: every old rule id shifts, so ids are what rules are matched by.
    after.policies[0]!.ingress!.unshift({ action: 'deny', peers: [{ cidr: '10.8.1.0/24' }] });
    after.workloads[0]!.mode = { ingress: 'enforce', egress: 'monitor' };
    after.workloads.push({ name: 'new', addresses: ['10.0.0.9'], labels: {}, mode: monitor });
    after.workloads.splice(1, 1); // web
    const was = compiled(base);
    const now = compiled(after);
    const effects = diffRuleSets(was, now);
    expect(effects.map((e) => [e.workload, e.change])).toEqual([
      ['db', 'changed'],
      ['new', 'added'],
      ['web', 'removed'],
    ]);
    const db = effects[0]!;
    expect(db.rulesAdded).toEqual(['db/ingress/2']);
    expect(db.rulesRemoved).toEqual([]);
    // Only the action of an id counts: 0 turned deny, 1 is still an allow.
    expect(db.rulesChanged).toEqual(['db/ingress/0']);
    expect(db.modeChanged).toEqual({ ingress: { before: 'monitor', after: 'enforce' } });
    // Counted independently: tuples keyed by rule id on each side.
    const tuples = (sets: typeof was) => {
      const rs = sets.find((r) => r.workloadId === 'db')!;
      return new Set(
        rs.entries.map((e) =>
          JSON.stringify([
            e.direction,
            e.addrFrom,
            e.addrTo,
            e.protocol,
            e.portFrom,
            e.portTo,
            rs.rules[e.rule]!.id,
          ]),
        ),
      );
    };
    const [t0, t1] = [tuples(was), tuples(now)];
    expect(db.entriesAdded).toBe([...t1].filter((t) => !t0.has(t)).length);
    expect(db.entriesRemoved).toBe([...t0].filter((t) => !t1.has(t)).length);
    // The web selector lost its workload and the vpn range got a hole: both sides changed.
    expect(db.entriesAdded).toBeGreaterThan(0);
    expect(db.entriesRemoved).toBeGreaterThan(0);
    expect(effects[1]).toEqual({
      workload: 'new',
      change: 'added',
      rulesAdded: [],
      rulesRemoved: [],
      rulesChanged: [],
      entriesAdded: 0,
      entriesRemoved: 0,
    });
    expect(effects[2]).toMatchObject({ change: 'removed', entriesAdded: 0, entriesRemoved: 0 });
  });

  it('reports a mode change alone, with no rule or entry change', () => {
    const after = structuredClone(base);
    after.workloads[1]!.mode = { ingress: 'monitor', egress: 'enforce' };
    expect(diffRuleSets(compiled(base), compiled(after))).toEqual([
      {
        workload: 'web',
        change: 'changed',
        rulesAdded: [],
        rulesRemoved: [],
        rulesChanged: [],
        entriesAdded: 0,
        entriesRemoved: 0,
        modeChanged: { egress: { before: 'monitor', after: 'enforce' } },
      },
    ]);
  });

  it('counts entries whose deciding rule id changed when two rules swap places', () => {
    const after = structuredClone(base);
    const ingress = after.policies[0]!.ingress!;
    after.policies[0]!.ingress = [ingress[1]!, ingress[0]!];
    const [db] = diffRuleSets(compiled(base), compiled(after));
    // Same addresses and ports, but each entry now names the other id.
    expect(db!.entriesAdded).toBe(db!.entriesRemoved);
    expect(db!.entriesAdded).toBeGreaterThan(0);
    expect(db!.rulesAdded).toEqual([]);
    expect(db!.rulesChanged).toEqual([]);
  });
});

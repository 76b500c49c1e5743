// Worked cases of the calculator's deltas: what one change sends, and to whom.

import { Action } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import { parseAddress } from '../ip.js';
import type { PolicyState, Workload } from '../model.js';
import { createCalculator } from './calculator.js';
import { applyDelta } from './delta.js';
import { evaluateGroups } from './evaluate.js';
import { groupSource, selectorKey } from './rules.js';

const host = (ip: string) => {
  const a = parseAddress(ip)!;
  return { family: a.family, from: a.value, to: a.value };
};

function workload(name: string, ip: string, labels: Record<string, string>): Workload {
  return { name, addresses: [ip], labels, mode: { ingress: 'enforce', egress: 'monitor' } };
}

const DB = { selector: { matchLabels: { role: 'db' } } };
const WEB = { selector: { matchLabels: { role: 'web' } } };
const dbId = groupSource(DB).id;
const webId = groupSource(WEB).id;

function base(): PolicyState {
  return {
    workloads: [
      workload('web1', '10.0.0.1', { role: 'web' }),
      workload('web2', '10.0.0.5', { role: 'web' }),
      workload('db1', '10.0.0.10', { role: 'db' }),
    ],
    ipLists: [{ name: 'corp', cidrs: ['192.168.0.0/16'], except: ['192.168.1.0/24'] }],
    services: [{ name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] }],
    policies: [
      {
        name: 'db',
        scope: DB.selector,
        ingress: [
          { action: 'allow', peers: [WEB], services: ['pg'] },
          { action: 'deny', peers: [{ ipList: 'corp' }] },
        ],
      },
      {
        name: 'web',
        scope: WEB.selector,
        egress: [{ action: 'allow', peers: [DB], services: ['pg'] }],
      },
    ],
  };
}

describe('createCalculator', () => {
  it('takes an IP list of 200,000 ranges (no argument-count limit on the way)', () => {
    const calc = createCalculator();
    const cidrs = Array.from({ length: 200_000 }, (_, i) => {
      const n = 11 * 2 ** 24 + 2 * i;
      return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}/32`;
    });
    const state: PolicyState = {
      workloads: [workload('w', '10.0.0.1', { role: 'web' })],
      services: [],
      ipLists: [{ name: 'big', cidrs }],
      policies: [
        {
          name: 'p',
          scope: { matchLabels: { role: 'web' } },
          egress: [{ action: 'allow', peers: [{ ipList: 'big' }] }],
        },
      ],
    };
    const { delta, diagnostics } = calc.load(state);
    expect(diagnostics).toEqual([]);
    expect(delta.groups.find((g) => g.id === 'list:big')?.added).toHaveLength(200_000);
  });

  it('a cold load creates every group and every rule set', () => {
    const calc = createCalculator();
    const { delta, diagnostics } = calc.load(base());
    expect(diagnostics).toEqual([]);
    expect(delta.workloads.map((w) => [w.workloadId, w.groupsAdded])).toEqual([
      ['db1', ['list:corp', webId].sort()],
      ['web1', [dbId]],
      ['web2', [dbId]],
    ]);
    const web = delta.groups.find((g) => g.id === webId)!;
    expect(web).toMatchObject({
      created: true,
      added: [host('10.0.0.1'), host('10.0.0.5')],
      workloads: ['db1'],
    });
    expect(calc.group('list:corp')).toHaveLength(2); // 192.168.0.0/16 minus 192.168.1.0/24
    const rules = calc.ruleSet('db1')!.rules;
    expect(rules.map((r) => [r.id, r.action, r.groups, r.services])).toEqual([
      [
        'db/ingress/0',
        Action.ACTION_ALLOW,
        [webId],
        [{ protocol: 6, portFrom: 5432, portTo: 5432 }],
      ],
      [
        'db/ingress/1',
        Action.ACTION_DENY,
        ['list:corp'],
        [{ protocol: 0, portFrom: 0, portTo: 0 }],
      ],
    ]);
  });

  it('a new web host sends one address to the hosts whose policy names web, no rule set', () => {
    const calc = createCalculator();
    calc.load(base());
    const { delta } = calc.upsertWorkload(workload('web3', '10.0.0.3', { role: 'web' }));
    expect(delta.groups).toEqual([
      { id: webId, added: [host('10.0.0.3')], removed: [], workloads: ['db1'] },
    ]);
    // Only the new host itself gets a rule set.
    expect(delta.workloads.map((w) => w.workloadId)).toEqual(['web3']);
  });

  it('a label change moves the address between groups and touches only that host', () => {
    const calc = createCalculator();
    calc.load(base());
    const before = calc.ruleSet('db1')!.hash;
    const { delta } = calc.upsertWorkload(workload('web2', '10.0.0.5', { role: 'db' }));
    expect(delta.groups).toEqual(
      [
        { id: dbId, added: [host('10.0.0.5')], removed: [], workloads: ['web1'] },
        { id: webId, added: [], removed: [host('10.0.0.5')], workloads: ['db1', 'web2'] },
      ].sort((a, b) => (a.id < b.id ? -1 : 1)),
    );
    expect(delta.workloads.map((w) => [w.workloadId, w.groupsAdded, w.groupsRemoved])).toEqual([
      ['web2', ['list:corp', webId].sort(), [dbId]],
    ]);
    expect(calc.ruleSet('db1')!.hash).toBe(before);
    expect(
      evaluateGroups(calc.ruleSet('db1')!, calc.group, 'ingress', '10.0.0.5', 6, 5432),
    ).toEqual({
      action: 'deny',
    });
  });

  it('keeps groups normalised: a neighbour address widens a range, its removal narrows it', () => {
    const calc = createCalculator();
    calc.load(base());
    const range = (from: string, to: string) => ({ ...host(from), to: host(to).to });
    let { delta } = calc.upsertWorkload(workload('web9', '10.0.0.2', { role: 'web' }));
    expect(delta.groups).toEqual([
      {
        id: webId,
        added: [range('10.0.0.1', '10.0.0.2')],
        removed: [host('10.0.0.1')],
        workloads: ['db1'],
      },
    ]);
    expect(calc.group(webId)).toEqual([range('10.0.0.1', '10.0.0.2'), host('10.0.0.5')]);
    calc.upsertWorkload(workload('web8', '10.0.0.3', { role: 'web' }));
    calc.upsertWorkload(workload('web7', '10.0.0.4', { role: 'web' }));
    expect(calc.group(webId)).toEqual([range('10.0.0.1', '10.0.0.5')]);
    // A second host on the same address keeps it in the group when the first goes.
    calc.upsertWorkload(workload('web6', '10.0.0.3', { role: 'web' }));
    expect(calc.deleteWorkload('web6').delta.groups).toEqual([]);
    ({ delta } = calc.deleteWorkload('web8'));
    expect(delta.groups).toEqual([
      {
        id: webId,
        added: [range('10.0.0.1', '10.0.0.2'), range('10.0.0.4', '10.0.0.5')],
        removed: [range('10.0.0.1', '10.0.0.5')],
        workloads: ['db1'],
      },
    ]);
  });

  it('an address change is one element out and one in', () => {
    const calc = createCalculator();
    calc.load(base());
    const { delta } = calc.upsertWorkload(workload('db1', '10.0.0.11', { role: 'db' }));
    expect(delta).toEqual({
      groups: [
        {
          id: dbId,
          added: [host('10.0.0.11')],
          removed: [host('10.0.0.10')],
          workloads: ['web1', 'web2'],
        },
      ],
      workloads: [],
    });
  });

  it('an IP list edit sends the ranges that changed; a service edit changes rule sets only', () => {
    const calc = createCalculator();
    calc.load(base());
    let { delta } = calc.upsertIpList({
      name: 'corp',
      cidrs: ['192.168.0.0/16', '10.9.0.0/16'],
      except: ['192.168.1.0/24'],
    });
    expect(delta.workloads).toEqual([]);
    expect(delta.groups).toHaveLength(1);
    expect(delta.groups[0]).toMatchObject({ id: 'list:corp', removed: [], workloads: ['db1'] });
    expect(delta.groups[0]!.added).toHaveLength(1);
    ({ delta } = calc.upsertService({ name: 'pg', ports: [{ protocol: 'tcp', port: 5433 }] }));
    expect(delta.groups).toEqual([]);
    expect(delta.workloads.map((w) => w.workloadId)).toEqual(['db1', 'web1', 'web2']);
  });

  it('refuses invalid input and changes nothing', () => {
    const calc = createCalculator();
    calc.load(base());
    const before = calc.snapshot();
    const check = (result: ReturnType<typeof calc.deleteService>, ...paths: string[]) => {
      expect(result.delta).toEqual({ groups: [], workloads: [] });
      expect(result.diagnostics.map((d) => d.path)).toEqual(paths);
      expect(calc.snapshot()).toEqual(before);
    };
    check(calc.deleteService('pg'), 'service', 'service'); // used by both policies
    check(calc.deleteIpList('corp'), 'ipList');
    check(calc.upsertWorkload(workload('x', '10.0.0.300', {})), 'workload.addresses[0]');
    check(
      calc.upsertPolicy({
        name: 'p',
        scope: {},
        ingress: [{ action: 'allow', peers: [{ ipList: 'nope' }] }],
      }),
      'policy.ingress[0].peers[0].ipList',
    );
    expect(calc.load({ ...base(), services: [] }).diagnostics.length).toBeGreaterThan(0);
    expect(calc.snapshot()).toEqual(before);
  });

  it('names a selector by meaning, not spelling; a group lives while a rule names it', () => {
    expect(
      selectorKey({
        matchLabels: { b: '1', a: '2' },
        matchExpressions: [{ key: 'k', operator: 'In', values: ['y', 'x', 'x'] }],
      }),
    ).toBe(
      selectorKey({
        matchExpressions: [{ key: 'k', operator: 'In', values: ['x', 'y'] }],
        matchLabels: { a: '2', b: '1' },
      }),
    );
    expect(groupSource({ cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] }).id).not.toBe(
      groupSource({ cidr: '10.0.0.0/8' }).id,
    );
    const calc = createCalculator();
    calc.load(base());
    const snapshot = calc.snapshot();
    const { delta } = calc.deletePolicy('web');
    expect(delta.groups).toEqual([
      { id: dbId, deleted: true, added: [], removed: [], workloads: [] },
    ]);
    expect(delta.workloads.map((w) => [w.workloadId, w.groupsRemoved])).toEqual([
      ['web1', [dbId]],
      ['web2', [dbId]],
    ]);
    expect(calc.group(dbId)).toBeUndefined();
    expect(applyDelta(snapshot, delta)).toEqual(calc.snapshot());
  });

  it('applyDelta refuses a delta that does not fit the snapshot', () => {
    const calc = createCalculator();
    const cold = calc.load(base()).delta;
    const empty = { ruleSets: new Map(), groups: new Map() };
    const snapshot = applyDelta(empty, cold);
    expect(() => applyDelta(snapshot, cold)).toThrow(/exists/);
    const add = calc.upsertWorkload(workload('web3', '10.0.0.3', { role: 'web' })).delta;
    expect(() => applyDelta(applyDelta(snapshot, add), add)).toThrow(/already present/);
    expect(() => applyDelta(empty, { groups: [], workloads: cold.workloads })).toThrow(
      /missing group/,
    );
  });
});

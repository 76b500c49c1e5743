import { describe, expect, it } from 'vitest';
import { analyzeImpact, type Flow } from './impact.js';
import type { PolicyState } from './model.js';

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

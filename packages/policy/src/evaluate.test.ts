import { describe, expect, it } from 'vitest';
import { policiesFor } from './evaluate.js';
import type { PolicyState } from './model.js';

describe('policiesFor', () => {
  const state: PolicyState = {
    workloads: [
      {
        name: 'db',
        addresses: ['10.0.0.3'],
        labels: { app: 'db', env: 'prod' },
        mode: { ingress: 'monitor', egress: 'monitor' },
      },
    ],
    ipLists: [],
    services: [],
    policies: [
      {
        name: 'z-db',
        scope: { matchLabels: { app: 'db' } },
        ingress: [{ action: 'allow', peers: [{ cidr: '10.0.0.0/8' }] }],
      },
      {
        name: 'prod',
        scope: { matchLabels: { env: 'prod' } },
        ingress: [{ action: 'deny', peers: [{ cidr: '192.0.2.0/24' }] }],
        egress: [],
      },
      {
        name: 'web',
        scope: { matchLabels: { app: 'web' } },
        ingress: [{ action: 'allow', peers: [{ cidr: '10.0.0.0/8' }] }],
      },
    ],
  };

  it('names the policies selecting a workload that have rules in the direction, sorted', () => {
    expect(policiesFor(state, 'db', 'ingress')).toEqual(['prod', 'z-db']);
    // An empty rule list speaks for nothing.
    expect(policiesFor(state, 'db', 'egress')).toEqual([]);
    expect(() => policiesFor(state, 'nope', 'egress')).toThrow(/unknown workload/);
  });
});

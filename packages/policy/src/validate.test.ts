import { describe, expect, it } from 'vitest';
import type { PolicyState } from './model.js';
import { applyChange, prng, randomChange, randomState } from './random.test-util.js';
import {
  validateIpList,
  validatePolicy,
  validateService,
  validateWorkload,
  validateWorkloadPatch,
} from './validate.js';
import { validateState } from './validate-state.js';

const NAME_MESSAGE =
  'must be 1-63 lowercase letters, digits, ".", "_" or "-", starting and ending with a letter or digit';

describe('validatePolicy', () => {
  it('accepts a full policy', () => {
    expect(
      validatePolicy({
        name: 'payments-db',
        description: 'who may talk to the database',
        scope: { matchLabels: { app: 'payments', 'example.com/role': 'db' } },
        ingress: [
          {
            action: 'allow',
            peers: [
              {
                selector: { matchExpressions: [{ key: 'role', operator: 'In', values: ['web'] }] },
              },
              { ipList: 'vpn' },
              { cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] },
              { cidr: '2001:db8::/32', except: ['2001:db8:1::/48'] },
            ],
            services: ['pg', { protocol: 'tcp', port: 8000, endPort: 8100 }, { protocol: 'icmp' }],
          },
        ],
        egress: [{ action: 'deny', peers: [{ selector: {} }] }],
      }),
    ).toEqual([]);
  });

  it('reports structure errors with exact paths under the prefix', () => {
    expect(
      validatePolicy(
        {
          name: 'Bad Name',
          scope: {},
          colour: 'red',
          ingress: [
            { action: 'permit', peers: [] },
            {
              action: 'allow',
              peers: [{ cidr: 7 }],
              services: [{ protocol: 'tcp', port: 0 }, 'PG', 5],
            },
          ],
        },
        'policy',
      ),
    ).toEqual([
      { path: 'policy.colour', message: 'is not a known field' },
      { path: 'policy.name', message: NAME_MESSAGE },
      { path: 'policy.ingress[0].action', message: 'must be one of allow, deny' },
      { path: 'policy.ingress[0].peers', message: 'must not be empty' },
      { path: 'policy.ingress[1].peers[0].cidr', message: 'must be a string' },
      { path: 'policy.ingress[1].services[0].port', message: 'must be between 1 and 65535' },
      { path: 'policy.ingress[1].services[1]', message: NAME_MESSAGE },
      { path: 'policy.ingress[1].services[2]', message: 'must be a string or object' },
    ]);
  });

  it('reports missing fields and wrong types', () => {
    expect(validatePolicy({ ingress: {} })).toEqual([
      { path: 'name', message: 'is required' },
      { path: 'scope', message: 'is required' },
      { path: 'ingress', message: 'must be a list' },
    ]);
    expect(validatePolicy('policy', 'p')).toEqual([{ path: 'p', message: 'must be an object' }]);
  });

  it('checks peers: exactly one kind, except only with cidr, except inside cidr', () => {
    const policy = {
      name: 'p',
      scope: {},
      egress: [
        {
          action: 'allow',
          peers: [
            {},
            { cidr: '10.0.0.0/8', ipList: 'x' },
            { ipList: 'x', except: ['10.0.0.0/8'] },
            { cidr: '10.0.0.0/8', except: ['11.0.0.0/16', 'fd00::/8', '10.2.0.0/16', 'x'] },
            { cidr: '10.0.0.1/8' },
          ],
        },
      ],
    };
    expect(validatePolicy(policy, 'policies[3]')).toEqual([
      {
        path: 'policies[3].egress[0].peers[0]',
        message: 'must have one of selector, ipList or cidr',
      },
      {
        path: 'policies[3].egress[0].peers[1]',
        message: 'must have exactly one of selector, ipList or cidr, not ipList and cidr',
      },
      { path: 'policies[3].egress[0].peers[2].except', message: 'is only allowed with cidr' },
      {
        path: 'policies[3].egress[0].peers[3].except[0]',
        message: "'11.0.0.0/16' is not inside 10.0.0.0/8",
      },
      {
        path: 'policies[3].egress[0].peers[3].except[1]',
        message: "'fd00::/8' is IPv6 but 10.0.0.0/8 is IPv4",
      },
      {
        path: 'policies[3].egress[0].peers[3].except[3]',
        message: "'x' is not a valid IPv4 or IPv6 CIDR",
      },
      {
        path: 'policies[3].egress[0].peers[4].cidr',
        message: "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?",
      },
    ]);
  });

  it('checks selector operators and label syntax', () => {
    const policy = {
      name: 'p',
      scope: {
        matchLabels: { 'bad key!': 'x', app: '-bad-value', 'Example.com/app': 'a', ok: '' },
        matchExpressions: [
          { key: 'a', operator: 'In' },
          { key: 'b', operator: 'NotIn', values: [] },
          { key: 'c', operator: 'Exists', values: ['x'] },
          { key: 'd', operator: 'DoesNotExist', values: [] },
          { key: 'e', operator: 'Near', values: ['x'] },
          { key: 'f', operator: 'In', values: ['ok', 'not ok'] },
        ],
      },
    };
    const paths = validatePolicy(policy).map((d) => d.path);
    expect(paths).toEqual([
      'scope.matchExpressions[4].operator',
      'scope.matchLabels["bad key!"]',
      'scope.matchLabels.app',
      'scope.matchLabels["Example.com/app"]',
      'scope.matchExpressions[0].values',
      'scope.matchExpressions[1].values',
      'scope.matchExpressions[2].values',
      'scope.matchExpressions[5].values[1]',
    ]);
    const messages = validatePolicy(policy).map((d) => d.message);
    expect(messages[0]).toBe('must be one of In, NotIn, Exists, DoesNotExist');
    expect(messages[4]).toBe('must not be empty for operator In');
    expect(messages[6]).toBe('must be empty for operator Exists');
    expect(messages[3]).toBe("label key prefix 'Example.com' must be a lowercase DNS subdomain");
  });

  it('checks port specs', () => {
    const policy = {
      name: 'p',
      scope: {},
      ingress: [
        {
          action: 'allow',
          peers: [{ selector: {} }],
          services: [
            { protocol: 'icmp', port: 8 },
            { protocol: 'tcp', endPort: 80 },
            { protocol: 'udp', port: 100, endPort: 99 },
            { protocol: 'gre' },
            { protocol: 'sctp', port: 1, endPort: 65535 },
          ],
        },
      ],
    };
    expect(validatePolicy(policy)).toEqual([
      {
        path: 'ingress[0].services[3].protocol',
        message: 'must be one of tcp, udp, sctp, icmp, icmpv6, any',
      },
      {
        path: 'ingress[0].services[0].port',
        message: 'ports are only allowed for tcp, udp and sctp, not icmp',
      },
      { path: 'ingress[0].services[1].endPort', message: 'requires port' },
      { path: 'ingress[0].services[2].endPort', message: 'must be at least port (100)' },
    ]);
  });
});

describe('validateService, validateIpList, validateWorkload, validateWorkloadPatch', () => {
  it('validates services', () => {
    expect(validateService({ name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] })).toEqual([]);
    expect(validateService({ name: 'pg', ports: [] }, 'service')).toEqual([
      { path: 'service.ports', message: 'must not be empty' },
    ]);
  });

  it('validates IP lists and their exceptions', () => {
    expect(
      validateIpList({ name: 'vpn', cidrs: ['10.8.0.0/16', 'fd00::/8'], except: ['fd00:1::/32'] }),
    ).toEqual([]);
    expect(
      validateIpList({
        name: 'vpn',
        cidrs: ['10.8.0.0/16', '300.0.0.0/8'],
        except: ['10.9.0.0/16'],
      }),
    ).toEqual([{ path: 'cidrs[1]', message: "'300.0.0.0/8' is not a valid IPv4 or IPv6 CIDR" }]);
    expect(
      validateIpList({ name: 'vpn', cidrs: ['10.8.0.0/16'], except: ['10.9.0.0/16'] }, 'l'),
    ).toEqual([{ path: 'l.except[0]', message: "'10.9.0.0/16' is not inside 10.8.0.0/16" }]);
  });

  it('validates workloads', () => {
    const ok = {
      name: 'web-1',
      addresses: ['10.0.0.1', 'fd00::1'],
      labels: { app: 'web' },
      mode: { ingress: 'monitor', egress: 'enforce' },
    };
    expect(validateWorkload(ok)).toEqual([]);
    expect(
      validateWorkload({
        ...ok,
        addresses: ['10.0.0.0/24'],
        mode: { ingress: 'block', egress: 'monitor' },
      }),
    ).toEqual([
      { path: 'mode.ingress', message: 'must be one of monitor, enforce' },
      {
        path: 'addresses[0]',
        message: "'10.0.0.0/24' is not a valid IPv4 or IPv6 address (no prefix length)",
      },
    ]);
  });

  it('validates workload patches', () => {
    expect(validateWorkloadPatch({})).toEqual([]);
    expect(
      validateWorkloadPatch({ labels: { env: 'prod' }, mode: { ingress: 'enforce' } }),
    ).toEqual([]);
    expect(
      validateWorkloadPatch({ mode: { ingress: 'on' }, name: 'x', labels: { a: 1 } }, 'body'),
    ).toEqual([
      { path: 'body.name', message: 'is not a known field' },
      { path: 'body.labels.a', message: 'must be a string' },
      { path: 'body.mode.ingress', message: 'must be one of monitor, enforce' },
    ]);
  });
});

describe('validateState', () => {
  const state = (): PolicyState => ({
    workloads: [
      {
        name: 'web',
        addresses: ['10.0.0.1'],
        labels: {},
        mode: { ingress: 'monitor', egress: 'monitor' },
      },
    ],
    ipLists: [{ name: 'vpn', cidrs: ['10.8.0.0/16'] }],
    services: [{ name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] }],
    policies: [
      {
        name: 'db',
        scope: {},
        ingress: [{ action: 'allow', peers: [{ ipList: 'vpn' }], services: ['pg'] }],
      },
    ],
  });

  it('accepts a consistent state', () => {
    expect(validateState(state())).toEqual([]);
  });

  it('reports unknown references and duplicate names', () => {
    const s = state();
    s.policies.push({
      name: 'db',
      scope: {},
      egress: [
        {
          action: 'allow',
          peers: [{ selector: {} }, { ipList: 'office' }],
          services: ['pg', 'dns'],
        },
      ],
    });
    s.services.push({ name: 'pg', ports: [{ protocol: 'udp' }] });
    expect(validateState(s)).toEqual([
      { path: 'services[1].name', message: "duplicate name 'pg' (also services[0])" },
      { path: 'policies[1].name', message: "duplicate name 'db' (also policies[0])" },
      { path: 'policies[1].egress[0].services[1]', message: "unknown service 'dns'" },
      { path: 'policies[1].egress[0].peers[1].ipList', message: "unknown IP list 'office'" },
    ]);
  });

  it('prefixes object diagnostics with their place in the state', () => {
    const s = state();
    s.policies[0]!.ingress![0]!.peers.push({ cidr: '10.0.0.0/33' });
    expect(validateState(s)).toEqual([
      {
        path: 'policies[0].ingress[0].peers[1].cidr',
        message: "'10.0.0.0/33' has an invalid prefix length (0..32)",
      },
    ]);
    expect(validateState({ ...s, workloads: undefined } as unknown as PolicyState)).toContainEqual({
      path: 'workloads',
      message: 'must be a list',
    });
  });
  it('checks a state against the one it was made from as a whole check would', () => {
    // Each state is checked against the one before it (as a provision passes its base); the
    // oracle is a whole check of a fresh copy. Some bases were refused, some states are too.
    let refused = 0;
    for (let seed = 1; seed <= 30; seed++) {
      const rng = prng(seed);
      let base = randomState(rng);
      validateState(base);
      for (let i = 0; i < 40; i++) {
        const s = applyChange(base, randomChange(rng, base));
        const whole = validateState(structuredClone(s));
        const got = validateState(s, base);
        expect(got, `seed ${seed} step ${i}`).toEqual(whole);
        if (got.length > 0) refused++;
        base = s;
      }
    }
    expect(refused).toBeGreaterThan(10);
    // A clean base and one changed object: what the change breaks is found.
    const s = state();
    expect(validateState(s)).toEqual([]);
    const w = s.workloads[0]!;
    const relabelled = { ...s, workloads: [{ ...w, labels: { 'bad key!': 'x' } }] };
    expect(validateState(relabelled, s)).toEqual(validateState(structuredClone(relabelled)));
    expect(validateState(relabelled, s)).not.toEqual([]);
    const renamed = { ...s, workloads: [w, { ...w }] };
    expect(validateState(renamed, s)).toEqual([
      { path: 'workloads[1].name', message: "duplicate name 'web' (also workloads[0])" },
    ]);
    const dangling = { ...s, services: [{ ...s.services[0]!, name: 'pg2' }] };
    expect(validateState(dangling, s)).toEqual([
      { path: 'policies[0].ingress[0].services[0]', message: "unknown service 'pg'" },
    ]);
    const policy = s.policies[0]!;
    const badRef = {
      ...s,
      policies: [{ ...policy, ingress: [{ ...policy.ingress![0]!, services: ['nope'] }] }],
    };
    expect(validateState(badRef, s)).toEqual([
      { path: 'policies[0].ingress[0].services[0]', message: "unknown service 'nope'" },
    ]);
  });

  it('checks only new objects again, and refuses what a check of fresh copies refuses', () => {
    // Each state builds on the one before (unchanged objects shared), as a provision does; a
    // copy has no object validated before, so it is checked in full.
    let refused = 0;
    for (let seed = 1; seed <= 20; seed++) {
      const rng = prng(seed);
      let s = randomState(rng);
      for (let i = 0; i < 30; i++) {
        const got = validateState(s);
        expect(got, `seed ${seed} step ${i}`).toEqual(validateState(structuredClone(s)));
        if (got.length > 0) refused++;
        s = applyChange(s, randomChange(rng, s));
      }
    }
    // The sequences do reach invalid states (else this compares nothing worth comparing).
    expect(refused).toBeGreaterThan(10);
    // A valid object's copy made invalid is refused, with its own path.
    const s = state();
    expect(validateState(s)).toEqual([]);
    const bad = { ...s.workloads[0]!, addresses: ['10.0.0.300'] };
    expect(validateState({ ...s, workloads: [s.workloads[0]!, { ...bad, name: 'b' }] })).toEqual([
      {
        path: 'workloads[1].addresses[0]',
        message: "'10.0.0.300' is not a valid IPv4 or IPv6 address (no prefix length)",
      },
    ]);
  });
});

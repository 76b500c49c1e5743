// A hand-made policy in group form for tests: IPv4 and IPv6 groups, allow and deny rules in
// both directions, every kind of service. Not computed by @bulkhead/policy on purpose: tests
// must not assert what the same code computed.
import {
  Action,
  type AddressRange,
  Direction,
  type GroupRuleSet,
  Mode,
  type PolicyUpdate,
} from '@bulkhead/proto';
import { type Failsafe, type GroupPolicy, ruleChain } from './render.js';

const IN = Direction.DIRECTION_INGRESS;
const OUT = Direction.DIRECTION_EGRESS;

const r = (from: string, to = from): AddressRange => ({ from, to });

export const FIXTURE_GROUPS: ReadonlyMap<string, AddressRange[]> = new Map([
  ['cidr:bad', [r('192.168.0.0', '192.168.255.255'), r('fd01::', 'fd01::ff')]],
  ['list:db', [r('10.2.0.1'), r('fd02::', 'fd02::ff')]],
  ['list:out', [r('10.2.0.0', '10.2.0.255'), r('203.0.113.0', '203.0.113.255')]],
  ['sel:web', [r('10.0.0.0', '10.0.0.255'), r('10.0.1.5'), r('fd00::', 'fd00::ffff')]],
]);

/** Rules sorted by id (as the control plane sends them): rule i has flow code i + 1. */
export function fixtureRuleSet(mode: Mode = Mode.MODE_ENFORCE, revision = 7): GroupRuleSet {
  return {
    workloadId: 'web-1',
    revision,
    hash: `rs-${revision}`,
    ingressMode: mode,
    egressMode: mode,
    rules: [
      {
        id: 'web/egress/0',
        direction: OUT,
        action: Action.ACTION_ALLOW,
        policy: 'web',
        groups: ['list:db'],
        services: [
          { protocol: 6, portFrom: 5432, portTo: 5432 },
          { protocol: 132, portFrom: 1000, portTo: 2000 },
        ],
      },
      {
        id: 'web/egress/1',
        direction: OUT,
        action: Action.ACTION_DENY,
        policy: 'web',
        groups: ['list:out'],
        services: [
          { protocol: 17, portFrom: 0, portTo: 65535 },
          { protocol: 47, portFrom: 0, portTo: 0 },
        ],
      },
      {
        id: 'web/ingress/0',
        direction: IN,
        action: Action.ACTION_ALLOW,
        policy: 'web',
        groups: ['sel:web'],
        services: [
          { protocol: 1, portFrom: 0, portTo: 0 },
          { protocol: 6, portFrom: 80, portTo: 90 },
          { protocol: 58, portFrom: 0, portTo: 0 },
        ],
      },
      {
        id: 'web/ingress/1',
        direction: IN,
        action: Action.ACTION_DENY,
        policy: 'web',
        groups: ['cidr:bad', 'list:db'],
        services: [{ protocol: 0, portFrom: 0, portTo: 0 }],
      },
    ],
  };
}

export function fixturePolicy(mode: Mode = Mode.MODE_ENFORCE, revision = 7): GroupPolicy {
  return { ruleSet: fixtureRuleSet(mode, revision), groups: FIXTURE_GROUPS };
}

/** A full sync of `policy` as one message. */
export function fullUpdate(policy: GroupPolicy, hash: string, revision: number): PolicyUpdate {
  return {
    baseHash: '',
    hash,
    revision,
    full: true,
    last: true,
    ruleSet: policy.ruleSet,
    groups: [...policy.groups].map(([id, added]) => ({
      id,
      created: true,
      deleted: false,
      added: [...added],
      removed: [],
    })),
  };
}

/** The fixture as a full sync; hash `hash-<revision>`. */
export function fixtureUpdate(mode: Mode = Mode.MODE_ENFORCE, revision = 7): PolicyUpdate {
  return fullUpdate(fixturePolicy(mode, revision), `hash-${revision}`, revision);
}

export const fixtureFailsafe: Failsafe = {
  controlPlane: [{ address: '10.9.0.1', port: 8443 }],
  admin: { cidrs: ['10.8.0.0/16', 'fd08::/64'], port: 22 },
};

/** The chain (and counter prefix) of the fixture's rule `i`. */
export function fixtureChain(i: number): string {
  return ruleChain(fixtureRuleSet().rules[i]!);
}

/**
 * A full sync that renders but that the kernel refuses: two overlapping ranges in one
 * interval set (a control plane never sends that; the agent does not look for it).
 */
export function refusedUpdate(mode: Mode = Mode.MODE_MONITOR, revision = 8): PolicyUpdate {
  const u = fixtureUpdate(mode, revision);
  u.groups[0]!.added.push({ from: '192.168.1.0', to: '192.168.1.9' });
  return u;
}

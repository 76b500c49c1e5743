// A hand-made RuleSet for tests: IPv4 and IPv6 entries of every kind, allow and deny rules
// in both directions. Not compiled by @bulkhead/policy on purpose: tests must not assert
// what the same code computed.
import { Action, Direction, type Entry, Mode, type RuleSet } from '@bulkhead/proto';
import { type Failsafe, ruleChain } from './render.js';

const IN = Direction.DIRECTION_INGRESS;
const OUT = Direction.DIRECTION_EGRESS;

function entry(
  direction: Direction,
  addrFrom: string,
  addrTo: string,
  protocol: number,
  portFrom: number,
  portTo: number,
  rule: number,
): Entry {
  return { direction, addrFrom, addrTo, protocol, portFrom, portTo, rule };
}

export function fixtureRuleSet(mode: Mode = Mode.MODE_ENFORCE, revision = 7): RuleSet {
  return {
    workloadId: 'web-1',
    revision,
    hash: `hash-${revision}`,
    ingressMode: mode,
    egressMode: mode,
    rules: [
      { id: 'web/ingress/0', direction: IN, action: Action.ACTION_ALLOW, policy: 'web' },
      { id: 'web/ingress/1', direction: IN, action: Action.ACTION_DENY, policy: 'web' },
      { id: 'web/egress/0', direction: OUT, action: Action.ACTION_ALLOW, policy: 'web' },
      { id: 'web/egress/1', direction: OUT, action: Action.ACTION_DENY, policy: 'web' },
    ],
    entries: [
      entry(IN, '10.0.0.0', '10.0.0.255', 6, 80, 90, 0),
      entry(IN, '10.0.1.5', '10.0.1.5', 17, 53, 53, 1),
      entry(IN, '10.0.0.0', '10.0.0.255', 1, 0, 0, 0),
      entry(IN, '192.168.0.0', '192.168.255.255', 0, 0, 0, 1),
      entry(IN, 'fd00::', 'fd00::ffff', 6, 443, 443, 0),
      entry(IN, 'fd00::1', 'fd00::1', 58, 0, 0, 0),
      entry(IN, 'fd01::', 'fd01::ff', 0, 0, 0, 1),
      entry(OUT, '10.2.0.1', '10.2.0.1', 6, 5432, 5432, 2),
      entry(OUT, '10.2.0.0', '10.2.0.255', 17, 0, 65535, 3),
      entry(OUT, 'fd02::', 'fd02::ff', 132, 1000, 2000, 2),
      entry(OUT, 'fd02::', 'fd02::ff', 47, 0, 0, 3),
      entry(OUT, '203.0.113.0', '203.0.113.255', 0, 0, 0, 3),
    ],
  };
}

export const fixtureFailsafe: Failsafe = {
  controlPlane: [{ address: '10.9.0.1', port: 8443 }],
  admin: { cidrs: ['10.8.0.0/16', 'fd08::/64'], port: 22 },
};

/** The chain (and counter prefix) of the fixture's rule `i`. */
export function fixtureChain(i: number): string {
  return ruleChain(fixtureRuleSet().rules[i]!);
}

// "Is this connection allowed?" answered on the group form, the way the nftables mapping in
// rules.ts decides: the first matching deny, else the first matching allow, else default
// deny. Kept free of the compiler's and the model's resolution code so that the property
// test comparing the three means something.

import { Action, Direction, type GroupRuleSet, type ServiceRange } from '@bulkhead/proto';
import { PolicyError } from '../errors.js';
import type { Decision, DirectionName } from '../evaluate.js';
import { checkProbe, parsePeer } from '../evaluate.js';
import type { IpAddress, IpRange } from '../ip.js';
import { PORT_PROTOCOL_NUMBERS, PROTOCOLS } from '../protocols.js';

/** Group contents by id, e.g. `calculator.group` or `(id) => snapshot.groups.get(id)`. */
export type GroupLookup = (id: string) => readonly IpRange[] | undefined;

function serviceMatches(s: ServiceRange, address: IpAddress, protocol: number, port: number) {
  if (s.protocol === 0) return true;
  if (s.protocol !== protocol) return false;
  if (protocol === PROTOCOLS.icmp) return address.family === 4;
  if (protocol === PROTOCOLS.icmpv6) return address.family === 6;
  return !PORT_PROTOCOL_NUMBERS.includes(protocol) || (s.portFrom <= port && port <= s.portTo);
}

export function missing(ruleSet: GroupRuleSet, id: string): never {
  throw new PolicyError('POLICY_BAD_RULE', `${ruleSet.workloadId} refers to missing group ${id}`);
}

/**
 * The verdict and deciding rule for a connection of the workload holding `ruleSet`. `peer`
 * is the source for ingress and the destination for egress; `port` the destination port.
 */
export function evaluateGroups(
  ruleSet: GroupRuleSet,
  groups: GroupLookup,
  direction: DirectionName,
  peer: string,
  protocol: number,
  port?: number,
): Decision {
  checkProbe(protocol, port);
  const address = parsePeer(peer);
  const inGroup = (id: string) =>
    (groups(id) ?? missing(ruleSet, id)).some(
      (r) => r.family === address.family && r.from <= address.value && address.value <= r.to,
    );
  return decideGroups(ruleSet, inGroup, direction, address, protocol, port ?? 0);
}

/** `evaluateGroups` on checked input, with group membership from `inGroup`. */
export function decideGroups(
  ruleSet: GroupRuleSet,
  inGroup: (id: string) => boolean,
  direction: DirectionName,
  address: IpAddress,
  protocol: number,
  port: number,
): Decision {
  const wanted = direction === 'ingress' ? Direction.DIRECTION_INGRESS : Direction.DIRECTION_EGRESS;
  let allow: string | undefined;
  for (const rule of ruleSet.rules) {
    if (rule.direction !== wanted) continue;
    if (rule.action === Action.ACTION_ALLOW && allow !== undefined) continue;
    if (!rule.services.some((s) => serviceMatches(s, address, protocol, port))) continue;
    if (!rule.groups.some(inGroup)) continue;
    if (rule.action === Action.ACTION_DENY) return { action: 'deny', ruleId: rule.id };
    allow = rule.id;
  }
  return allow === undefined ? { action: 'deny' } : { action: 'allow', ruleId: allow };
}

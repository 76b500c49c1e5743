// Two independent answers to "is this connection allowed?": one reads compiled entries the
// way a dataplane does, the other reads the model directly. The property test checks that
// they agree; keep them independent (no shared resolution code) so that it means something.

import { Action, Direction, type RuleSet } from '@bulkhead/proto';
import { PolicyError } from './errors.js';
import { type IpAddress, parseAddress, parseCidr } from './ip.js';
import type { Peer, PolicyState, PortSpec } from './model.js';
import { compareStrings, PORT_PROTOCOL_NUMBERS, PROTOCOLS } from './protocols.js';
import { matchesSelector } from './selector.js';

export type DirectionName = 'ingress' | 'egress';

export interface Decision {
  action: 'allow' | 'deny';
  /** The deciding rule; absent when no rule matched (default deny). */
  ruleId?: string;
}

function parsePeer(peer: string): IpAddress {
  const address = parseAddress(peer);
  if (!address) throw new PolicyError('POLICY_BAD_ARGUMENT', `'${peer}' is not an IP address`);
  return address;
}

/**
 * Looks a connection up in compiled entries: most specific kind first (ports, then
 * protocol, then any), no entry = default deny. `peer` is the source for ingress and the
 * destination for egress; `port` is the destination port (0 when absent).
 */
export function evaluate(
  ruleSet: RuleSet,
  direction: DirectionName,
  peer: string,
  protocol: number,
  port?: number,
): Decision {
  const address = parsePeer(peer);
  const wanted = direction === 'ingress' ? Direction.DIRECTION_INGRESS : Direction.DIRECTION_EGRESS;
  const candidates = ruleSet.entries.filter((e) => {
    if (e.direction !== wanted) return false;
    const from = parseAddress(e.addrFrom);
    const to = parseAddress(e.addrTo);
    return (
      from?.family === address.family &&
      to?.family === address.family &&
      from.value <= address.value &&
      address.value <= to.value
    );
  });
  const kinds: Array<(e: (typeof candidates)[number]) => boolean> = [];
  if (PORT_PROTOCOL_NUMBERS.includes(protocol)) {
    const p = port ?? 0;
    kinds.push((e) => e.protocol === protocol && e.portFrom <= p && p <= e.portTo);
  } else if (protocol !== 0) {
    kinds.push((e) => e.protocol === protocol);
  }
  kinds.push((e) => e.protocol === 0);
  for (const kind of kinds) {
    const hits = candidates.filter(kind);
    if (hits.length > 1) {
      throw new PolicyError(
        'POLICY_OVERLAP',
        `RuleSet ${ruleSet.workloadId} has overlapping entries`,
      );
    }
    const hit = hits[0];
    if (!hit) continue;
    const rule = ruleSet.rules[hit.rule];
    if (!rule) throw new PolicyError('POLICY_BAD_RULE', `entry refers to missing rule ${hit.rule}`);
    return { action: rule.action === Action.ACTION_DENY ? 'deny' : 'allow', ruleId: rule.id };
  }
  return { action: 'deny' };
}

function inCidr(text: string, address: IpAddress): boolean {
  const result = parseCidr(text);
  return (
    result.ok &&
    result.range.family === address.family &&
    result.range.from <= address.value &&
    address.value <= result.range.to
  );
}

function peerMatches(state: PolicyState, peer: Peer, address: IpAddress): boolean {
  if (peer.selector) {
    const selector = peer.selector;
    return state.workloads.some(
      (w) =>
        matchesSelector(selector, w.labels) &&
        w.addresses.some((a) => {
          const parsed = parseAddress(a);
          return parsed?.family === address.family && parsed.value === address.value;
        }),
    );
  }
  if (peer.ipList !== undefined) {
    const list = state.ipLists.find((l) => l.name === peer.ipList);
    if (!list) return false;
    return (
      list.cidrs.some((c) => inCidr(c, address)) &&
      !(list.except ?? []).some((c) => inCidr(c, address))
    );
  }
  if (peer.cidr !== undefined) {
    return inCidr(peer.cidr, address) && !(peer.except ?? []).some((c) => inCidr(c, address));
  }
  return false;
}

function specMatches(spec: PortSpec, address: IpAddress, protocol: number, port: number): boolean {
  switch (spec.protocol) {
    case 'any':
      return true;
    case 'icmp':
      return protocol === PROTOCOLS.icmp && address.family === 4;
    case 'icmpv6':
      return protocol === PROTOCOLS.icmpv6 && address.family === 6;
    default:
      if (PROTOCOLS[spec.protocol] !== protocol) return false;
      if (spec.port === undefined) return true;
      return spec.port <= port && port <= (spec.endPort ?? spec.port);
  }
}

/**
 * The model's semantics, read directly: allowed iff some allow rule of a policy whose
 * scope selects the workload matches and no deny rule does. The deciding rule is the
 * lowest rule id among matching denies, else among matching allows.
 */
export function evaluatePolicy(
  state: PolicyState,
  workload: string,
  direction: DirectionName,
  peer: string,
  protocol: number,
  port?: number,
): Decision {
  const address = parsePeer(peer);
  const target = state.workloads.find((w) => w.name === workload);
  if (!target) throw new PolicyError('POLICY_UNKNOWN_WORKLOAD', `unknown workload '${workload}'`);
  const matched: { allow: string[]; deny: string[] } = { allow: [], deny: [] };
  for (const policy of state.policies) {
    if (!matchesSelector(policy.scope, target.labels)) continue;
    (policy[direction] ?? []).forEach((rule, index) => {
      if (!rule.peers.some((p) => peerMatches(state, p, address))) return;
      const services = rule.services ?? [];
      const specs = services.flatMap((s) =>
        typeof s === 'string' ? (state.services.find((x) => x.name === s)?.ports ?? []) : [s],
      );
      if (services.length > 0 && !specs.some((s) => specMatches(s, address, protocol, port ?? 0))) {
        return;
      }
      matched[rule.action].push(`${policy.name}/${direction}/${index}`);
    });
  }
  for (const action of ['deny', 'allow'] as const) {
    const ids = matched[action].sort(compareStrings);
    if (ids.length > 0) return { action, ruleId: ids[0]! };
  }
  return { action: 'deny' };
}

// Two independent answers to "is this connection allowed?": one reads compiled entries the
// way a dataplane does, the other reads the model directly. The property test checks that
// they agree; keep them independent (no shared resolution code) so that it means something.

import { Action, Direction, type Entry, type RuleSet } from '@bulkhead/proto';
import { PolicyError } from './errors.js';
import { type CidrResult, type IpAddress, parseAddress, parseCidr } from './ip.js';
import type { Peer, PolicyState, PortSpec } from './model.js';
import { compareStrings, PORT_PROTOCOL_NUMBERS, PROTOCOLS } from './protocols.js';
import { matchesSelector } from './selector.js';

export type DirectionName = 'ingress' | 'egress';

export interface Decision {
  action: 'allow' | 'deny';
  /** The deciding rule; absent when no rule matched (default deny). */
  ruleId?: string;
}

interface ParsedEntry {
  entry: Entry;
  from: IpAddress | undefined;
  to: IpAddress | undefined;
}

// Parsing every entry on every lookup made impact analysis quadratic; RuleSets are
// treated as immutable values, so the parse is cached per entries array.
const parsedEntries = new WeakMap<readonly Entry[], ParsedEntry[]>();

function entryRanges(ruleSet: RuleSet): ParsedEntry[] {
  let parsed = parsedEntries.get(ruleSet.entries);
  if (!parsed) {
    parsed = ruleSet.entries.map((entry) => ({
      entry,
      from: parseAddress(entry.addrFrom),
      to: parseAddress(entry.addrTo),
    }));
    parsedEntries.set(ruleSet.entries, parsed);
  }
  return parsed;
}

/** Texts repeat across calls; a bounded memo keeps evaluatePolicy cheap in loops. */
function memo<T>(parse: (text: string) => T): (text: string) => T {
  const cache = new Map<string, T>();
  return (text) => {
    if (cache.has(text)) return cache.get(text) as T;
    if (cache.size >= 10_000) cache.clear();
    const result = parse(text);
    cache.set(text, result);
    return result;
  };
}
const cachedCidr = memo<CidrResult>(parseCidr);
const cachedAddress = memo(parseAddress);

export function checkProbe(protocol: number, port: number | undefined): void {
  if (!Number.isInteger(protocol) || protocol < 0 || protocol > 255) {
    throw new PolicyError('POLICY_BAD_ARGUMENT', `protocol ${protocol} is not in 0..255`);
  }
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) {
    throw new PolicyError('POLICY_BAD_ARGUMENT', `port ${port} is not in 0..65535`);
  }
}

export function parsePeer(peer: string): IpAddress {
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
  checkProbe(protocol, port);
  const address = parsePeer(peer);
  const wanted = direction === 'ingress' ? Direction.DIRECTION_INGRESS : Direction.DIRECTION_EGRESS;
  const candidates = entryRanges(ruleSet).flatMap(({ entry, from, to }) =>
    entry.direction === wanted &&
    from?.family === address.family &&
    to?.family === address.family &&
    from.value <= address.value &&
    address.value <= to.value
      ? [entry]
      : [],
  );
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
  const result = cachedCidr(text);
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
          const parsed = cachedAddress(a);
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
  checkProbe(protocol, port);
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

/**
 * The policies that speak for a workload in a direction: their scope selects it and they
 * have rules in that direction, by name. None means the default deny alone decides there.
 */
export function policiesFor(
  state: PolicyState,
  workload: string,
  direction: DirectionName,
): string[] {
  const target = state.workloads.find((w) => w.name === workload);
  if (!target) throw new PolicyError('POLICY_UNKNOWN_WORKLOAD', `unknown workload '${workload}'`);
  return state.policies
    .filter((p) => (p[direction]?.length ?? 0) > 0 && matchesSelector(p.scope, target.labels))
    .map((p) => p.name)
    .sort(compareStrings);
}

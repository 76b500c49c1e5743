// The group form of policy: rules name address groups instead of enumerating addresses.
// This module owns the canonical names (group ids), the translation of one policy's rules
// and the content hash; it holds no state and knows nothing of workloads or indices.
//
// Mapping onto nftables (for the agent's renderer; the form itself stays dataplane-neutral):
// - one named interval set per (group, family) in the agent's table, e.g.
//   `set g4_<n> { type ipv4_addr; flags interval; }` and `g6_<n>` (`ipv6_addr`), holding the
//   group's ranges; a GroupUpdate becomes element adds/deletes in one transaction;
// - per direction one chain: all deny rules first, then all allow rules, each in rule order
//   (sorted by id). Rule order then gives the semantics: the first deny that matches is the
//   lowest-index deny, and an allow is reached only if no deny matched;
// - one nft rule per (rule, group, family): `ip saddr @g4_<n>` (ingress; `daddr` for
//   egress) plus the services: none for protocol 0 (any); `meta l4proto . th dport @svc_<r>`
//   against a concatenated interval set (`inet_proto . inet_service`) of the rule's
//   tcp/udp/sctp ranges; `meta l4proto { ... }` for other protocols, dropping icmpv6 from
//   the IPv4 rule and icmp from the IPv6 rule (icmp only toward IPv4 peers and icmpv6 only
//   toward IPv6). The verdict jumps to the rule's own chain (counter, flow record, then
//   drop/accept by action and mode), so every verdict stays attributed to its rule;
// - falling off the end of the chain is the default deny (or would-deny in monitor mode).

import { createHash } from 'node:crypto';
import {
  Action,
  type AddressRange,
  type GroupRule,
  GroupRuleSet,
  type ServiceRange,
} from '@bulkhead/proto';
import { DIRECTIONS } from '../compile.js';
import { cidrRange, formatAddress, type IpRange, subtractRanges } from '../ip.js';
import type { Peer, Policy, PortSpec, Selector } from '../model.js';
import { compareStrings } from '../protocols.js';
import { resolveServices } from '../services.js';

function sha256(text: string | Uint8Array): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * The canonical text of a selector: matchLabels by key, expressions with sorted, deduplicated
 * values, sorted and deduplicated, empty parts left out. Equal meaning up to order = equal key.
 */
export function selectorKey(selector: Selector): string {
  const labels = Object.entries(selector.matchLabels ?? {}).sort(([a], [b]) =>
    compareStrings(a, b),
  );
  const expressions = [
    ...new Set(
      (selector.matchExpressions ?? []).map((e) =>
        JSON.stringify([e.key, e.operator, [...new Set(e.values ?? [])].sort(compareStrings)]),
      ),
    ),
  ].sort(compareStrings);
  return JSON.stringify([labels, expressions]);
}

export type GroupSource =
  | { kind: 'selector'; id: string; key: string; selector: Selector }
  | { kind: 'ipList'; id: string; name: string }
  | { kind: 'cidr'; id: string; ranges: IpRange[] };

/** Range text used as a map key and in group ids: `4:from-to`. */
export function rangeKey(r: IpRange): string {
  return `${r.family}:${r.from}-${r.to}`;
}

/**
 * The group a peer refers to. Ids: `sel:<16 hex of sha256(selectorKey)>`, `list:<name>`,
 * `cidr:<16 hex of sha256 of the ranges>` (a CIDR minus its exceptions, so two spellings
 * of the same block are one group).
 */
export function groupSource(peer: Peer): GroupSource {
  if (peer.selector) {
    const key = selectorKey(peer.selector);
    return {
      kind: 'selector',
      id: `sel:${sha256(key).slice(0, 16)}`,
      key,
      selector: peer.selector,
    };
  }
  if (peer.ipList !== undefined)
    return { kind: 'ipList', id: `list:${peer.ipList}`, name: peer.ipList };
  const ranges = subtractRanges([cidrRange(peer.cidr!)], (peer.except ?? []).map(cidrRange));
  return {
    kind: 'cidr',
    id: `cidr:${sha256(ranges.map(rangeKey).join(',')).slice(0, 16)}`,
    ranges,
  };
}

function serviceRanges(services: ReturnType<typeof resolveServices>): ServiceRange[] {
  if (services.anyProtocol) return [{ protocol: 0, portFrom: 0, portTo: 0 }];
  const out: ServiceRange[] = [];
  for (const [protocol, ranges] of services.ports) {
    for (const r of ranges) out.push({ protocol, portFrom: r.from, portTo: r.to });
  }
  for (const protocol of services.protocols) out.push({ protocol, portFrom: 0, portTo: 0 });
  return out.sort((a, b) => a.protocol - b.protocol || a.portFrom - b.portFrom);
}

export interface PolicyRules {
  rules: GroupRule[];
  /** Every peer's group, once per peer (a policy holds one reference per use). */
  sources: GroupSource[];
}

/** One policy's rules in group form, in rule order (ingress, then egress, by index). */
export function policyRules(
  policy: Policy,
  services: (name: string) => readonly PortSpec[] | undefined,
): PolicyRules {
  const rules: GroupRule[] = [];
  const sources: GroupSource[] = [];
  for (const direction of ['ingress', 'egress'] as const) {
    (policy[direction] ?? []).forEach((rule, index) => {
      const peers = rule.peers.map(groupSource);
      sources.push(...peers);
      rules.push(
        Object.freeze({
          id: `${policy.name}/${direction}/${index}`,
          direction: DIRECTIONS[direction],
          action: rule.action === 'deny' ? Action.ACTION_DENY : Action.ACTION_ALLOW,
          policy: policy.name,
          groups: [...new Set(peers.map((p) => p.id))].sort(compareStrings),
          services: serviceRanges(resolveServices(rule.services, services)),
        }),
      );
    });
  }
  return { rules, sources };
}

const EMPTY = GroupRuleSet.create();

/** sha256 hex of a GroupRuleSet holding only `rules`: the part workloads share. */
export function rulesDigest(rules: readonly GroupRule[]): string {
  return sha256(GroupRuleSet.encode({ ...EMPTY, rules: rules as GroupRule[] }).finish());
}

/** The hash of `ruleSet` given the digest of its rules (see `hashGroupRuleSet`). */
export function hashWithDigest(ruleSet: GroupRuleSet, digest: string): string {
  const { workloadId, ingressMode, egressMode } = ruleSet;
  return sha256(
    GroupRuleSet.encode({ ...EMPTY, workloadId, ingressMode, egressMode, hash: digest }).finish(),
  );
}

/**
 * The content hash of a GroupRuleSet, defined like `hashRuleSet`: sha256 hex of
 * `GroupRuleSet.encode({ workloadId, ingressMode, egressMode, hash: D })` where D is the
 * sha256 hex of `GroupRuleSet.encode({ rules })`. Group contents do not count: a membership
 * change leaves every rule set's hash alone.
 */
export function hashGroupRuleSet(ruleSet: GroupRuleSet): string {
  return hashWithDigest(ruleSet, rulesDigest(ruleSet.rules));
}

/** A range as the wire's AddressRange (canonical text). */
export function toAddressRange(r: IpRange): AddressRange {
  return { from: formatAddress(r.family, r.from), to: formatAddress(r.family, r.to) };
}

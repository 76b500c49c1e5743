// The compiler: per workload, resolve the rules that apply to it into address ranges and
// protocol/port sets, then partition the tuple space (direction x family x kind) into
// disjoint cells, each decided by one rule. The sweep works on elementary intervals
// between range boundaries, so every cell sees exactly the rules that cover all of it.

import { createHash } from 'node:crypto';
import { Action, Direction, type Entry, Mode, type Rule, RuleSet } from '@bulkhead/proto';
import {
  cidrRange,
  type Family,
  formatAddress,
  type IpRange,
  normalizeRanges,
  parseAddress,
  subtractRanges,
} from './ip.js';
import type {
  Diagnostic,
  IpList,
  ModeName,
  Peer,
  Policy,
  PolicyState,
  PortSpec,
  Service,
  Workload,
} from './model.js';
import { compareStrings, PORT_PROTOCOL_NUMBERS, PROTOCOLS } from './protocols.js';
import { matchesSelector } from './selector.js';
import { type ResolvedServices, resolveServices } from './services.js';
import { validateState } from './validate-state.js';

export interface CompileResult {
  ruleSets: RuleSet[];
  diagnostics: Diagnostic[];
}

type DirectionName = 'ingress' | 'egress';

/** One rule of one workload, resolved to sets. */
interface ResolvedRule extends ResolvedServices {
  id: string;
  direction: DirectionName;
  deny: boolean;
  policy: string;
  addresses: IpRange[];
}

export const DIRECTIONS: Record<DirectionName, Direction> = {
  ingress: Direction.DIRECTION_INGRESS,
  egress: Direction.DIRECTION_EGRESS,
};
export const MODES: Record<ModeName, Mode> = {
  monitor: Mode.MODE_MONITOR,
  enforce: Mode.MODE_ENFORCE,
};

class Resolver {
  private readonly ipLists: Map<string, IpRange[]>;
  private readonly services: Map<string, PortSpec[]>;

  constructor(private readonly state: PolicyState) {
    this.ipLists = new Map(
      state.ipLists.map((l: IpList) => [
        l.name,
        subtractRanges(l.cidrs.map(cidrRange), (l.except ?? []).map(cidrRange)),
      ]),
    );
    this.services = new Map(state.services.map((s: Service) => [s.name, s.ports]));
  }

  // Policies tend to repeat selectors ({} or an app's role), and parsing every workload's
  // addresses once per selector dominated large compiles.
  private addresses?: Array<{ labels: Workload['labels']; ranges: IpRange[] }>;
  private readonly bySelector = new Map<string, IpRange[]>();

  peerRanges(peer: Peer): IpRange[] {
    if (peer.selector) {
      const selector = peer.selector;
      const key = JSON.stringify(selector);
      const cached = this.bySelector.get(key);
      if (cached) return cached;
      this.addresses ??= this.state.workloads.map((w) => ({
        labels: w.labels,
        ranges: w.addresses.flatMap((text) => {
          const a = parseAddress(text);
          return a ? [{ family: a.family, from: a.value, to: a.value }] : [];
        }),
      }));
      const out = this.addresses.flatMap((w) =>
        matchesSelector(selector, w.labels) ? w.ranges : [],
      );
      this.bySelector.set(key, out);
      return out;
    }
    if (peer.ipList !== undefined) return this.ipLists.get(peer.ipList) ?? [];
    if (peer.cidr !== undefined) {
      return subtractRanges([cidrRange(peer.cidr)], (peer.except ?? []).map(cidrRange));
    }
    return [];
  }

  rulesFor(workload: Workload): ResolvedRule[] {
    return this.state.policies
      .filter((policy) => matchesSelector(policy.scope, workload.labels))
      .flatMap((policy) => this.policyRules(policy))
      .sort((a, b) => compareStrings(a.id, b.id));
  }

  // A policy's rules resolve the same for every workload it selects; resolving them once
  // keeps compile linear in workloads x policies instead of quadratic in workloads.
  private readonly resolved = new Map<Policy, ResolvedRule[]>();

  private policyRules(policy: Policy): ResolvedRule[] {
    const cached = this.resolved.get(policy);
    if (cached) return cached;
    const out: ResolvedRule[] = [];
    for (const direction of ['ingress', 'egress'] as const) {
      (policy[direction] ?? []).forEach((rule, index) => {
        out.push({
          id: `${policy.name}/${direction}/${index}`,
          direction,
          deny: rule.action === 'deny',
          policy: policy.name,
          addresses: normalizeRanges(rule.peers.flatMap((p) => this.peerRanges(p))),
          ...resolveServices(rule.services, (name) => this.services.get(name)),
        });
      });
    }
    this.resolved.set(policy, out);
    return out;
  }
}

/** Lowest-index deny, else lowest-index allow; `indices` must be ascending. */
function decide(indices: readonly number[], rules: readonly ResolvedRule[]): number {
  for (const i of indices) if (rules[i]!.deny) return i;
  return indices[0]!;
}

interface Interval {
  from: bigint;
  to: bigint;
  /** Rule indices covering the whole interval, ascending. */
  active: number[];
}

/** Elementary address intervals of one family where at least one of `members` is present. */
function sweep(
  members: readonly number[],
  rules: readonly ResolvedRule[],
  family: Family,
): Interval[] {
  const events = new Map<bigint, Array<[number, number]>>();
  const add = (at: bigint, rule: number, delta: number) => {
    const list = events.get(at);
    if (list) list.push([rule, delta]);
    else events.set(at, [[rule, delta]]);
  };
  for (const i of members) {
    for (const r of rules[i]!.addresses) {
      if (r.family !== family) continue;
      add(r.from, i, 1);
      add(r.to + 1n, i, -1);
    }
  }
  const points = [...events.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const active = new Set<number>();
  const out: Interval[] = [];
  for (let k = 0; k < points.length - 1; k++) {
    for (const [rule, delta] of events.get(points[k]!)!) {
      if (delta > 0) active.add(rule);
      else active.delete(rule);
    }
    if (active.size > 0) {
      out.push({
        from: points[k]!,
        to: points[k + 1]! - 1n,
        active: [...active].sort((a, b) => a - b),
      });
    }
  }
  return out;
}

interface Cell {
  from: bigint;
  to: bigint;
  portFrom: number;
  portTo: number;
  rule: number;
}

/** Merges address-adjacent cells with the same port range and deciding rule. */
function mergeAddresses(
  rows: Array<{ from: bigint; to: bigint; segments: Omit<Cell, 'from' | 'to'>[] }>,
): Cell[] {
  const done: Cell[] = [];
  let open = new Map<number, Cell>();
  for (const row of rows) {
    const next = new Map<number, Cell>();
    for (const s of row.segments) {
      // A number key (ports < 2^16 each) avoids building a string per cell.
      const key = (s.rule * 65536 + s.portFrom) * 65536 + s.portTo;
      const cell = open.get(key);
      if (cell && cell.to + 1n === row.from) {
        cell.to = row.to;
        open.delete(key);
        next.set(key, cell);
      } else {
        const fresh = { ...s, from: row.from, to: row.to };
        done.push(fresh);
        next.set(key, fresh);
      }
    }
    open = next;
  }
  return done;
}

/** Splits [0, 65535] at the boundaries of the given rules' port ranges for one protocol. */
function portSegments(
  interval: Interval,
  portRules: ReadonlySet<number>,
  protocol: number,
  rules: readonly ResolvedRule[],
): Omit<Cell, 'from' | 'to'>[] {
  const withPorts = interval.active.filter((i) => portRules.has(i));
  if (withPorts.length === 0) return [];
  const cuts = new Set<number>();
  for (const i of withPorts) {
    for (const r of rules[i]!.ports.get(protocol)!) {
      cuts.add(r.from);
      cuts.add(r.to + 1);
    }
  }
  const points = [...cuts].sort((a, b) => a - b);
  const out: Omit<Cell, 'from' | 'to'>[] = [];
  for (let k = 0; k < points.length - 1; k++) {
    const from = points[k]!;
    const to = points[k + 1]! - 1;
    const covering = interval.active.filter(
      (i) =>
        rules[i]!.anyProtocol ||
        rules[i]!.ports.get(protocol)!.some((r) => r.from <= from && to <= r.to),
    );
    if (!covering.some((i) => portRules.has(i))) continue;
    const rule = decide(covering, rules);
    const last = out[out.length - 1];
    if (last && last.rule === rule && last.portTo + 1 === from) last.portTo = to;
    else out.push({ portFrom: from, portTo: to, rule });
  }
  return out;
}

/**
 * Entries come out in a fixed order: direction, family (IPv4 first), kind from the most
 * specific (tcp, udp, sctp; other protocols ascending; any), address, port.
 */
function entriesFor(rules: readonly ResolvedRule[]): Entry[] {
  const entries: Entry[] = [];
  for (const direction of ['ingress', 'egress'] as const) {
    const inDirection = rules.map((_, i) => i).filter((i) => rules[i]!.direction === direction);
    const anyRules = inDirection.filter((i) => rules[i]!.anyProtocol);
    for (const family of [4, 6] as const) {
      const emit = (cells: Cell[], protocol: number) => {
        for (const c of cells) {
          entries.push({
            direction: DIRECTIONS[direction],
            addrFrom: formatAddress(family, c.from),
            addrTo: formatAddress(family, c.to),
            protocol,
            portFrom: c.portFrom,
            portTo: c.portTo,
            rule: c.rule,
          });
        }
      };
      // Ports kind: a cell exists where a port rule covers it; coarser rules still vote.
      for (const protocol of PORT_PROTOCOL_NUMBERS) {
        const portRules = new Set(inDirection.filter((i) => rules[i]!.ports.has(protocol)));
        if (portRules.size === 0) continue;
        const rows = sweep([...portRules, ...anyRules], rules, family).map((iv) => ({
          from: iv.from,
          to: iv.to,
          segments: portSegments(iv, portRules, protocol, rules),
        }));
        emit(mergeAddresses(rows), protocol);
      }
      // Proto kind: icmp only toward IPv4 peers, icmpv6 only toward IPv6 peers.
      const wrongFamily = family === 4 ? PROTOCOLS.icmpv6 : PROTOCOLS.icmp;
      const protocols = new Set(inDirection.flatMap((i) => [...rules[i]!.protocols]));
      protocols.delete(wrongFamily);
      for (const protocol of [...protocols].sort((a, b) => a - b)) {
        const protoRules = new Set(inDirection.filter((i) => rules[i]!.protocols.has(protocol)));
        const rows = sweep([...protoRules, ...anyRules], rules, family).map((iv) => ({
          from: iv.from,
          to: iv.to,
          segments: iv.active.some((i) => protoRules.has(i))
            ? [{ portFrom: 0, portTo: 0, rule: decide(iv.active, rules) }]
            : [],
        }));
        emit(mergeAddresses(rows), protocol);
      }
      // Any kind.
      const rows = sweep(anyRules, rules, family).map((iv) => ({
        from: iv.from,
        to: iv.to,
        segments: [{ portFrom: 0, portTo: 0, rule: decide(iv.active, rules) }],
      }));
      emit(mergeAddresses(rows), 0);
    }
  }
  return entries;
}

const EMPTY: RuleSet = RuleSet.create();

/** sha256 hex of a RuleSet that holds only `rules` and `entries`: the part workloads share. */
function contentDigest(rules: readonly Rule[], entries: readonly Entry[]): string {
  const bytes = RuleSet.encode({
    ...EMPTY,
    rules: rules as Rule[],
    entries: entries as Entry[],
  }).finish();
  return createHash('sha256').update(bytes).digest('hex');
}

function hashWithDigest(ruleSet: RuleSet, digest: string): string {
  const bytes = RuleSet.encode({
    ...EMPTY,
    workloadId: ruleSet.workloadId,
    ingressMode: ruleSet.ingressMode,
    egressMode: ruleSet.egressMode,
    hash: digest,
  }).finish();
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * The content hash of a RuleSet: sha256 hex of `RuleSet.encode({ workloadId, ingressMode,
 * egressMode, hash: D })` (revision 0, no rules or entries), where D is the sha256 hex of
 * `RuleSet.encode({ rules, entries })` (every other field default). `revision` and `hash`
 * do not count, so a new revision that changes nothing for a workload keeps its hash; the
 * two steps let the compiler digest the rules and entries that workloads share only once.
 * Anyone holding a RuleSet (the agent after decode) can recompute it.
 */
export function hashRuleSet(ruleSet: RuleSet): string {
  return hashWithDigest(ruleSet, contentDigest(ruleSet.rules, ruleSet.entries));
}

interface Compiled {
  rules: Rule[];
  entries: Entry[];
  digest: string;
}

function deepFreeze<T extends object>(items: T[]): T[] {
  for (const item of items) Object.freeze(item);
  return Object.freeze(items) as T[];
}

// Workloads selected by the same policies get the same rules and entries; in a fleet of
// many hosts per role that is most of them, so each distinct policy set compiles and is
// digested once, and its RuleSets share the (frozen) arrays instead of copying them.
function compileWorkload(
  resolver: Resolver,
  cache: Map<string, Compiled>,
  workload: Workload,
  revision: number,
): RuleSet {
  const resolved = resolver.rulesFor(workload);
  const key = resolved.map((r) => r.id).join('\n');
  let compiled = cache.get(key);
  if (!compiled) {
    const rules = deepFreeze(
      resolved.map((r) => ({
        id: r.id,
        direction: DIRECTIONS[r.direction],
        action: r.deny ? Action.ACTION_DENY : Action.ACTION_ALLOW,
        policy: r.policy,
      })),
    );
    const entries = deepFreeze(entriesFor(resolved));
    compiled = { rules, entries, digest: contentDigest(rules, entries) };
    cache.set(key, compiled);
  }
  const ruleSet: RuleSet = {
    workloadId: workload.name,
    revision,
    hash: '',
    ingressMode: MODES[workload.mode.ingress],
    egressMode: MODES[workload.mode.egress],
    rules: compiled.rules,
    entries: compiled.entries,
  };
  ruleSet.hash = hashWithDigest(ruleSet, compiled.digest);
  return ruleSet;
}

/**
 * Compiles a state into one RuleSet per workload, sorted by workload name. Invalid input
 * yields diagnostics and no RuleSets, so a caller can never push half a policy. Workloads
 * selected by the same policies share their `rules` and `entries` arrays, which are frozen:
 * copy them before changing a RuleSet.
 */
export function compile(state: PolicyState, revision: number): CompileResult {
  const diagnostics = validateState(state);
  if (diagnostics.length > 0) return { ruleSets: [], diagnostics };
  const resolver = new Resolver(state);
  const cache = new Map<string, Compiled>();
  const ruleSets = [...state.workloads]
    .sort((a, b) => compareStrings(a.name, b.name))
    .map((w) => compileWorkload(resolver, cache, w, revision));
  return { ruleSets, diagnostics: [] };
}

// What observed traffic means under the current policy (classifyFlow), and which allow
// rules would cover it (recommend). Both read the model through evaluatePolicy, so they
// agree with impact analysis and, by the property test, with the compiled dataplane.

import { PolicyError } from './errors.js';
import { type Decision, type DirectionName, evaluatePolicy } from './evaluate.js';
import { formatAddress, type IpAddress, type IpRange, parseAddress, parseCidr } from './ip.js';
import type {
  Labels,
  ModeName,
  Peer,
  Policy,
  PolicyRule,
  PolicyState,
  PortSpec,
  Selector,
  Workload,
} from './model.js';
import { compareStrings, PORT_PROTOCOL_NUMBERS, PROTOCOLS } from './protocols.js';
import { matchesSelector } from './selector.js';

/** A connection between two addresses; `port` is the destination port (0 when absent). */
export interface FlowTuple {
  src: string;
  dst: string;
  protocol: number;
  port?: number;
}

export type FlowVerdict = 'allowed' | 'denied' | 'would-deny' | 'not-covered';

/** The decision at one workload end: the source's egress or the destination's ingress. */
export interface FlowEnd {
  workload: string;
  direction: DirectionName;
  mode: ModeName;
  decision: Decision;
  verdict: FlowVerdict;
}

export interface FlowClassification {
  verdict: FlowVerdict;
  ends: FlowEnd[];
}

// Worst first: the flow's verdict is the worst of its ends.
const SEVERITY: readonly FlowVerdict[] = ['denied', 'would-deny', 'not-covered', 'allowed'];

export function parse(text: string): IpAddress {
  const address = parseAddress(text);
  if (!address) throw new PolicyError('POLICY_BAD_ARGUMENT', `'${text}' is not an IP address`);
  return address;
}

export const canonical = (a: IpAddress) => formatAddress(a.family, a.value);

// Flows come by the thousand against one state; the address index is built once per
// workloads array (states are treated as immutable values, as in evaluate).
const owners = new WeakMap<readonly Workload[], Map<string, Workload[]>>();

/** Workloads owning an address, by name. */
export function ownersOf(state: PolicyState, address: IpAddress): Workload[] {
  return ownersOfText(state, canonical(address));
}

/** `ownersOf` an address given in its canonical text. */
export function ownersOfText(state: PolicyState, text: string): Workload[] {
  let index = owners.get(state.workloads);
  if (!index) {
    index = new Map();
    const sorted = [...state.workloads].sort((a, b) => compareStrings(a.name, b.name));
    for (const w of sorted) {
      for (const text of w.addresses) {
        const a = parseAddress(text);
        if (!a) continue;
        const list = index.get(canonical(a)) ?? [];
        if (!list.includes(w)) list.push(w);
        index.set(canonical(a), list);
      }
    }
    owners.set(state.workloads, index);
  }
  return index.get(text) ?? [];
}

function endVerdict(mode: ModeName, decision: Decision): FlowVerdict {
  if (decision.action === 'allow') return 'allowed';
  if (mode === 'enforce') return 'denied';
  return decision.ruleId === undefined ? 'not-covered' : 'would-deny';
}

/**
 * What the state says of a flow at its workload ends (the source workload's egress, the
 * destination workload's ingress; an address may belong to no workload). `allowed`: allowed
 * at every end; `denied`: denied at an end in enforce mode; `would-deny`: an explicit deny
 * rule at an end in monitor mode; `not-covered`: only the default deny, in monitor mode, or
 * no workload end at all.
 */
export function classifyFlow(state: PolicyState, flow: FlowTuple): FlowClassification {
  const src = parse(flow.src);
  const dst = parse(flow.dst);
  const ends: FlowEnd[] = [];
  const add = (w: Workload, direction: DirectionName, peer: IpAddress) => {
    const decision = evaluatePolicy(
      state,
      w.name,
      direction,
      canonical(peer),
      flow.protocol,
      flow.port,
    );
    const mode = w.mode[direction];
    ends.push({ workload: w.name, direction, mode, decision, verdict: endVerdict(mode, decision) });
  };
  for (const w of ownersOf(state, src)) add(w, 'egress', dst);
  for (const w of ownersOf(state, dst)) add(w, 'ingress', src);
  if (ends.length === 0) return { verdict: 'not-covered', ends };
  const verdict = SEVERITY.find((v) => ends.some((e) => e.verdict === v))!;
  return { verdict, ends };
}

export type RecommendScope = Selector | { workload: string };

export interface RecommendInput<F extends FlowTuple> {
  state: PolicyState;
  /** Observed flows; the same flow reported by both ends counts once. */
  flows: readonly F[];
  scope: RecommendScope;
  /** Label keys that group workloads; default `['app', 'role']`. */
  groupBy?: readonly string[];
}

export interface Coverage {
  /** Distinct observed flows with a scope workload at one end at least. */
  observed: number;
  /** Of those, allowed at every scope end by the state as it is. */
  allowedByCurrent: number;
  /** Of those, allowed at every scope end with the proposed policies added. */
  allowedWithProposal: number;
  /** allowedWithProposal / observed; 1 when nothing was observed. */
  ratio: number;
}

export interface Recommendation<F extends FlowTuple> {
  policies: Policy[];
  coverage: Coverage;
  /** Observed flows the proposal does not allow (an existing deny wins, or a protocol a
   * PortSpec cannot name); the first reported copy of each, in input order. */
  uncovered: F[];
}

const DEFAULT_GROUP_BY = ['app', 'role'] as const;

function sortedLabels(labels: Labels, keys: readonly string[]): Labels {
  return Object.fromEntries([...keys].sort(compareStrings).map((k) => [k, labels[k]!]));
}

/**
 * The group a workload belongs to: its values of the groupBy keys, or all its labels when
 * it has none of them. Absent groupBy keys are required absent, so that `app=shop` does
 * not also select `app=shop,role=db`.
 */
function groupOf(
  w: Workload,
  groupBy: readonly string[],
): { selector: Selector; values: string[] } {
  const present = groupBy.filter((k) => w.labels[k] !== undefined);
  const absent = [...new Set(groupBy.filter((k) => w.labels[k] === undefined))].sort(
    compareStrings,
  );
  const keys = present.length > 0 ? present : Object.keys(w.labels);
  const selector: Selector = { matchLabels: sortedLabels(w.labels, keys) };
  if (absent.length > 0) {
    selector.matchExpressions = absent.map((key) => ({ key, operator: 'DoesNotExist' }));
  }
  const values =
    present.length > 0
      ? [...new Set(present)].map((k) => w.labels[k]!)
      : [...keys].sort(compareStrings).map((k) => w.labels[k]!);
  return { selector, values };
}

/** `recommended-<values>` squeezed into the policy name syntax. */
function policyName(values: string[]): string {
  const raw = `recommended-${values.length > 0 ? values.join('-') : 'unlabelled'}`;
  return raw
    .toLowerCase()
    .replace(/[^a-z0-9._-]/g, '-')
    .slice(0, 60)
    .replace(/[^a-z0-9]+$/, '');
}

/** The most specific IP list holding an address: smallest containing CIDR, then name. */
function ipListFor(state: PolicyState, address: IpAddress): string | undefined {
  let best: { name: string; size: bigint } | undefined;
  const within = (text: string): IpRange | undefined => {
    const parsed = parseCidr(text);
    if (!parsed.ok) return undefined;
    const r = parsed.range;
    return r.family === address.family && r.from <= address.value && address.value <= r.to
      ? r
      : undefined;
  };
  for (const list of state.ipLists) {
    if ((list.except ?? []).some((text) => within(text))) continue;
    for (const text of list.cidrs) {
      const range = within(text);
      if (!range) continue;
      const size = range.to - range.from;
      if (!best || size < best.size || (size === best.size && list.name < best.name)) {
        best = { name: list.name, size };
      }
    }
  }
  return best?.name;
}

function peerFor(
  state: PolicyState,
  address: IpAddress,
  groupBy: readonly string[],
): { key: string; peer: Peer } {
  const owner = ownersOf(state, address)[0];
  // A workload without labels has no group to name; its address is all that identifies it.
  if (owner && Object.keys(owner.labels).length > 0) {
    const { selector } = groupOf(owner, groupBy);
    return { key: `0 ${JSON.stringify(selector)}`, peer: { selector } };
  }
  const list = owner ? undefined : ipListFor(state, address);
  if (list !== undefined) return { key: `1 ${list}`, peer: { ipList: list } };
  const cidr = `${canonical(address)}/${address.family === 4 ? 32 : 128}`;
  return {
    key: `2 ${address.family} ${address.value.toString(16).padStart(32, '0')}`,
    peer: { cidr },
  };
}

const PROTOCOL_NAMES = new Map<number, PortSpec['protocol']>([
  [PROTOCOLS.tcp, 'tcp'],
  [PROTOCOLS.udp, 'udp'],
  [PROTOCOLS.sctp, 'sctp'],
  [PROTOCOLS.icmp, 'icmp'],
  [PROTOCOLS.icmpv6, 'icmpv6'],
]);

/** Ports of each protocol, contiguous ports merged into ranges; protocols in table order. */
function servicesFor(ports: Map<number, Set<number>>): PortSpec[] {
  const out: PortSpec[] = [];
  for (const [number, protocol] of PROTOCOL_NAMES) {
    const seen = ports.get(number);
    if (!seen) continue;
    if (!PORT_PROTOCOL_NUMBERS.includes(number)) {
      out.push({ protocol });
      continue;
    }
    const sorted = [...seen].sort((a, b) => a - b);
    for (let i = 0; i < sorted.length; ) {
      let j = i;
      while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
      out.push(
        j > i
          ? { protocol, port: sorted[i]!, endPort: sorted[j]! }
          : { protocol, port: sorted[i]! },
      );
      i = j + 1;
    }
  }
  return out;
}

interface End {
  workload: Workload;
  direction: DirectionName;
  peer: IpAddress;
}

/**
 * Drafts allow rules that cover observed flows of the scope's workloads: ingress rules for
 * flows to them, egress rules for flows from them, one policy per workload group (by
 * `groupBy`), peers as group selectors, IP lists or single-address CIDRs. Nothing is
 * stored; the caller shows or applies the drafts.
 */
export function recommend<F extends FlowTuple>(input: RecommendInput<F>): Recommendation<F> {
  const { state, flows } = input;
  const groupBy = input.groupBy ?? DEFAULT_GROUP_BY;
  let inScope: (w: Workload) => boolean;
  if ('workload' in input.scope && typeof input.scope.workload === 'string') {
    const name = input.scope.workload;
    if (!state.workloads.some((w) => w.name === name)) {
      throw new PolicyError('POLICY_UNKNOWN_WORKLOAD', `unknown workload '${name}'`);
    }
    inScope = (w) => w.name === name;
  } else {
    const selector = input.scope as Selector;
    inScope = (w) => matchesSelector(selector, w.labels);
  }

  // Distinct flows touching the scope, with their scope ends.
  const distinct = new Map<string, { flow: F; protocol: number; port: number; ends: End[] }>();
  for (const flow of flows) {
    const src = parse(flow.src);
    const dst = parse(flow.dst);
    // Ports mean nothing to other protocols: icmp flows differing only in "port" are one.
    const port = PORT_PROTOCOL_NUMBERS.includes(flow.protocol) ? (flow.port ?? 0) : 0;
    const key = `${canonical(src)} ${canonical(dst)} ${flow.protocol} ${port}`;
    if (distinct.has(key)) continue;
    const ends: End[] = [
      ...ownersOf(state, dst)
        .filter(inScope)
        .map((workload) => ({ workload, direction: 'ingress' as const, peer: src })),
      ...ownersOf(state, src)
        .filter(inScope)
        .map((workload) => ({ workload, direction: 'egress' as const, peer: dst })),
    ];
    if (ends.length > 0) distinct.set(key, { flow, protocol: flow.protocol, port, ends });
  }

  // group name -> direction -> peer key -> protocol -> ports
  interface Draft {
    selector: Selector;
    rules: Record<DirectionName, Map<string, { peer: Peer; ports: Map<number, Set<number>> }>>;
  }
  const drafts = new Map<string, Draft>();
  const taken = new Set(state.policies.map((p) => p.name));
  const groupNames = new Map<string, string>();
  for (const { protocol, port, ends } of distinct.values()) {
    if (!PROTOCOL_NAMES.has(protocol)) continue;
    for (const end of ends) {
      // ICMP toward IPv6 (or ICMPv6 toward IPv4) can never match a rule: nothing to draft.
      const wrongFamily = end.peer.family === 4 ? PROTOCOLS.icmpv6 : PROTOCOLS.icmp;
      if (protocol === wrongFamily) continue;
      const group = groupOf(end.workload, groupBy);
      // No label and no groupBy key to go by: the scope would be `{}`, every workload.
      if (
        Object.keys(group.selector.matchLabels!).length === 0 &&
        !group.selector.matchExpressions
      ) {
        continue;
      }
      const groupKey = JSON.stringify(group.selector);
      let name = groupNames.get(groupKey);
      if (name === undefined) {
        // Another group (or an existing policy) may squeeze to the same name.
        const base = policyName(group.values);
        name = base;
        for (let n = 2; taken.has(name); n++) name = `${base.slice(0, 56)}-${n}`;
        taken.add(name);
        groupNames.set(groupKey, name);
        drafts.set(name, {
          selector: group.selector,
          rules: { ingress: new Map(), egress: new Map() },
        });
      }
      const draft = drafts.get(name)!;
      const { key, peer } = peerFor(state, end.peer, groupBy);
      const byPeer = draft.rules[end.direction];
      const rule = byPeer.get(key) ?? { peer, ports: new Map<number, Set<number>>() };
      byPeer.set(key, rule);
      const ports = rule.ports.get(protocol) ?? new Set<number>();
      ports.add(port);
      rule.ports.set(protocol, ports);
    }
  }

  const policies: Policy[] = [...drafts.entries()]
    .sort(([a], [b]) => compareStrings(a, b))
    .map(([name, draft]) => {
      const policy: Policy = {
        name,
        description: 'Drafted from observed flows',
        scope: draft.selector,
      };
      for (const direction of ['ingress', 'egress'] as const) {
        const rules: PolicyRule[] = [...draft.rules[direction].entries()]
          .sort(([a], [b]) => compareStrings(a, b))
          .map(([, r]) => ({ action: 'allow', peers: [r.peer], services: servicesFor(r.ports) }));
        if (rules.length > 0) policy[direction] = rules;
      }
      return policy;
    });

  const proposed: PolicyState = { ...state, policies: [...state.policies, ...policies] };
  const allowed = (s: PolicyState, f: { protocol: number; port: number; ends: End[] }) =>
    f.ends.every(
      (e) =>
        evaluatePolicy(s, e.workload.name, e.direction, canonical(e.peer), f.protocol, f.port)
          .action === 'allow',
    );
  let allowedByCurrent = 0;
  let allowedWithProposal = 0;
  const uncovered: F[] = [];
  for (const f of distinct.values()) {
    if (allowed(state, f)) allowedByCurrent++;
    if (allowed(proposed, f)) allowedWithProposal++;
    else uncovered.push(f.flow);
  }
  const observed = distinct.size;
  return {
    policies,
    coverage: {
      observed,
      allowedByCurrent,
      allowedWithProposal,
      ratio: observed === 0 ? 1 : allowedWithProposal / observed,
    },
    uncovered,
  };
}

import type {
  EdgePolicy,
  Endpoint,
  FlowVerdict,
  FlowView,
  MapEdge,
  MapNode,
  MapView,
} from '@bulkhead/api';
import {
  classifyFlow,
  type DirectionName,
  type IpAddress,
  type IpRange,
  type PolicyState,
  PROTOCOLS,
  parseAddress,
  parseCidr,
  policiesFor,
  type Workload,
} from '@bulkhead/policy';
import type { FlowRow } from './flow-store.js';

// Query-time views of stored flows, in the REST contract's shapes (@bulkhead/api): addresses
// resolved against the workloads and IP lists as they are now, not as they were when a flow
// was seen.

// The tests read the answers through these names.

const PROTOCOL_NAMES = new Map<number, string>(
  Object.entries(PROTOCOLS)
    .filter(([name]) => name !== 'any')
    .map(([name, n]) => [n, name]),
);

/** `tcp` for 6; numbers without a name as decimal text. */
export function protocolName(n: number): string {
  return PROTOCOL_NAMES.get(n) ?? String(n);
}

/** `tcp` or `6` -> 6; undefined for anything else. */
export function protocolNumber(text: string): number | undefined {
  if (/^\d{1,3}$/.test(text) && Number(text) <= 255) return Number(text);
  const n = PROTOCOLS[text.toLowerCase() as keyof typeof PROTOCOLS];
  return n === undefined || n === 0 ? undefined : n;
}

interface ListRange {
  name: string;
  range: IpRange;
  size: bigint;
}

const inRange = (a: IpAddress, r: IpRange) =>
  a.family === r.family && a.value >= r.from && a.value <= r.to;

export interface Resolver {
  endpoint(address: string): Endpoint;
  workloadOf(address: string): Workload | undefined;
  /** The IP list with the smallest range holding the address (then by name). */
  mostSpecificList(address: string): string | undefined;
}

/** Address -> workload (by canonical address) or the IP lists holding it, for one state. */
export function createResolver(state: PolicyState): Resolver {
  const byAddress = new Map<string, Workload>();
  for (const w of [...state.workloads].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    for (const text of w.addresses) {
      const key = canonical(text);
      if (key !== undefined && !byAddress.has(key)) byAddress.set(key, w);
    }
  }
  const lists = state.ipLists.map((l) => {
    const ranges = (cidrs: string[] | undefined): IpRange[] =>
      (cidrs ?? []).flatMap((c) => {
        const r = parseCidr(c);
        return r.ok ? [r.range] : [];
      });
    return { name: l.name, include: ranges(l.cidrs), except: ranges(l.except) };
  });
  const containing = (address: string): ListRange[] => {
    const a = parseAddress(address);
    if (!a) return [];
    const out: ListRange[] = [];
    for (const l of lists) {
      if (l.except.some((r) => inRange(a, r))) continue;
      const hits = l.include.filter((r) => inRange(a, r));
      if (hits.length === 0) continue;
      const best = hits.reduce((x, y) => (y.to - y.from < x.to - x.from ? y : x));
      out.push({ name: l.name, range: best, size: best.to - best.from });
    }
    return out;
  };
  const workloadOf = (address: string) => {
    const key = canonical(address);
    return key === undefined ? undefined : byAddress.get(key);
  };
  return {
    workloadOf,
    endpoint(address) {
      const w = workloadOf(address);
      if (w) return { address, workload: w.name, labels: w.labels };
      return {
        address,
        ipLists: containing(address)
          .map((l) => l.name)
          .sort(),
      };
    },
    mostSpecificList(address) {
      const sorted = containing(address).sort((x, y) =>
        x.size !== y.size ? (x.size < y.size ? -1 : 1) : x.name < y.name ? -1 : 1,
      );
      return sorted[0]?.name;
    },
  };
}

function canonical(text: string): string | undefined {
  const a = parseAddress(text);
  return a ? `${a.family}:${a.value}` : undefined;
}

/**
 * Whether no policy of `state` selects a workload in a direction, so that its decision there is
 * the default deny; asked of the state once per (workload, direction), however many flows ask.
 */
export function createHasNoPolicy(state: PolicyState) {
  const none = new Map<string, boolean>();
  return (workload: string, direction: DirectionName) => {
    const key = `${workload}\0${direction}`;
    let v = none.get(key);
    if (v === undefined) {
      v = policiesFor(state, workload, direction).length === 0;
      none.set(key, v);
    }
    return v;
  };
}
export type HasNoPolicy = ReturnType<typeof createHasNoPolicy>;

/**
 * The ends of a flow that let it through only because they are in monitor mode and no policy
 * selects them in that direction ("web's egress has no policy"): once enforced, the default deny
 * drops it there, whatever the other end allows. No evaluation needed: with no policy, an end's
 * decision is the default deny. Ends are the workloads the flow's addresses resolve to, as shown.
 */
export function createNoPolicyEnds(state: PolicyState, resolver: Resolver) {
  const hasNoPolicy = createHasNoPolicy(state);
  const gap = (w: Workload | undefined, direction: DirectionName) =>
    w !== undefined && w.mode[direction] === 'monitor' && hasNoPolicy(w.name, direction)
      ? [{ workload: w.name, direction }]
      : [];
  return (f: Pick<FlowRow, 'src' | 'dst'>) => [
    ...gap(resolver.workloadOf(f.src), 'egress'),
    ...gap(resolver.workloadOf(f.dst), 'ingress'),
  ];
}
export type NoPolicyEnds = ReturnType<typeof createNoPolicyEnds>;

export function toFlowView(row: FlowRow, resolver: Resolver, noPolicy?: NoPolicyEnds): FlowView {
  const ends = noPolicy?.(row) ?? [];
  return {
    src: resolver.endpoint(row.src),
    dst: resolver.endpoint(row.dst),
    protocol: protocolName(row.protocol),
    port: row.port,
    direction: row.direction,
    reportedBy: row.workload,
    verdict: row.verdict,
    ruleId: row.ruleId,
    firstSeen: row.firstSeen,
    lastSeen: row.lastSeen,
    connections: row.connections,
    bytes: row.bytes,
    ...(ends.length > 0 && { noPolicy: ends }),
  };
}

/** What `classifyFlow` says of a stored flow; an address no parser accepts is not covered. */
export function policyVerdict(state: PolicyState, f: FlowRow): EdgePolicy {
  if (!parseAddress(f.src) || !parseAddress(f.dst)) return 'not-covered';
  return classifyFlow(state, { src: f.src, dst: f.dst, protocol: f.protocol, port: f.port })
    .verdict;
}

const SEVERITY: readonly EdgePolicy[] = ['denied', 'would-deny', 'not-covered', 'allowed'];
const worse = (a: EdgePolicy, b: EdgePolicy) =>
  SEVERITY.indexOf(a) <= SEVERITY.indexOf(b) ? a : b;

interface Tuple {
  src: string;
  dst: string;
  protocol: number;
  port: number;
  /** reporter end -> verdict -> connections */
  byEnd: Map<string, { counts: Record<FlowVerdict, number>; bytes: number }>;
  firstSeen: string;
  lastSeen: string;
  sample: FlowRow;
}

const zero = (): Record<FlowVerdict, number> => ({ allowed: 0, denied: 0, 'would-deny': 0 });

/**
 * Who talks to whom by label group. A flow both ends reported is one flow: per verdict the
 * larger of the two ends' counts (both ends see the same connections; where they disagree on
 * the verdict, neither end alone knows how the other counted them).
 */
export function buildMap(rows: FlowRow[], state: PolicyState, groupBy: string[]): MapView {
  const resolver = createResolver(state);
  const noPolicy = createNoPolicyEnds(state, resolver);
  const tuples = new Map<string, Tuple>();
  for (const r of rows) {
    const key = `${r.src}|${r.dst}|${r.protocol}|${r.port}`;
    let t = tuples.get(key);
    if (!t) {
      t = { ...r, byEnd: new Map(), firstSeen: r.firstSeen, lastSeen: r.lastSeen, sample: r };
      tuples.set(key, t);
    }
    const end = `${r.workload}|${r.direction}`;
    const e = t.byEnd.get(end) ?? { counts: zero(), bytes: 0 };
    e.counts[r.verdict] += r.connections;
    e.bytes += r.bytes;
    t.byEnd.set(end, e);
    if (r.firstSeen < t.firstSeen) t.firstSeen = r.firstSeen;
    if (r.lastSeen > t.lastSeen) t.lastSeen = r.lastSeen;
  }

  const nodes = new Map<string, MapNode>();
  const nodeOf = (address: string): string => {
    const w = resolver.workloadOf(address);
    if (w) {
      const present = groupBy.filter((k) => w.labels[k] !== undefined);
      let node: MapNode;
      if (present.length === 0) {
        node = { id: `workload:${w.name}`, kind: 'group', name: w.name };
      } else {
        const labels = Object.fromEntries(present.map((k) => [k, w.labels[k]!]));
        node = {
          id: present.map((k) => `${k}=${labels[k]}`).join(','),
          kind: 'group',
          name: present.map((k) => labels[k]).join('-'),
          labels,
        };
      }
      const existing = nodes.get(node.id) ?? { ...node, workloads: [] };
      if (!existing.workloads!.includes(w.name)) existing.workloads!.push(w.name);
      nodes.set(node.id, existing);
      return node.id;
    }
    const list = resolver.mostSpecificList(address);
    const node: MapNode = list
      ? { id: `ip-list:${list}`, kind: 'ip-list', name: list }
      : { id: `external:${address}`, kind: 'external', name: address };
    nodes.set(node.id, node);
    return node.id;
  };

  const edges = new Map<string, MapEdge>();
  for (const t of tuples.values()) {
    const observed = zero();
    let bytes = 0;
    for (const e of t.byEnd.values()) {
      for (const v of Object.keys(observed) as FlowVerdict[]) {
        observed[v] = Math.max(observed[v], e.counts[v]);
      }
      bytes = Math.max(bytes, e.bytes);
    }
    const from = nodeOf(t.src);
    const to = nodeOf(t.dst);
    const protocol = protocolName(t.protocol);
    const key = `${from}\0${to}\0${protocol}\0${t.port}`;
    const policy = policyVerdict(state, t.sample);
    const gaps = policy === 'not-covered' ? noPolicy(t.sample).map((e) => e.direction) : [];
    const edge = edges.get(key);
    const connections = observed.allowed + observed.denied + observed['would-deny'];
    if (!edge) {
      edges.set(key, {
        from,
        to,
        protocol,
        port: t.port,
        connections,
        bytes,
        firstSeen: t.firstSeen,
        lastSeen: t.lastSeen,
        observed,
        policy,
        ...(gaps.length > 0 && { noPolicy: gaps }),
      });
      continue;
    }
    edge.connections += connections;
    edge.bytes += bytes;
    if (t.firstSeen < edge.firstSeen) edge.firstSeen = t.firstSeen;
    if (t.lastSeen > edge.lastSeen) edge.lastSeen = t.lastSeen;
    for (const v of Object.keys(observed) as FlowVerdict[]) edge.observed[v] += observed[v];
    edge.policy = worse(edge.policy, policy);
    // The directions some flow of the edge has no policy in, while the edge is not covered.
    const union = [...new Set([...(edge.noPolicy ?? []), ...gaps])].sort();
    if (edge.policy === 'not-covered' && union.length > 0) edge.noPolicy = union;
    else delete edge.noPolicy;
  }

  const byId = (a: { id: string }, b: { id: string }) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  for (const n of nodes.values()) n.workloads?.sort();
  return {
    groupBy,
    nodes: [...nodes.values()].sort(byId),
    edges: [...edges.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, e]) => e),
  };
}

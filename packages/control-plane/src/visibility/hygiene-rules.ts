// Policy hygiene of rules, from the provisioned state and what was observed: rules with no hits
// in the window, allow rules broader than the traffic they carry, rules no connection can reach
// (shadowed). Pure: the caller brings the state, the window's flows and the counters; no clock.
import type { HygieneFinding } from '@bulkhead/api';
import {
  classifyFlow,
  compile,
  evaluatePolicy,
  formatAddress,
  type IpAddress,
  matchesSelector,
  type Peer,
  PORT_PROTOCOL_NUMBERS,
  type PolicyRule,
  type PolicyState,
  type PortSpec,
  PROTOCOLS,
  parseAddress,
  parseCidr,
} from '@bulkhead/policy';
import type { CounterRow } from '../fleet/store.js';
import type { FlowRow } from './flow-store.js';
import { protocolName } from './views.js';

interface Hits {
  /** `tcp/5432`, `icmp`, as seen. */
  services: Set<string>;
  /** Peer addresses seen (the source for ingress, the destination for egress). */
  peers: IpAddress[];
}

interface RuleRef {
  id: string;
  policy: string;
  rule: PolicyRule;
}

const ruleRefs = (state: PolicyState): RuleRef[] =>
  state.policies.flatMap((p) =>
    (['ingress', 'egress'] as const).flatMap((direction) =>
      (p[direction] ?? []).map((rule, i) => ({
        id: `${p.name}/${direction}/${i}`,
        policy: p.name,
        rule,
      })),
    ),
  );

/** Which rule decided each observed flow at each of its ends, under `state`. */
function hitsOf(state: PolicyState, flows: FlowRow[]): Map<string, Hits> {
  const hits = new Map<string, Hits>();
  const seen = new Set<string>();
  for (const f of flows) {
    if (!parseAddress(f.src) || !parseAddress(f.dst)) continue;
    const key = `${f.src} ${f.dst} ${f.protocol} ${f.port}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const service = PORT_PROTOCOL_NUMBERS.includes(f.protocol)
      ? `${protocolName(f.protocol)}/${f.port}`
      : protocolName(f.protocol);
    for (const end of classifyFlow(state, f).ends) {
      const id = end.decision.ruleId;
      if (id === undefined) continue;
      const h = hits.get(id) ?? { services: new Set(), peers: [] };
      h.services.add(service);
      h.peers.push(parseAddress(end.direction === 'ingress' ? f.src : f.dst)!);
      hits.set(id, h);
    }
  }
  return hits;
}

const allPorts = (s: PortSpec) =>
  s.protocol === 'any' || (['tcp', 'udp', 'sctp'].includes(s.protocol) && s.port === undefined);

/** The smallest CIDR holding every address (all of one family). */
function covering(addresses: IpAddress[]): string {
  const bits = addresses[0]!.family === 4 ? 32 : 128;
  let lo = addresses[0]!.value;
  let hi = lo;
  for (const a of addresses) {
    if (a.value < lo) lo = a.value;
    if (a.value > hi) hi = a.value;
  }
  let prefix = bits;
  while (prefix > 0 && lo >> BigInt(bits - prefix) !== hi >> BigInt(bits - prefix)) prefix--;
  const network = (lo >> BigInt(bits - prefix)) << BigInt(bits - prefix);
  return `${formatAddress(addresses[0]!.family, network)}/${prefix}`;
}

function broadness(state: PolicyState, ref: RuleRef, hits: Hits): HygieneFinding[] {
  const out: HygieneFinding[] = [];
  const seenServices = [...hits.services].sort().join(', ');
  const specs = (ref.rule.services ?? []).flatMap((s) =>
    typeof s === 'string' ? (state.services.find((x) => x.name === s)?.ports ?? []) : [s],
  );
  if (specs.length === 0 || specs.some(allPorts)) {
    out.push({
      kind: 'broad-rule',
      subject: ref.id,
      detail: `allows ${specs.length === 0 ? 'any protocol and port' : 'any port'}; seen: ${seenServices}`,
      fix: `limit the rule's services to ${seenServices}`,
    });
  }
  ref.rule.peers.forEach((peer: Peer, i) => {
    if (peer.cidr !== undefined) {
      const parsed = parseCidr(peer.cidr);
      if (!parsed.ok) return;
      const range = parsed.range;
      const inside = hits.peers.filter(
        (a) => a.family === range.family && range.from <= a.value && a.value <= range.to,
      );
      if (inside.length === 0) {
        out.push({
          kind: 'broad-rule',
          subject: `${ref.id} peers[${i}]`,
          detail: `${peer.cidr} carried no connection in the window`,
          fix: `remove the peer ${peer.cidr}`,
        });
        return;
      }
      const seen = covering(inside);
      if (Number(seen.split('/')[1]) > Number(peer.cidr.split('/')[1])) {
        out.push({
          kind: 'broad-rule',
          subject: `${ref.id} peers[${i}]`,
          detail: `${peer.cidr} is wider than the ${new Set(inside.map((a) => a.value)).size} address(es) seen, all in ${seen}`,
          fix: `narrow ${peer.cidr} to ${seen}`,
        });
      }
    } else if (
      peer.selector &&
      Object.keys(peer.selector.matchLabels ?? {}).length === 0 &&
      (peer.selector.matchExpressions ?? []).length === 0
    ) {
      const names = state.workloads
        .filter((w) =>
          w.addresses.some((t) => {
            const a = parseAddress(t);
            return a && hits.peers.some((p) => p.family === a.family && p.value === a.value);
          }),
        )
        .map((w) => w.name)
        .sort();
      out.push({
        kind: 'broad-rule',
        subject: `${ref.id} peers[${i}]`,
        detail: `selects every workload; seen: ${names.length > 0 ? names.join(', ') : 'no workload'}`,
        fix: 'select the peers seen by their labels',
      });
    }
  });
  return out;
}

/** An address and port the rule covers, to show who decides there instead. */
function samplePoint(
  state: PolicyState,
  rule: PolicyRule,
): { peer: string; protocol: number; port: number } | undefined {
  let peer: string | undefined;
  for (const p of rule.peers) {
    if (p.cidr !== undefined) {
      const r = parseCidr(p.cidr);
      if (r.ok) peer = formatAddress(r.range.family, r.range.from);
    } else if (p.ipList !== undefined) {
      const first = state.ipLists.find((l) => l.name === p.ipList)?.cidrs[0];
      const r = first === undefined ? undefined : parseCidr(first);
      if (r?.ok) peer = formatAddress(r.range.family, r.range.from);
    } else if (p.selector) {
      const selector = p.selector;
      peer = state.workloads.find((w) => matchesSelector(selector, w.labels))?.addresses[0];
    }
    if (peer !== undefined) break;
  }
  if (peer === undefined) return undefined;
  const spec = (rule.services ?? []).flatMap((s) =>
    typeof s === 'string' ? (state.services.find((x) => x.name === s)?.ports ?? []) : [s],
  )[0];
  if (!spec || spec.protocol === 'any') return { peer, protocol: PROTOCOLS.tcp, port: 0 };
  return { peer, protocol: PROTOCOLS[spec.protocol], port: spec.port ?? 0 };
}

/**
 * Rule findings. `counters` tell a rule that never matched from one whose hits are older than
 * the window (flows carry time, counters only totals).
 */
export function ruleFindings(
  state: PolicyState,
  flows: FlowRow[],
  counters: CounterRow[],
  days: number,
): HygieneFinding[] {
  const out: HygieneFinding[] = [];
  const { ruleSets } = compile(state, 0);
  const applied = new Map<string, string>(); // rule id -> a workload it applies to
  const deciding = new Set<string>();
  for (const rs of ruleSets) {
    for (const r of rs.rules) if (!applied.has(r.id)) applied.set(r.id, rs.workloadId);
    for (const e of rs.entries) deciding.add(rs.rules[e.rule]!.id);
  }
  const hits = hitsOf(state, flows);
  for (const f of flows) {
    if (f.ruleId !== '' && !hits.has(f.ruleId))
      hits.set(f.ruleId, { services: new Set(), peers: [] });
  }
  const everHit = new Set(counters.filter((c) => c.packets > 0).map((c) => c.ruleId));
  for (const ref of ruleRefs(state)) {
    const workload = applied.get(ref.id);
    if (workload === undefined) continue; // its policy selects no workload: it speaks for nobody
    if (!deciding.has(ref.id)) {
      const point = samplePoint(state, ref.rule);
      const direction = ref.id.split('/').at(-2) as 'ingress' | 'egress';
      const winner = point
        ? evaluatePolicy(state, workload, direction, point.peer, point.protocol, point.port).ruleId
        : undefined;
      out.push({
        kind: 'shadowed-rule',
        subject: ref.id,
        detail:
          winner !== undefined && winner !== ref.id
            ? `decides no connection: where it matches, another rule decides first (at ${workload} from ${point!.peer}, ${winner})`
            : 'decides no connection: its peers match no address',
        fix: `remove ${ref.id}, or narrow the rule that shadows it`,
      });
      continue;
    }
    const h = hits.get(ref.id);
    if (!h) {
      out.push({
        kind: 'unused-rule',
        subject: ref.id,
        detail: everHit.has(ref.id)
          ? `no connection in the last ${days} days (counters show older hits)`
          : `no connection in the last ${days} days, and its counters never moved`,
        fix: `remove ${ref.id} if the dependency it allows is gone`,
      });
      continue;
    }
    if (ref.rule.action === 'allow' && h.peers.length > 0) out.push(...broadness(state, ref, h));
  }
  return out;
}

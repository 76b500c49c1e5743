import { createHash } from 'node:crypto';
// Renders a workload's policy in group form (GroupRuleSet + address groups) into the desired
// TableModel of `table inet bulkhead`: the only module that knows how rules, groups and
// services become chains, counters, sets and elements. Pure: the same input gives the same
// model. Must not decide how the model reaches the kernel (model.ts) nor how an update
// patches it (update.ts).
import {
  Action,
  type AddressRange,
  Direction,
  type GroupRule,
  type GroupRuleSet,
  Mode,
  type ServiceRange,
  Verdict,
} from '@bulkhead/proto';
import { AgentError } from './errors.js';
import { type Family, familyOf, groupElements, groupSetModel } from './group-elements.js';
import type { ChainModel, RuleModel, SetModel, TableModel } from './model.js';

export type { Family } from './group-elements.js';

export const TABLE_FAMILY = 'inet';
export const TABLE_NAME = 'bulkhead';

/** Traffic the agent always lets through, whatever the policy says. */
export interface Failsafe {
  /** The agent's own connection to the control plane (address = IP literal). */
  controlPlane: { address: string; port: number }[];
  /** Admin access, e.g. tcp/22 from a jump-host CIDR. */
  admin: { cidrs: string[]; port: number } | undefined;
}

/** The kernel flow tables (dynamic sets) the rendering declares. */
export interface FlowTableOptions {
  /** Elements per set; a full set records nothing new until it is drained. */
  size: number;
  /** Seconds an element lives when the agent does not drain it. */
  timeoutSeconds: number;
}

export const DEFAULT_FLOW_TABLE: FlowTableOptions = { size: 65536, timeoutSeconds: 3600 };

type Dir = 'in' | 'out';
/** Modes of a rule set (GroupRuleSet). */
type Modes = Pick<GroupRuleSet, 'ingressMode' | 'egressMode'>;
const PORT_PROTOCOLS = new Set([6, 17, 132]);
// IPv6 cannot work without neighbour discovery, and multicast listener discovery (MLD) keeps
// the host's multicast memberships (solicited-node groups included) alive on the switches.
const ND_TYPES = [
  'nd-neighbor-solicit',
  'nd-neighbor-advert',
  'nd-router-solicit',
  'nd-router-advert',
  'mld-listener-query',
  'mld-listener-report',
  'mld2-listener-report',
];

/** Suffix of a counter name: which verdict the packets it counts got. */
const VERDICT_SUFFIX: Record<
  Verdict.VERDICT_ALLOWED | Verdict.VERDICT_DENIED | Verdict.VERDICT_WOULD_DENY,
  string
> = {
  [Verdict.VERDICT_ALLOWED]: 'allowed',
  [Verdict.VERDICT_DENIED]: 'denied',
  [Verdict.VERDICT_WOULD_DENY]: 'would_deny',
};

/**
 * Name of the chain (and counter prefix) of a rule: derived from its stable id, not its
 * index, so that a rule added before it changes neither its chain, its counters nor the map
 * elements that jump to it.
 */
export function ruleChain(rule: Pick<GroupRule, 'id'>): string {
  return `r_${digest16(rule.id)}`;
}

/** Name of the service set of a rule (its tcp/udp/sctp port ranges). */
export function serviceSet(rule: Pick<GroupRule, 'id'>): string {
  return `s_${digest16(rule.id)}`;
}

/**
 * Name of the interval set holding one family of a group's ranges: a digest of the id, so
 * that no id text (any UTF-8 from the control plane) is ever spliced into a name.
 */
export function groupSet(id: string, family: Family): string {
  return `g${family}_${digest16(id)}`;
}

function digest16(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/**
 * Flow sets come in two generations so that a drain reads a set nothing adds to any more:
 * while the set `flow_gen` is empty (as created) the packet path records into generation
 * `a` (`flows_in4`), while it holds both families into `b` (`flows_in4_b`). One transaction
 * flips it; the drain then reads and deletes the other generation at leisure (flows.ts).
 */
export type FlowGen = 'a' | 'b';
export const FLOW_GEN_SET = 'flow_gen';
export const FLOW_GEN_ELEMENTS = ['ipv4', 'ipv6'] as const;

/** Name of the flow set of a direction, family and generation, e.g. `flows_in4`. */
export function flowSetName(dir: Dir, family: Family, gen: FlowGen = 'a'): string {
  return `flows_${dir}${family}${gen === 'b' ? '_b' : ''}`;
}

/** Every flow set the rendering declares, with its direction, family and generation. */
export const FLOW_SETS: readonly { name: string; dir: Dir; family: Family; gen: FlowGen }[] = (
  ['a', 'b'] as const
).flatMap((gen) =>
  (['in', 'out'] as const).flatMap((dir) =>
    ([4, 6] as const).map((family) => ({ name: flowSetName(dir, family, gen), dir, family, gen })),
  ),
);

/** Rule code a flow element carries: 0 for the default chains, rule index + 1 for a rule chain. */
export const DEFAULT_FLOW_CODE = 0;

function flowSets(m: TableModel, flowTable: FlowTableOptions): void {
  for (const { name, family } of FLOW_SETS) {
    const addr = family === 4 ? 'ipv4_addr' : 'ipv6_addr';
    m.sets.set(name, {
      kind: 'set',
      decl: {
        type: [addr, addr, 'inet_proto', 'inet_service', 'mark'],
        // libnftables 1.0.6 JSON knows no "dynamic" flag: the set gets it from the rules
        // that add to it (nft lists it as `flags dynamic,timeout`).
        flags: ['timeout'],
        timeout: flowTable.timeoutSeconds,
        size: flowTable.size,
        stmt: [{ counter: null }],
      },
      elems: undefined, // the packet path fills them; the agent only drains them
    });
  }
  // Flipped by the drain alone: like the flow sets, never written, compared or reset here.
  m.sets.set(FLOW_GEN_SET, { kind: 'set', decl: { type: 'nf_proto' }, elems: undefined });
}

/**
 * Rules that record a new connection in the flow set of `dir`, one per family, port kind and
 * generation (the lookup in `flow_gen` picks the generation; only one of each pair matches).
 * Each is a rule of its own, before the verdict: adding to a full set aborts the rule that
 * does it, and the verdict must never depend on that.
 */
function recordRules(dir: Dir, code: number): RuleModel[] {
  const l4proto = { meta: { key: 'l4proto' } };
  const nfprotoKey = { meta: { key: 'nfproto' } };
  const portProtocols = { set: [...PORT_PROTOCOLS] };
  return (['a', 'b'] as const).flatMap((gen) =>
    ([4, 6] as const).flatMap((family) => {
      const proto = family === 4 ? 'ip' : 'ip6';
      const nfproto = match(nfprotoKey, family === 4 ? 'ipv4' : 'ipv6');
      const inGen = match(nfprotoKey, `@${FLOW_GEN_SET}`, gen === 'a' ? '!=' : '==');
      const add = (port: unknown) => ({
        set: {
          op: 'add',
          elem: { concat: [payload(proto, 'saddr'), payload(proto, 'daddr'), l4proto, port, code] },
          set: `@${flowSetName(dir, family, gen)}`,
        },
      });
      return [
        rule([nfproto, inGen, match(l4proto, portProtocols), add(payload('th', 'dport'))]),
        rule([nfproto, inGen, match(l4proto, portProtocols, '!='), add(0)]),
      ];
    }),
  );
}

/** Name of the named counter a rule chain (`ruleChain`) or default chain counts into. */
export function counterName(chain: string, verdict: keyof typeof VERDICT_SUFFIX): string {
  return `${chain}_${VERDICT_SUFFIX[verdict]}`;
}

/** Inverse of counterName: undefined for a name this agent did not make. */
export function parseCounterName(
  name: string,
): { chain: string; verdict: keyof typeof VERDICT_SUFFIX } | undefined {
  for (const [v, suffix] of Object.entries(VERDICT_SUFFIX)) {
    if (name.endsWith(`_${suffix}`)) {
      return {
        chain: name.slice(0, -suffix.length - 1),
        verdict: Number(v) as keyof typeof VERDICT_SUFFIX,
      };
    }
  }
  return undefined;
}

function isEnforce(rs: Modes, dir: Direction): boolean {
  // Anything but an explicit enforce counts as monitor: failing open is the safe default
  // for a mode the agent does not understand.
  const mode = dir === Direction.DIRECTION_INGRESS ? rs.ingressMode : rs.egressMode;
  return mode === Mode.MODE_ENFORCE;
}

function dirOf(d: Direction, what: string): Dir {
  if (d === Direction.DIRECTION_INGRESS) return 'in';
  if (d === Direction.DIRECTION_EGRESS) return 'out';
  throw invalid(`${what}: direction ${d} is neither ingress nor egress`);
}

function invalid(message: string): AgentError {
  return new AgentError('RULESET_INVALID', message);
}

/** A rule with its comment: a digest of its expression, which nft lists in its own words. */
function rule(expr: unknown[]): RuleModel {
  const digest = createHash('sha256').update(JSON.stringify(expr)).digest('hex').slice(0, 20);
  return { expr, comment: `bh:${digest}` };
}

function match(left: unknown, right: unknown, op = '=='): unknown {
  return { match: { op, left, right } };
}

function payload(protocol: string, field: string): unknown {
  return { payload: { protocol, field } };
}

const ACCEPT = { accept: null };
const DROP = { drop: null };

/** Splits an IPv4/IPv6 CIDR (or bare address); throws AgentError CONFIG_INVALID. */
export function parseCidr(cidr: string): { addr: string; len: number; family: Family } {
  const [addr = '', lenText, extra] = cidr.split('/');
  const family = familyOf(addr);
  const len = lenText === undefined ? (family === 4 ? 32 : 128) : Number(lenText);
  if (
    family === undefined ||
    extra !== undefined ||
    !Number.isInteger(len) ||
    len < 0 ||
    len > (family === 4 ? 32 : 128)
  ) {
    throw new AgentError('CONFIG_INVALID', `not a CIDR: ${JSON.stringify(cidr)}`);
  }
  return { addr, len, family };
}

function failsafeRules(failsafe: Failsafe): { input: RuleModel[]; output: RuleModel[] } {
  const input: RuleModel[] = [];
  const output: RuleModel[] = [];
  const nd = match(payload('icmpv6', 'type'), { set: ND_TYPES });
  const established = match({ ct: { key: 'state' } }, ['established', 'related'], 'in');
  input.push(rule([match({ meta: { key: 'iif' } }, 'lo'), ACCEPT]));
  input.push(rule([established, ACCEPT]));
  input.push(rule([nd, ACCEPT]));
  output.push(rule([match({ meta: { key: 'oif' } }, 'lo'), ACCEPT]));
  output.push(rule([established, ACCEPT]));
  output.push(rule([nd, ACCEPT]));
  for (const cp of failsafe.controlPlane) {
    const family = familyOf(cp.address);
    if (family === undefined) {
      throw new AgentError('CONFIG_INVALID', `control plane address is not an IP: ${cp.address}`);
    }
    output.push(
      rule([
        match(payload(family === 4 ? 'ip' : 'ip6', 'daddr'), cp.address),
        match(payload('tcp', 'dport'), cp.port),
        ACCEPT,
      ]),
    );
  }
  if (failsafe.admin) {
    for (const cidr of failsafe.admin.cidrs) {
      const { addr, len, family } = parseCidr(cidr);
      input.push(
        rule([
          match(payload(family === 4 ? 'ip' : 'ip6', 'saddr'), { prefix: { addr, len } }),
          match(payload('tcp', 'dport'), failsafe.admin.port),
          ACCEPT,
        ]),
      );
    }
  }
  return { input, output };
}

function baseChain(hook: 'input' | 'output'): ChainModel {
  return { base: { type: 'filter', hook, prio: 0, policy: 'accept' }, rules: [] };
}

/** A workload's policy in group form: its rules and the contents of the groups it holds. */
export interface GroupPolicy {
  ruleSet: GroupRuleSet;
  groups: ReadonlyMap<string, readonly AddressRange[]>;
}

/**
 * The desired table for (policy, failsafe, flowTable). Throws AgentError RULESET_INVALID on
 * a malformed rule set, a bad range or a rule naming a group the policy does not hold.
 */
export function renderModel(
  policy: GroupPolicy,
  failsafe: Failsafe,
  flowTable: FlowTableOptions = DEFAULT_FLOW_TABLE,
): TableModel {
  const sets = new Map<string, SetModel>();
  for (const [id, ranges] of policy.groups) {
    const elems = groupElements(ranges);
    for (const family of [4, 6] as const) {
      sets.set(groupSet(id, family), groupSetModel(family, elems[family]));
    }
  }
  return renderRules(
    policy.ruleSet,
    policy.groups.keys(),
    (name) => sets.get(name)!,
    failsafe,
    flowTable,
  );
}

function range<T>(from: T, to: T): unknown {
  return from === to ? from : { range: [from, to] };
}

/** The services of a rule, split the way nft matches them (see renderRules). */
interface RuleServices {
  any: boolean;
  /** tcp/udp/sctp port ranges, merged per protocol: elements of the rule's service set. */
  ports: string[];
  /** Other protocols, matched whole. */
  protocols: number[];
}

function servicesOf(services: readonly ServiceRange[], what: string): RuleServices {
  const out: RuleServices = { any: false, ports: [], protocols: [] };
  const byProtocol = new Map<number, [number, number][]>();
  for (const s of services) {
    if (!Number.isInteger(s.protocol) || s.protocol < 0 || s.protocol > 255) {
      throw invalid(`${what}: protocol ${s.protocol} out of range`);
    }
    if (s.protocol === 0) out.any = true;
    else if (PORT_PROTOCOLS.has(s.protocol)) {
      if (s.portFrom > s.portTo || s.portTo > 65535) {
        throw invalid(`${what}: port range ${s.portFrom}-${s.portTo} is invalid`);
      }
      const list = byProtocol.get(s.protocol) ?? [];
      list.push([s.portFrom, s.portTo]);
      byProtocol.set(s.protocol, list);
    } else if (!out.protocols.includes(s.protocol)) out.protocols.push(s.protocol);
  }
  // An interval set refuses overlapping elements: merge what overlaps or touches.
  for (const [protocol, list] of [...byProtocol].sort((a, b) => a[0] - b[0])) {
    list.sort((a, b) => a[0] - b[0]);
    let cur: [number, number] | undefined;
    for (const r of list) {
      if (cur && r[0] <= cur[1] + 1) cur[1] = Math.max(cur[1], r[1]);
      else {
        if (cur) out.ports.push(JSON.stringify({ concat: [protocol, range(cur[0], cur[1])] }));
        cur = [...r];
      }
    }
    if (cur) out.ports.push(JSON.stringify({ concat: [protocol, range(cur[0], cur[1])] }));
  }
  out.protocols.sort((a, b) => a - b);
  return out;
}

const ICMP = 1;
const ICMPV6 = 58;

/**
 * The nft rules of one policy rule: per group it names and per family, `ip saddr . meta
 * nfproto @g4_..` (ingress; daddr for egress; see NFPROTO) with the services, jumping to the rule's chain. A port match
 * (`meta l4proto . th dport @s_..`) and a protocol match (`meta l4proto {..}`, icmp only for
 * IPv4, icmpv6 only for IPv6) are separate rules: one nft rule cannot OR them.
 */
function policyRules(r: GroupRule, dir: Dir, svc: RuleServices): RuleModel[] {
  const out: RuleModel[] = [];
  const jump = { jump: { target: ruleChain(r) } };
  const l4proto = { meta: { key: 'l4proto' } };
  for (const id of r.groups) {
    for (const family of [4, 6] as const) {
      const peer = payload(family === 4 ? 'ip' : 'ip6', dir === 'in' ? 'saddr' : 'daddr');
      const nfproto = { meta: { key: 'nfproto' } };
      const addr = match({ concat: [peer, nfproto] }, `@${groupSet(id, family)}`);
      if (svc.any) {
        out.push(rule([addr, jump]));
        continue;
      }
      if (svc.ports.length > 0) {
        const key = { concat: [l4proto, payload('th', 'dport')] };
        out.push(rule([addr, match(key, `@${serviceSet(r)}`), jump]));
      }
      const protocols = svc.protocols.filter((p) => p !== (family === 4 ? ICMPV6 : ICMP));
      if (protocols.length > 0) {
        const right = protocols.length === 1 ? protocols[0] : { set: protocols };
        out.push(rule([addr, match(l4proto, right), jump]));
      }
    }
  }
  return out;
}

/**
 * The table for a rule set whose group sets already exist as models: `groupSets(name)` gives
 * the SetModel of each (the update path passes the applied ones, so that untouched groups
 * keep their objects and a delta need not look at their elements). Every group of `groupIds`
 * gets its two sets; a rule naming any other group is refused (RULESET_INVALID).
 *
 * Layout: base chains `input`/`output` hold the failsafe rules, then per direction every
 * deny rule, then every allow rule, each in rule-set order (the first matching deny decides,
 * an allow only when no deny matched), then a jump to the default chain. Each rule's chain
 * records the flow, counts and accepts or drops.
 */
export function renderRules(
  rs: GroupRuleSet,
  groupIds: Iterable<string>,
  groupSets: (name: string) => SetModel,
  failsafe: Failsafe,
  flowTable: FlowTableOptions = DEFAULT_FLOW_TABLE,
): TableModel {
  const m: TableModel = {
    family: TABLE_FAMILY,
    name: TABLE_NAME,
    counters: new Set(),
    sets: new Map(),
    chains: new Map(),
  };
  const input = baseChain('input');
  const output = baseChain('output');
  m.chains.set('input', input);
  m.chains.set('output', output);
  flowSets(m, flowTable);
  const held = new Set<string>();
  for (const id of groupIds) {
    held.add(id);
    for (const family of [4, 6] as const) {
      const name = groupSet(id, family);
      m.sets.set(name, groupSets(name));
    }
  }

  const safe = failsafeRules(failsafe);
  input.rules.push(...safe.input);
  output.rules.push(...safe.output);
  const lookups: Record<Dir, { deny: RuleModel[]; allow: RuleModel[] }> = {
    in: { deny: [], allow: [] },
    out: { deny: [], allow: [] },
  };
  rs.rules.forEach((r, i) => {
    const what = `rules[${i}]`;
    const chain = ruleChain(r);
    if (m.chains.has(chain)) throw invalid(`${what}: id ${JSON.stringify(r.id)} repeats`);
    const dir = dirOf(r.direction, what);
    let verdict: keyof typeof VERDICT_SUFFIX;
    if (r.action === Action.ACTION_ALLOW) verdict = Verdict.VERDICT_ALLOWED;
    else if (r.action === Action.ACTION_DENY) {
      verdict = isEnforce(rs, r.direction) ? Verdict.VERDICT_DENIED : Verdict.VERDICT_WOULD_DENY;
    } else throw invalid(`${what}: action ${r.action} is neither allow nor deny`);
    for (const id of r.groups) {
      if (!held.has(id)) throw invalid(`${what}: group ${JSON.stringify(id)} is not held`);
    }
    const name = counterName(chain, verdict);
    m.counters.add(name);
    const decision = verdict === Verdict.VERDICT_DENIED ? DROP : ACCEPT;
    m.chains.set(chain, {
      rules: [...recordRules(dir, i + 1), rule([{ counter: name }, decision])],
    });
    const svc = servicesOf(r.services, what);
    if (svc.ports.length > 0 && !svc.any && r.groups.length > 0) {
      m.sets.set(serviceSet(r), {
        kind: 'set',
        decl: { type: ['inet_proto', 'inet_service'], flags: ['interval'] },
        elems: new Map(svc.ports.map((text) => [text, ''])),
      });
    }
    const list = lookups[dir][r.action === Action.ACTION_DENY ? 'deny' : 'allow'];
    list.push(...policyRules(r, dir, svc));
  });
  input.rules.push(...lookups.in.deny, ...lookups.in.allow);
  output.rules.push(...lookups.out.deny, ...lookups.out.allow);
  for (const [dir, direction] of [
    ['in', Direction.DIRECTION_INGRESS],
    ['out', Direction.DIRECTION_EGRESS],
  ] as const) {
    const chain = `${dir}_default`;
    const enforce = isEnforce(rs, direction);
    const name = counterName(chain, enforce ? Verdict.VERDICT_DENIED : Verdict.VERDICT_WOULD_DENY);
    m.counters.add(name);
    m.chains.set(chain, {
      rules: [
        ...recordRules(dir, DEFAULT_FLOW_CODE),
        rule([{ counter: name }, enforce ? DROP : ACCEPT]),
      ],
    });
  }
  input.rules.push(rule([{ jump: { target: 'in_default' } }]));
  output.rules.push(rule([{ jump: { target: 'out_default' } }]));
  return m;
}

import { createHash } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
// Renders a RuleSet into the desired TableModel of `table inet bulkhead`: the only module that
// knows how RuleSet rules and entries become chains, counters, maps and elements. Pure: the
// same input gives the same model. Must not decide how the model reaches the kernel (model.ts).
import type { NftCommand, Transaction } from '@bulkhead/nftables';
import {
  Action,
  Direction,
  type Entry,
  Mode,
  type Rule,
  type RuleSet,
  Verdict,
} from '@bulkhead/proto';
import { AgentError } from './errors.js';
import {
  type ChainModel,
  planFull,
  type RuleModel,
  type SetModel,
  type TableModel,
} from './model.js';

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
type Family = 4 | 6;
type Kind = 'ports' | 'proto' | 'any';

const KINDS: Kind[] = ['ports', 'proto', 'any'];
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

const inTable = { family: TABLE_FAMILY, table: TABLE_NAME };

/**
 * Render a RuleSet as one atomic replacement of `table inet bulkhead` (the cold path).
 * Throws AgentError RULESET_INVALID on a malformed RuleSet.
 */
export function renderRuleSet(
  rs: RuleSet,
  failsafe: Failsafe,
  flowTable: FlowTableOptions = DEFAULT_FLOW_TABLE,
): Transaction {
  return planFull(renderModel(rs, failsafe, flowTable));
}

/** The libnftables JSON commands behind renderRuleSet (tests). */
export function renderCommands(
  rs: RuleSet,
  failsafe: Failsafe,
  flowTable: FlowTableOptions = DEFAULT_FLOW_TABLE,
): NftCommand[] {
  return renderRuleSet(rs, failsafe, flowTable).commands;
}

/**
 * Name of the chain (and counter prefix) of a rule: derived from its stable id, not its
 * index, so that a rule added before it changes neither its chain, its counters nor the map
 * elements that jump to it.
 */
export function ruleChain(rule: Pick<Rule, 'id'>): string {
  return `r_${createHash('sha256').update(rule.id).digest('hex').slice(0, 16)}`;
}

/** Name of the flow set of a direction and family, e.g. `flows_in4`. */
export function flowSetName(dir: Dir, family: Family): string {
  return `flows_${dir}${family}`;
}

/** Every flow set the rendering declares, with its direction and family. */
export const FLOW_SETS: readonly { name: string; dir: Dir; family: Family }[] = (
  ['in', 'out'] as const
).flatMap((dir) =>
  ([4, 6] as const).map((family) => ({ name: flowSetName(dir, family), dir, family })),
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
}

/**
 * Rules that record a new connection in the flow set of `dir`, one per family and port kind.
 * Each is a rule of its own, before the verdict: adding to a full set aborts the rule that
 * does it, and the verdict must never depend on that.
 */
function recordRules(dir: Dir, code: number): RuleModel[] {
  const l4proto = { meta: { key: 'l4proto' } };
  const portProtocols = { set: [...PORT_PROTOCOLS] };
  return ([4, 6] as const).flatMap((family) => {
    const proto = family === 4 ? 'ip' : 'ip6';
    const nfproto = match({ meta: { key: 'nfproto' } }, family === 4 ? 'ipv4' : 'ipv6');
    const add = (port: unknown) => ({
      set: {
        op: 'add',
        elem: { concat: [payload(proto, 'saddr'), payload(proto, 'daddr'), l4proto, port, code] },
        set: `@${flowSetName(dir, family)}`,
      },
    });
    return [
      rule([nfproto, match(l4proto, portProtocols), add(payload('th', 'dport'))]),
      rule([nfproto, match(l4proto, portProtocols, '!='), add(0)]),
    ];
  });
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

function isEnforce(rs: RuleSet, dir: Direction): boolean {
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

function familyOf(addr: string): Family | undefined {
  if (isIPv4(addr)) return 4;
  if (isIPv6(addr)) return 6;
  return undefined;
}

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

interface MapSpec {
  dir: Dir;
  family: Family;
  kind: Kind;
}

function range<T>(from: T, to: T): unknown {
  return from === to ? from : { range: [from, to] };
}

/** The map an entry belongs in and its key as JSON text. */
function classify(e: Entry, index: number, ruleCount: number): { map: string; key: string } {
  const what = `entries[${index}]`;
  const dir = dirOf(e.direction, what);
  const family = familyOf(e.addrFrom);
  if (family === undefined || familyOf(e.addrTo) !== family) {
    throw invalid(`${what}: ${e.addrFrom}-${e.addrTo} is not an address range of one family`);
  }
  if (e.rule >= ruleCount) throw invalid(`${what}: rule ${e.rule} does not exist`);
  if (!Number.isInteger(e.protocol) || e.protocol < 0 || e.protocol > 255) {
    throw invalid(`${what}: protocol ${e.protocol} out of range`);
  }
  const addr = range(e.addrFrom, e.addrTo);
  let kind: Kind;
  let key: unknown;
  if (e.protocol === 0) {
    kind = 'any';
    key = addr;
  } else if (PORT_PROTOCOLS.has(e.protocol)) {
    if (e.portFrom > e.portTo || e.portTo > 65535) {
      throw invalid(`${what}: port range ${e.portFrom}-${e.portTo} is invalid`);
    }
    kind = 'ports';
    key = { concat: [addr, e.protocol, range(e.portFrom, e.portTo)] };
  } else {
    kind = 'proto';
    key = { concat: [addr, e.protocol] };
  }
  return { map: mapName({ dir, family, kind }), key: JSON.stringify(key) };
}

function mapName(m: MapSpec): string {
  return `${m.dir}${m.family}_${m.kind}`;
}

function mapType(family: Family, kind: Kind): string | string[] {
  const addr = family === 4 ? 'ipv4_addr' : 'ipv6_addr';
  if (kind === 'any') return addr;
  if (kind === 'proto') return [addr, 'inet_proto'];
  return [addr, 'inet_proto', 'inet_service'];
}

function lookupKey(m: MapSpec): unknown {
  const addr = payload(m.family === 4 ? 'ip' : 'ip6', m.dir === 'in' ? 'saddr' : 'daddr');
  if (m.kind === 'any') return addr;
  const proto = { meta: { key: 'l4proto' } };
  if (m.kind === 'proto') return { concat: [addr, proto] };
  return { concat: [addr, proto, payload('th', 'dport')] };
}

function baseChain(hook: 'input' | 'output'): ChainModel {
  return { base: { type: 'filter', hook, prio: 0, policy: 'accept' }, rules: [] };
}

/**
 * The desired table for (rs, failsafe, flowTable). Throws AgentError RULESET_INVALID on a
 * malformed RuleSet. Elements are kept as JSON texts: a 100k-entry RuleSet must not exist
 * again as 100k object trees.
 */
export function renderModel(
  rs: RuleSet,
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

  const chainOfRule: string[] = [];
  rs.rules.forEach((r, i) => {
    const chain = ruleChain(r);
    if (m.chains.has(chain)) throw invalid(`rules[${i}]: id ${JSON.stringify(r.id)} repeats`);
    const dir = dirOf(r.direction, `rules[${i}]`);
    let verdict: keyof typeof VERDICT_SUFFIX;
    if (r.action === Action.ACTION_ALLOW) verdict = Verdict.VERDICT_ALLOWED;
    else if (r.action === Action.ACTION_DENY) {
      verdict = isEnforce(rs, r.direction) ? Verdict.VERDICT_DENIED : Verdict.VERDICT_WOULD_DENY;
    } else throw invalid(`rules[${i}]: action ${r.action} is neither allow nor deny`);
    const name = counterName(chain, verdict);
    m.counters.add(name);
    const decision = verdict === Verdict.VERDICT_DENIED ? DROP : ACCEPT;
    m.chains.set(chain, {
      rules: [...recordRules(dir, i + 1), rule([{ counter: name }, decision])],
    });
    chainOfRule.push(chain);
  });
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

  const elems = new Map<string, Map<string, string>>();
  const jumps = chainOfRule.map((chain) => JSON.stringify({ jump: { target: chain } }));
  rs.entries.forEach((e, i) => {
    const { map, key } = classify(e, i, rs.rules.length);
    let to = elems.get(map);
    if (!to) {
      to = new Map();
      elems.set(map, to);
    }
    to.set(key, jumps[e.rule]!);
  });
  // Fixed order (direction, family, most specific kind first), not insertion order, so the
  // model does not depend on the order of entries. Empty maps are left out.
  const ordered: MapSpec[] = [];
  for (const dir of ['in', 'out'] as const) {
    for (const family of [4, 6] as const) {
      for (const kind of KINDS) {
        const spec = { dir, family, kind };
        const found = elems.get(mapName(spec));
        if (!found) continue;
        ordered.push(spec);
        const set: SetModel = {
          kind: 'map',
          decl: { type: mapType(family, kind), map: 'verdict', flags: ['interval'] },
          elems: found,
        };
        m.sets.set(mapName(spec), set);
      }
    }
  }

  const safe = failsafeRules(failsafe);
  input.rules.push(...safe.input);
  output.rules.push(...safe.output);
  for (const spec of ordered) {
    const r = rule([{ vmap: { key: lookupKey(spec), data: `@${mapName(spec)}` } }]);
    (spec.dir === 'in' ? input : output).rules.push(r);
  }
  input.rules.push(rule([{ jump: { target: 'in_default' } }]));
  output.rules.push(rule([{ jump: { target: 'out_default' } }]));
  return m;
}

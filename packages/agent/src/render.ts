import { createHash } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import type { NftCommand } from '@bulkhead/nftables';
import { Transaction } from '@bulkhead/nftables';
import { Action, Direction, type Entry, Mode, type RuleSet, Verdict } from '@bulkhead/proto';
import { AgentError } from './errors.js';

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

/** Prefix of the comment on the first input rule; the rest identifies what was rendered. */
export const MARKER_PREFIX = 'bulkhead ';

const table = { family: TABLE_FAMILY, name: TABLE_NAME };
const inTable = { family: TABLE_FAMILY, table: TABLE_NAME };

/**
 * Render a RuleSet as one atomic replacement of `table inet bulkhead`. Pure: the same input
 * gives the same commands. Throws AgentError RULESET_INVALID on a malformed RuleSet.
 */
export function renderRuleSet(
  rs: RuleSet,
  failsafe: Failsafe,
  flowTable: FlowTableOptions = DEFAULT_FLOW_TABLE,
): Transaction {
  const tx = new Transaction();
  for (const cmd of renderCommands(rs, failsafe, flowTable)) {
    const [verb, obj] = Object.entries(cmd)[0] as [string, Record<string, unknown>];
    if (verb === 'add') tx.add(obj);
    else if (verb === 'delete') tx.delete(obj);
    else throw new Error(`unexpected verb ${verb}`);
  }
  return tx;
}

/** The libnftables JSON commands behind renderRuleSet. */
export function renderCommands(
  rs: RuleSet,
  failsafe: Failsafe,
  flowTable: FlowTableOptions = DEFAULT_FLOW_TABLE,
): NftCommand[] {
  const body = renderBody(rs, failsafe, flowTable);
  // The marker lets a restarted agent see that the kernel already holds exactly this
  // rendering (RuleSet and failsafe), so it can leave the table and its counters alone.
  const marker = markerFor(rs, body);
  const input = body.find((c) => chainOf(c) === 'input' && 'rule' in (c.add as object));
  (input!.add as { rule: Record<string, unknown> }).rule.comment = marker;
  // add+delete+add: replaces the table whether or not it exists, in one batch.
  return [{ add: { table } }, { delete: { table } }, { add: { table } }, ...body];
}

/** The marker comment the rendering of (rs, failsafe) carries in the kernel. */
export function expectedMarker(
  rs: RuleSet,
  failsafe: Failsafe,
  flowTable: FlowTableOptions = DEFAULT_FLOW_TABLE,
): string {
  return markerFor(rs, renderBody(rs, failsafe, flowTable));
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

/** Rule code a flow element carries: 0 for the default chains, rule index + 1 for `r<i>`. */
export const DEFAULT_FLOW_CODE = 0;

function flowSets(flowTable: FlowTableOptions): NftCommand[] {
  return FLOW_SETS.map(({ name, family }) => {
    const addr = family === 4 ? 'ipv4_addr' : 'ipv6_addr';
    return {
      add: {
        set: {
          ...inTable,
          name,
          type: [addr, addr, 'inet_proto', 'inet_service', 'mark'],
          // libnftables 1.0.6 JSON knows no "dynamic" flag: the set gets it from the rules
          // that add to it (nft lists it as `flags dynamic,timeout`).
          flags: ['timeout'],
          timeout: flowTable.timeoutSeconds,
          size: flowTable.size,
          stmt: [{ counter: null }],
        },
      },
    };
  });
}

/**
 * Rules that record a new connection in the flow set of `dir`, one per family and port kind.
 * Each is a rule of its own, before the verdict: adding to a full set aborts the rule that
 * does it, and the verdict must never depend on that.
 */
function recordRules(chain: string, dir: Dir, code: number): NftCommand[] {
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
      rule(chain, [nfproto, match(l4proto, portProtocols), add(payload('th', 'dport'))]),
      rule(chain, [nfproto, match(l4proto, portProtocols, '!='), add(0)]),
    ];
  });
}

function markerFor(rs: RuleSet, body: NftCommand[]): string {
  const digest = createHash('sha256')
    .update(rs.hash)
    .update(JSON.stringify(body))
    .digest('hex')
    .slice(0, 32);
  return `${MARKER_PREFIX}rev=${rs.revision} digest=${digest}`;
}

/** Name of the named counter a rule chain (`r<i>`) or default chain counts into. */
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

function chainOf(cmd: NftCommand): string | undefined {
  const obj = cmd.add as { rule?: { chain?: string } } | undefined;
  return obj?.rule?.chain;
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

function rule(chain: string, expr: unknown[]): NftCommand {
  return { add: { rule: { ...inTable, chain, expr } } };
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

function failsafeRules(failsafe: Failsafe): NftCommand[] {
  const out: NftCommand[] = [];
  const nd = match(payload('icmpv6', 'type'), { set: ND_TYPES });
  const established = match({ ct: { key: 'state' } }, ['established', 'related'], 'in');
  out.push(rule('input', [match({ meta: { key: 'iif' } }, 'lo'), ACCEPT]));
  out.push(rule('input', [established, ACCEPT]));
  out.push(rule('input', [nd, ACCEPT]));
  out.push(rule('output', [match({ meta: { key: 'oif' } }, 'lo'), ACCEPT]));
  out.push(rule('output', [established, ACCEPT]));
  out.push(rule('output', [nd, ACCEPT]));
  for (const cp of failsafe.controlPlane) {
    const family = familyOf(cp.address);
    if (family === undefined) {
      throw new AgentError('CONFIG_INVALID', `control plane address is not an IP: ${cp.address}`);
    }
    out.push(
      rule('output', [
        match(payload(family === 4 ? 'ip' : 'ip6', 'daddr'), cp.address),
        match(payload('tcp', 'dport'), cp.port),
        ACCEPT,
      ]),
    );
  }
  if (failsafe.admin) {
    for (const cidr of failsafe.admin.cidrs) {
      const { addr, len, family } = parseCidr(cidr);
      out.push(
        rule('input', [
          match(payload(family === 4 ? 'ip' : 'ip6', 'saddr'), { prefix: { addr, len } }),
          match(payload('tcp', 'dport'), failsafe.admin.port),
          ACCEPT,
        ]),
      );
    }
  }
  return out;
}

interface MapSpec {
  dir: Dir;
  family: Family;
  kind: Kind;
  elem: unknown[];
}

function range<T>(from: T, to: T): unknown {
  return from === to ? from : { range: [from, to] };
}

function classify(e: Entry, index: number, ruleCount: number): { key: string; elem: unknown } {
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
  return { key: `${dir}${family}_${kind}`, elem: [key, { jump: { target: `r${e.rule}` } }] };
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

function renderBody(rs: RuleSet, failsafe: Failsafe, flowTable: FlowTableOptions): NftCommand[] {
  const cmds: NftCommand[] = [];
  const chains: string[] = ['input', 'output'];
  cmds.push({
    add: {
      chain: {
        ...inTable,
        name: 'input',
        type: 'filter',
        hook: 'input',
        prio: 0,
        policy: 'accept',
      },
    },
  });
  cmds.push({
    add: {
      chain: {
        ...inTable,
        name: 'output',
        type: 'filter',
        hook: 'output',
        prio: 0,
        policy: 'accept',
      },
    },
  });

  // Flow sets before the chains whose rules add to them.
  cmds.push(...flowSets(flowTable));

  // Rule chains and their counters come before the maps that jump to them: a map element
  // may only name a chain that already exists.
  rs.rules.forEach((r, i) => {
    const chain = `r${i}`;
    const dir = dirOf(r.direction, `rules[${i}]`);
    let verdict: keyof typeof VERDICT_SUFFIX;
    if (r.action === Action.ACTION_ALLOW) verdict = Verdict.VERDICT_ALLOWED;
    else if (r.action === Action.ACTION_DENY) {
      verdict = isEnforce(rs, r.direction) ? Verdict.VERDICT_DENIED : Verdict.VERDICT_WOULD_DENY;
    } else throw invalid(`rules[${i}]: action ${r.action} is neither allow nor deny`);
    const name = counterName(chain, verdict);
    cmds.push({ add: { counter: { ...inTable, name } } });
    cmds.push({ add: { chain: { ...inTable, name: chain } } });
    const decision = verdict === Verdict.VERDICT_DENIED ? DROP : ACCEPT;
    cmds.push(...recordRules(chain, dir, i + 1));
    cmds.push(rule(chain, [{ counter: name }, decision]));
  });
  for (const [dir, direction] of [
    ['in', Direction.DIRECTION_INGRESS],
    ['out', Direction.DIRECTION_EGRESS],
  ] as const) {
    const chain = `${dir}_default`;
    const enforce = isEnforce(rs, direction);
    const name = counterName(chain, enforce ? Verdict.VERDICT_DENIED : Verdict.VERDICT_WOULD_DENY);
    cmds.push({ add: { counter: { ...inTable, name } } });
    cmds.push({ add: { chain: { ...inTable, name: chain } } });
    cmds.push(...recordRules(chain, dir, DEFAULT_FLOW_CODE));
    cmds.push(rule(chain, [{ counter: name }, enforce ? DROP : ACCEPT]));
    chains.push(chain);
  }

  const maps = new Map<string, MapSpec>();
  rs.entries.forEach((e, i) => {
    const { key, elem } = classify(e, i, rs.rules.length);
    let m = maps.get(key);
    if (!m) {
      const [dirFamily = '', kind] = key.split('_') as [string, Kind];
      m = {
        dir: dirFamily.slice(0, -1) as Dir,
        family: Number(dirFamily.slice(-1)) as Family,
        kind,
        elem: [],
      };
      maps.set(key, m);
    }
    m.elem.push(elem);
  });
  // Fixed order (direction, family, most specific kind first), not insertion order, so the
  // rendering does not depend on the order of entries.
  const ordered: MapSpec[] = [];
  for (const dir of ['in', 'out'] as const) {
    for (const family of [4, 6] as const) {
      for (const kind of KINDS) {
        const m = maps.get(`${dir}${family}_${kind}`);
        if (m) ordered.push(m);
      }
    }
  }
  for (const m of ordered) {
    cmds.push({
      add: {
        map: {
          ...inTable,
          name: `${m.dir}${m.family}_${m.kind}`,
          type: mapType(m.family, m.kind),
          map: 'verdict',
          flags: ['interval'],
          elem: m.elem,
        },
      },
    });
  }

  cmds.push(...failsafeRules(failsafe));
  for (const m of ordered) {
    cmds.push(
      rule(m.dir === 'in' ? 'input' : 'output', [
        { vmap: { key: lookupKey(m), data: `@${m.dir}${m.family}_${m.kind}` } },
      ]),
    );
  }
  cmds.push(rule('input', [{ jump: { target: 'in_default' } }]));
  cmds.push(rule('output', [{ jump: { target: 'out_default' } }]));
  return cmds;
}

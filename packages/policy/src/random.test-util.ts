// Seeded random policy states for property tests: tiny address and port universes, so
// that ranges, ports and labels collide.

import { formatAddress, parseAddress } from './ip.js';
import type {
  IpList,
  Labels,
  Peer,
  Policy,
  PolicyRule,
  PolicyState,
  PortSpec,
  Protocol,
  Selector,
  Service,
  Workload,
} from './model.js';

/** mulberry32: small, seedable, good enough to spread test cases. */
export function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(items: readonly T[]): T => items[int(0, items.length - 1)]!;
  const chance = (p: number) => next() < p;
  const shuffle = <T>(items: readonly T[]): T[] => {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = int(0, i);
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  };
  return { int, pick, chance, shuffle };
}
export type Rng = ReturnType<typeof prng>;

export const V4_BASE = parseAddress('10.0.0.0')!.value;
export const V6_BASE = parseAddress('fd00::')!.value;
export const PORT_LO = 20;
export const PORT_HI = 30;

export function address(rng: Rng, family: 4 | 6): string {
  // Non-canonical spellings must resolve like canonical ones.
  if (family === 6 && rng.chance(0.1)) return `FD00:0:0:0:0:0:0:${rng.int(0, 31).toString(16)}`;
  return formatAddress(family, (family === 4 ? V4_BASE : V6_BASE) + BigInt(rng.int(0, 31)));
}

/** An aligned CIDR inside the 32-address universe (or, rarely, everything). */
export function cidr(rng: Rng, family: 4 | 6): string {
  if (rng.chance(0.08)) return family === 4 ? '0.0.0.0/0' : '::/0';
  const bits = family === 4 ? 32 : 128;
  const size = rng.int(0, 5); // host bits: /32../27 or /128../123
  const offset = (rng.int(0, 31) >> size) << size;
  const base = (family === 4 ? V4_BASE : V6_BASE) + BigInt(offset);
  return `${formatAddress(family, base)}/${bits - size}`;
}

/** A CIDR inside `outer`, so that it is a valid exception. */
export function inside(rng: Rng, outer: string): string {
  const [text, len] = outer.split('/') as [string, string];
  const parsed = parseAddress(text)!;
  const bits = parsed.family === 4 ? 32 : 128;
  const outerHost = bits - Number(len);
  const host = rng.int(0, Math.min(outerHost, 5));
  const span = outerHost >= 6 ? 32 : 2 ** outerHost;
  const offset = (rng.int(0, span - 1) >> host) << host;
  return `${formatAddress(parsed.family, parsed.value + BigInt(offset))}/${bits - host}`;
}

export const KEYS = ['app', 'role', 'env'];
export const VALUES = ['a', 'b', 'c'];

export function labels(rng: Rng): Labels {
  const out: Labels = {};
  for (const key of KEYS) if (rng.chance(0.6)) out[key] = rng.pick(VALUES);
  return out;
}

export function selector(rng: Rng): Selector {
  if (rng.chance(0.2)) return {};
  const out: Selector = {};
  if (rng.chance(0.6)) out.matchLabels = Object.fromEntries([[rng.pick(KEYS), rng.pick(VALUES)]]);
  if (rng.chance(0.5)) {
    out.matchExpressions = Array.from({ length: rng.int(1, 2) }, () => {
      const operator = rng.pick(['In', 'NotIn', 'Exists', 'DoesNotExist'] as const);
      const key = rng.pick(KEYS);
      return operator === 'In' || operator === 'NotIn'
        ? { key, operator, values: rng.shuffle(VALUES).slice(0, rng.int(1, 2)) }
        : { key, operator };
    });
  }
  return out;
}

export function portSpec(rng: Rng): PortSpec {
  const protocol = rng.pick<Protocol>(['tcp', 'tcp', 'udp', 'sctp', 'icmp', 'icmpv6', 'any']);
  if (!['tcp', 'udp', 'sctp'].includes(protocol) || rng.chance(0.2)) return { protocol };
  // Now and then a range that touches the ends of the port space.
  if (rng.chance(0.05)) return { protocol, port: 1, endPort: rng.int(PORT_LO, PORT_HI) };
  if (rng.chance(0.05)) return { protocol, port: rng.int(PORT_LO, PORT_HI), endPort: 65535 };
  const port = rng.int(PORT_LO, PORT_HI);
  return rng.chance(0.5) ? { protocol, port } : { protocol, port, endPort: rng.int(port, PORT_HI) };
}

export function peer(rng: Rng, ipLists: IpList[]): Peer {
  const kind = rng.int(0, 2);
  if (kind === 0) return { selector: selector(rng) };
  if (kind === 1 && ipLists.length > 0) return { ipList: rng.pick(ipLists).name };
  const c = cidr(rng, rng.chance(0.6) ? 4 : 6);
  return rng.chance(0.4) ? { cidr: c, except: [inside(rng, c)] } : { cidr: c };
}

export function rule(rng: Rng, ipLists: IpList[], services: Service[]): PolicyRule {
  const out: PolicyRule = {
    action: rng.chance(0.65) ? 'allow' : 'deny',
    peers: Array.from({ length: rng.int(1, 3) }, () => peer(rng, ipLists)),
  };
  if (rng.chance(0.75)) {
    out.services = Array.from({ length: rng.int(1, 3) }, () =>
      services.length > 0 && rng.chance(0.4) ? rng.pick(services).name : portSpec(rng),
    );
  }
  return out;
}

export function randomState(rng: Rng): PolicyState {
  const workloads: Workload[] = Array.from({ length: rng.int(1, 5) }, (_, i) => ({
    name: `w${i}`,
    addresses: [
      ...new Set(
        Array.from({ length: rng.int(1, 3) }, () => address(rng, rng.chance(0.6) ? 4 : 6)),
      ),
    ],
    labels: labels(rng),
    mode: { ingress: rng.pick(['monitor', 'enforce'] as const), egress: 'monitor' },
  }));
  const ipLists: IpList[] = Array.from({ length: rng.int(0, 2) }, (_, i) => {
    const family = rng.chance(0.6) ? 4 : 6;
    const cidrs = Array.from({ length: rng.int(1, 2) }, () => cidr(rng, family));
    return rng.chance(0.5)
      ? { name: `l${i}`, cidrs, except: [inside(rng, cidrs[0]!)] }
      : { name: `l${i}`, cidrs };
  });
  const services: Service[] = Array.from({ length: rng.int(0, 3) }, (_, i) => ({
    name: `s${i}`,
    ports: Array.from({ length: rng.int(1, 2) }, () => portSpec(rng)),
  }));
  const policies: Policy[] = Array.from({ length: rng.int(1, 4) }, (_, i) => ({
    name: `p${i}`,
    scope: selector(rng),
    ingress: Array.from({ length: rng.int(0, 3) }, () => rule(rng, ipLists, services)),
    // Index 10+ sorts before 2 as a string: make sure ids order, not indices, decides.
    egress: Array.from({ length: rng.int(0, rng.chance(0.1) ? 12 : 3) }, () =>
      rule(rng, ipLists, services),
    ),
  }));
  return { workloads, ipLists, services, policies };
}

/** One input to an incremental consumer: an upsert (`value`) or a delete (no `value`). */
export type StateChange =
  | { kind: 'workloads'; name: string; value?: Workload }
  | { kind: 'ipLists'; name: string; value?: IpList }
  | { kind: 'services'; name: string; value?: Service }
  | { kind: 'policies'; name: string; value?: Policy };

/** `state` with one change applied (a new object is appended, an upsert replaces in place). */
export function applyChange(state: PolicyState, change: StateChange): PolicyState {
  const items = state[change.kind] as Array<{ name: string }>;
  const at = items.findIndex((i) => i.name === change.name);
  const next = [...items];
  if (!change.value) {
    if (at >= 0) next.splice(at, 1);
  } else if (at >= 0) next[at] = change.value;
  else next.push(change.value);
  return { ...state, [change.kind]: next };
}

/**
 * A random change to `state`: new, edited and deleted objects of every kind, names from
 * small pools so that objects come back. Some are invalid on purpose (a delete of an IP
 * list or service still in use, now and then a bad address); `validateState` of the result
 * says which.
 */
export function randomChange(rng: Rng, state: PolicyState): StateChange {
  const kind = rng.pick([
    'workloads',
    'workloads',
    'workloads',
    'ipLists',
    'services',
    'policies',
    'policies',
  ] as const);
  const name = rng.pick(
    {
      workloads: ['w0', 'w1', 'w2', 'w3', 'w4', 'w5'],
      ipLists: ['l0', 'l1', 'l2'],
      services: ['s0', 's1', 's2'],
      policies: ['p0', 'p1', 'p2', 'p3'],
    }[kind],
  );
  if (rng.chance(0.15)) return { kind, name };
  switch (kind) {
    case 'workloads': {
      const old = state.workloads.find((w) => w.name === name);
      const fresh = (): string[] => [
        ...new Set(
          Array.from({ length: rng.int(1, 3) }, () => address(rng, rng.chance(0.6) ? 4 : 6)),
        ),
      ];
      const value: Workload = old
        ? {
            ...old,
            labels: rng.chance(0.6) ? labels(rng) : old.labels,
            addresses: rng.chance(0.4) ? fresh() : old.addresses,
            mode: rng.chance(0.3)
              ? {
                  ingress: rng.pick(['monitor', 'enforce'] as const),
                  egress: rng.pick(['monitor', 'enforce'] as const),
                }
              : old.mode,
          }
        : {
            name,
            addresses: fresh(),
            labels: labels(rng),
            mode: { ingress: 'enforce', egress: 'monitor' },
          };
      if (rng.chance(0.03)) value.addresses = ['10.0.0.256'];
      return { kind, name, value };
    }
    case 'ipLists': {
      const family = rng.chance(0.6) ? 4 : 6;
      const cidrs = Array.from({ length: rng.int(1, 2) }, () => cidr(rng, family));
      const value: IpList = rng.chance(0.5)
        ? { name, cidrs, except: [inside(rng, cidrs[0]!)] }
        : { name, cidrs };
      return { kind, name, value };
    }
    case 'services':
      return {
        kind,
        name,
        value: { name, ports: Array.from({ length: rng.int(1, 2) }, () => portSpec(rng)) },
      };
    case 'policies': {
      const rules = (n: number) =>
        Array.from({ length: rng.int(0, n) }, () => rule(rng, state.ipLists, state.services));
      return {
        kind,
        name,
        value: { name, scope: selector(rng), ingress: rules(3), egress: rules(3) },
      };
    }
  }
}

// The compiler's contract, checked on random small states: looking a connection up in the
// compiled entries (what the dataplane does) gives the same verdict and deciding rule as
// reading the model directly. Universes are tiny so that ranges, ports and labels collide.

import type { Entry, RuleSet } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import { compile, hashRuleSet } from './compile.js';
import { evaluate, evaluatePolicy } from './evaluate.js';
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
import { validateState } from './validate.js';

/** mulberry32: small, seedable, good enough to spread test cases. */
function prng(seed: number) {
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
type Rng = ReturnType<typeof prng>;

const V4_BASE = parseAddress('10.0.0.0')!.value;
const V6_BASE = parseAddress('fd00::')!.value;
const PORT_LO = 20;
const PORT_HI = 30;

function address(rng: Rng, family: 4 | 6): string {
  // Non-canonical spellings must resolve like canonical ones.
  if (family === 6 && rng.chance(0.1)) return `FD00:0:0:0:0:0:0:${rng.int(0, 31).toString(16)}`;
  return formatAddress(family, (family === 4 ? V4_BASE : V6_BASE) + BigInt(rng.int(0, 31)));
}

/** An aligned CIDR inside the 32-address universe (or, rarely, everything). */
function cidr(rng: Rng, family: 4 | 6): string {
  if (rng.chance(0.08)) return family === 4 ? '0.0.0.0/0' : '::/0';
  const bits = family === 4 ? 32 : 128;
  const size = rng.int(0, 5); // host bits: /32../27 or /128../123
  const offset = (rng.int(0, 31) >> size) << size;
  const base = (family === 4 ? V4_BASE : V6_BASE) + BigInt(offset);
  return `${formatAddress(family, base)}/${bits - size}`;
}

/** A CIDR inside `outer`, so that it is a valid exception. */
function inside(rng: Rng, outer: string): string {
  const [text, len] = outer.split('/') as [string, string];
  const parsed = parseAddress(text)!;
  const bits = parsed.family === 4 ? 32 : 128;
  const outerHost = bits - Number(len);
  const host = rng.int(0, Math.min(outerHost, 5));
  const span = outerHost >= 6 ? 32 : 2 ** outerHost;
  const offset = (rng.int(0, span - 1) >> host) << host;
  return `${formatAddress(parsed.family, parsed.value + BigInt(offset))}/${bits - host}`;
}

const KEYS = ['app', 'role', 'env'];
const VALUES = ['a', 'b', 'c'];

function labels(rng: Rng): Labels {
  const out: Labels = {};
  for (const key of KEYS) if (rng.chance(0.6)) out[key] = rng.pick(VALUES);
  return out;
}

function selector(rng: Rng): Selector {
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

function portSpec(rng: Rng): PortSpec {
  const protocol = rng.pick<Protocol>(['tcp', 'tcp', 'udp', 'sctp', 'icmp', 'icmpv6', 'any']);
  if (!['tcp', 'udp', 'sctp'].includes(protocol) || rng.chance(0.2)) return { protocol };
  // Now and then a range that touches the ends of the port space.
  if (rng.chance(0.05)) return { protocol, port: 1, endPort: rng.int(PORT_LO, PORT_HI) };
  if (rng.chance(0.05)) return { protocol, port: rng.int(PORT_LO, PORT_HI), endPort: 65535 };
  const port = rng.int(PORT_LO, PORT_HI);
  return rng.chance(0.5) ? { protocol, port } : { protocol, port, endPort: rng.int(port, PORT_HI) };
}

function peer(rng: Rng, ipLists: IpList[]): Peer {
  const kind = rng.int(0, 2);
  if (kind === 0) return { selector: selector(rng) };
  if (kind === 1 && ipLists.length > 0) return { ipList: rng.pick(ipLists).name };
  const c = cidr(rng, rng.chance(0.6) ? 4 : 6);
  return rng.chance(0.4) ? { cidr: c, except: [inside(rng, c)] } : { cidr: c };
}

function rule(rng: Rng, ipLists: IpList[], services: Service[]): PolicyRule {
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

function randomState(rng: Rng): PolicyState {
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

const PROTOCOL_NUMBERS = [6, 17, 132, 1, 58, 0, 47];

function step(text: string, delta: bigint): string | undefined {
  const a = parseAddress(text)!;
  const value = a.value + delta;
  const max = (1n << (a.family === 4 ? 32n : 128n)) - 1n;
  return value < 0n || value > max ? undefined : formatAddress(a.family, value);
}

interface Probe {
  direction: 'ingress' | 'egress';
  peer: string;
  protocol: number;
  port?: number;
}

/** Random probes plus every entry's edges and their neighbours, where off-by-ones live. */
function probes(rng: Rng, ruleSet: RuleSet, count: number): Probe[] {
  const out: Probe[] = [];
  for (let i = 0; i < count; i++) {
    const family = rng.chance(0.55) ? 4 : 6;
    const base = family === 4 ? V4_BASE : V6_BASE;
    const value = rng.chance(0.1) ? BigInt(rng.int(0, 2 ** 31)) : base + BigInt(rng.int(0, 34));
    const protocol = rng.pick(PROTOCOL_NUMBERS);
    out.push({
      direction: rng.chance(0.5) ? 'ingress' : 'egress',
      peer: formatAddress(family, value),
      protocol,
      port: rng.chance(0.1)
        ? undefined
        : rng.pick([0, 1, 65535, ...Array.from({ length: 13 }, (_, k) => PORT_LO - 1 + k)]),
    });
  }
  for (const e of ruleSet.entries) {
    const direction = e.direction === 1 ? 'ingress' : 'egress';
    for (const peer of [e.addrFrom, e.addrTo, step(e.addrFrom, -1n), step(e.addrTo, 1n)]) {
      if (peer === undefined) continue;
      for (const port of [e.portFrom, e.portTo, e.portFrom - 1, e.portTo + 1].filter(
        (p) => p >= 0 && p <= 65535,
      )) {
        out.push({ direction, peer, protocol: e.protocol, port });
      }
      out.push({ direction, peer, protocol: rng.pick(PROTOCOL_NUMBERS), port: e.portFrom });
    }
  }
  return out;
}

function addressValue(text: string): bigint {
  return parseAddress(text)!.value;
}

/** For each (direction, family, protocol) no two entries overlap; rule refs are sound. */
function checkStructure(ruleSet: RuleSet): void {
  const groups = new Map<string, Entry[]>();
  for (const e of ruleSet.entries) {
    const rule = ruleSet.rules[e.rule];
    expect(rule, `entry refers to rule ${e.rule}`).toBeDefined();
    expect(rule!.direction).toBe(e.direction);
    const family = parseAddress(e.addrFrom)!.family;
    expect(parseAddress(e.addrTo)!.family).toBe(family);
    expect(addressValue(e.addrFrom) <= addressValue(e.addrTo)).toBe(true);
    if ([6, 17, 132].includes(e.protocol)) expect(e.portFrom).toBeLessThanOrEqual(e.portTo);
    else expect([e.portFrom, e.portTo]).toEqual([0, 0]);
    const key = `${e.direction}/${family}/${e.protocol}`;
    groups.set(key, [...(groups.get(key) ?? []), e]);
  }
  for (const [key, group] of groups) {
    const entries = group.map((e) => ({
      e,
      from: addressValue(e.addrFrom),
      to: addressValue(e.addrTo),
    }));
    for (let i = 0; i < entries.length; i++) {
      for (let j = i + 1; j < entries.length; j++) {
        const a = entries[i]!;
        const b = entries[j]!;
        const addrOverlap = a.from <= b.to && b.from <= a.to;
        const portOverlap = a.e.portFrom <= b.e.portTo && b.e.portFrom <= a.e.portTo;
        if (addrOverlap && portOverlap)
          expect.fail(`overlap in ${key}: ${JSON.stringify([a.e, b.e])}`);
        // Merged: no two cells with the same rule that could have been one entry.
        const sameAddrs = a.from === b.from && a.to === b.to;
        const samePorts = a.e.portFrom === b.e.portFrom && a.e.portTo === b.e.portTo;
        const portsTouch = a.e.portTo + 1 === b.e.portFrom || b.e.portTo + 1 === a.e.portFrom;
        const addrsTouch = a.to + 1n === b.from || b.to + 1n === a.from;
        if (a.e.rule === b.e.rule && ((sameAddrs && portsTouch) || (samePorts && addrsTouch)))
          expect.fail(`unmerged in ${key}: ${JSON.stringify([a.e, b.e])}`);
      }
    }
  }
  const ids = ruleSet.rules.map((r) => r.id);
  expect(ids).toEqual([...ids].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)));
  expect(ruleSet.hash).toBe(hashRuleSet(ruleSet));
}

function shuffled(rng: Rng, state: PolicyState): PolicyState {
  return {
    workloads: rng
      .shuffle(state.workloads)
      .map((w) => ({ ...w, addresses: rng.shuffle(w.addresses) })),
    ipLists: rng.shuffle(state.ipLists).map((l) => ({ ...l, cidrs: rng.shuffle(l.cidrs) })),
    services: rng.shuffle(state.services).map((s) => ({ ...s, ports: rng.shuffle(s.ports) })),
    policies: rng.shuffle(state.policies).map((p) => ({
      ...p,
      ingress: p.ingress?.map((r) => ({
        ...r,
        peers: rng.shuffle(r.peers),
        services: r.services && rng.shuffle(r.services),
      })),
      egress: p.egress?.map((r) => ({
        ...r,
        peers: rng.shuffle(r.peers),
        services: r.services && rng.shuffle(r.services),
      })),
    })),
  };
}

const encoded = (ruleSets: RuleSet[]) =>
  ruleSets.map((r) => Buffer.from(RuleSetCodec.encode(r).finish()).toString('hex'));

import { RuleSet as RuleSetCodec } from '@bulkhead/proto';

describe('compiled entries agree with the model', () => {
  // For a deeper run: POLICY_PROPERTY_STATES=5000 POLICY_PROPERTY_SEED=100000 npx vitest run property
  const STATES = Number(process.env.POLICY_PROPERTY_STATES ?? 150);
  const FIRST_SEED = Number(process.env.POLICY_PROPERTY_SEED ?? 1);

  it(
    `on ${STATES} random states`,
    () => {
      let compared = 0;
      let allowed = 0;
      let denied = 0;
      let decidedByRule = 0;
      for (let seed = FIRST_SEED; seed < FIRST_SEED + STATES; seed++) {
        const rng = prng(seed);
        const state = randomState(rng);
        expect(validateState(state), `seed ${seed}`).toEqual([]);
        const { ruleSets, diagnostics } = compile(state, seed);
        expect(diagnostics).toEqual([]);
        expect(ruleSets.map((r) => r.workloadId)).toEqual(
          state.workloads.map((w) => w.name).sort(),
        );
        for (const ruleSet of ruleSets) {
          checkStructure(ruleSet);
          for (const probe of probes(rng, ruleSet, 150)) {
            const args = [probe.direction, probe.peer, probe.protocol, probe.port] as const;
            const fromModel = evaluatePolicy(state, ruleSet.workloadId, ...args);
            const fromEntries = evaluate(ruleSet, ...args);
            if (JSON.stringify(fromEntries) !== JSON.stringify(fromModel)) {
              expect.fail(
                `seed ${seed} workload ${ruleSet.workloadId} probe ${JSON.stringify(probe)}: ` +
                  `entries say ${JSON.stringify(fromEntries)}, model says ${JSON.stringify(fromModel)}\n` +
                  JSON.stringify(state),
              );
            }
            compared++;
            if (fromModel.action === 'allow') allowed++;
            else denied++;
            if (fromModel.ruleId) decidedByRule++;
          }
        }
        // Same input in any order compiles to the same bytes.
        const again = compile(shuffled(rng, state), seed);
        expect(encoded(again.ruleSets)).toEqual(encoded(ruleSets));
      }
      // Guard against a generator that only ever produces trivial cases.
      expect(compared).toBeGreaterThan(50_000);
      expect(allowed).toBeGreaterThan(compared / 20);
      expect(denied).toBeGreaterThan(compared / 20);
      expect(decidedByRule - allowed).toBeGreaterThan(compared / 50); // explicit denies
    },
    Math.max(120_000, STATES * 500),
  );

  it('notices a corrupted RuleSet (the check has teeth)', () => {
    let caught = 0;
    let tried = 0;
    for (let seed = 1000; seed < 1100; seed++) {
      const rng = prng(seed);
      const state = randomState(rng);
      for (const ruleSet of compile(state, 1).ruleSets) {
        const victim = ruleSet.entries.findIndex((e) =>
          ruleSet.rules.some((r, i) => i !== e.rule && r.direction === e.direction),
        );
        if (victim < 0) continue;
        const entry = ruleSet.entries[victim]!;
        const other = ruleSet.rules.findIndex(
          (r, i) => i !== entry.rule && r.direction === entry.direction,
        );
        const corrupted = {
          ...ruleSet,
          entries: ruleSet.entries.map((e, i) => (i === victim ? { ...e, rule: other } : e)),
        };
        tried++;
        const found = probes(rng, corrupted, 0).some((probe) => {
          const args = [probe.direction, probe.peer, probe.protocol, probe.port] as const;
          return (
            JSON.stringify(evaluate(corrupted, ...args)) !==
            JSON.stringify(evaluatePolicy(state, ruleSet.workloadId, ...args))
          );
        });
        if (found) caught++;
      }
    }
    expect(tried).toBeGreaterThan(20);
    expect(caught).toBe(tried);
  });
});

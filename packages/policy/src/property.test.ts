// The compiler's contract, checked on random small states: looking a connection up in the
// compiled entries (what the dataplane does) gives the same verdict and deciding rule as
// reading the model directly. Universes are tiny so that ranges, ports and labels collide.

import type { Entry, RuleSet } from '@bulkhead/proto';
import { describe, expect, it } from 'vitest';
import { compile, hashRuleSet } from './compile.js';
import { evaluate, evaluatePolicy } from './evaluate.js';
import { formatAddress, parseAddress } from './ip.js';
import type { PolicyState } from './model.js';
import { PORT_LO, prng, type Rng, randomState, V4_BASE, V6_BASE } from './random.test-util.js';
import { validateState } from './validate-state.js';

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

// The calculation graph's contract on random small states: the group form decides exactly
// as the model (`evaluatePolicy`) and as the compiled cells (`evaluate` on `compile`); a
// random sequence of changes fed one by one gives, after every step, what a cold `load` of
// the same state gives, and so does another valid order of the same changes; the deltas
// applied to the previous snapshot give the next one.

import { describe, expect, it } from 'vitest';
import { compile } from '../compile.js';
import { evaluate, evaluatePolicy } from '../evaluate.js';
import { formatAddress } from '../ip.js';
import type { PolicyState } from '../model.js';
import {
  applyChange,
  PORT_LO,
  prng,
  type Rng,
  randomChange,
  randomState,
  type StateChange,
  V4_BASE,
  V6_BASE,
} from '../random.test-util.js';
import { validateState } from '../validate-state.js';
import { type CalcResult, type Calculator, createCalculator } from './calculator.js';
import { applyDelta, type CalcSnapshot } from './delta.js';
import { evaluateGroups } from './evaluate.js';
import { hashGroupRuleSet, rangeKey } from './rules.js';

const STATES = Number(process.env.POLICY_PROPERTY_STATES ?? 150);
const FIRST_SEED = Number(process.env.POLICY_PROPERTY_SEED ?? 1);
const PROTOCOL_NUMBERS = [6, 17, 132, 1, 58, 0, 47];

function probe(rng: Rng) {
  const family = rng.chance(0.55) ? 4 : 6;
  const base = family === 4 ? V4_BASE : V6_BASE;
  const value = rng.chance(0.1) ? BigInt(rng.int(0, 2 ** 31)) : base + BigInt(rng.int(0, 34));
  return [
    rng.chance(0.5) ? 'ingress' : 'egress',
    formatAddress(family, value),
    rng.pick(PROTOCOL_NUMBERS),
    rng.chance(0.1)
      ? undefined
      : rng.pick([0, 1, 65535, ...Array.from({ length: 13 }, (_, k) => PORT_LO - 1 + k)]),
  ] as const;
}

/** A snapshot as comparable text (bigints do not JSON; map order does not count). */
function canon(s: CalcSnapshot): string {
  const sorted = <V>(m: Map<string, V>) => [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify({
    ruleSets: sorted(s.ruleSets),
    groups: sorted(s.groups).map(([id, ranges]) => [id, ranges.map(rangeKey)]),
  });
}

function cold(state: PolicyState): CalcSnapshot {
  const calc = createCalculator();
  expect(calc.load(state).diagnostics).toEqual([]);
  return calc.snapshot();
}

function feed(calc: Calculator, change: StateChange): CalcResult {
  switch (change.kind) {
    case 'workloads':
      return change.value ? calc.upsertWorkload(change.value) : calc.deleteWorkload(change.name);
    case 'ipLists':
      return change.value ? calc.upsertIpList(change.value) : calc.deleteIpList(change.name);
    case 'services':
      return change.value ? calc.upsertService(change.value) : calc.deleteService(change.name);
    case 'policies':
      return change.value ? calc.upsertPolicy(change.value) : calc.deletePolicy(change.name);
  }
}

describe('group form decides as the model and the compiler', () => {
  it(`on ${STATES} random states`, () => {
    let compared = 0;
    let allowed = 0;
    let denies = 0;
    for (let seed = FIRST_SEED; seed < FIRST_SEED + STATES; seed++) {
      const rng = prng(seed);
      const state = randomState(rng);
      const calc = createCalculator();
      expect(calc.load(state).diagnostics).toEqual([]);
      const compiled = compile(state, 1).ruleSets;
      for (const ruleSet of compiled) {
        const groupSet = calc.ruleSet(ruleSet.workloadId)!;
        expect(groupSet.hash).toBe(hashGroupRuleSet(groupSet));
        for (let i = 0; i < 150; i++) {
          const args = probe(rng);
          const model = evaluatePolicy(state, ruleSet.workloadId, ...args);
          const groups = evaluateGroups(groupSet, calc.group, ...args);
          const cells = evaluate(ruleSet, ...args);
          if (
            JSON.stringify(groups) !== JSON.stringify(model) ||
            JSON.stringify(cells) !== JSON.stringify(model)
          ) {
            expect.fail(
              `seed ${seed} ${ruleSet.workloadId} ${JSON.stringify(args)}: model ${JSON.stringify(model)}, ` +
                `groups ${JSON.stringify(groups)}, cells ${JSON.stringify(cells)}\n${JSON.stringify(state)}`,
            );
          }
          compared++;
          if (model.action === 'allow') allowed++;
          else if (model.ruleId) denies++;
        }
      }
    }
    expect(compared).toBeGreaterThan(50_000);
    expect(allowed).toBeGreaterThan(compared / 20);
    expect(denies).toBeGreaterThan(compared / 50);
  }, 120_000);

  it('notices a group rule set with a wrong group (the check has teeth)', () => {
    let tried = 0;
    let caught = 0;
    for (let seed = 2000; seed < 2060; seed++) {
      const rng = prng(seed);
      const state = randomState(rng);
      const calc = createCalculator();
      calc.load(state);
      const ids = [...calc.snapshot().groups.keys()];
      for (const w of state.workloads) {
        const ruleSet = calc.ruleSet(w.name)!;
        const victim = ruleSet.rules.findIndex((r) => ids.some((id) => !r.groups.includes(id)));
        if (victim < 0) continue;
        const rule = ruleSet.rules[victim]!;
        const other = ids.find((id) => !rule.groups.includes(id))!;
        const corrupted = {
          ...ruleSet,
          rules: ruleSet.rules.map((r, i) => (i === victim ? { ...r, groups: [other] } : r)),
        };
        tried++;
        for (let i = 0; i < 400; i++) {
          const args = probe(rng);
          if (
            JSON.stringify(evaluateGroups(corrupted, calc.group, ...args)) !==
            JSON.stringify(evaluatePolicy(state, w.name, ...args))
          ) {
            caught++;
            break;
          }
        }
      }
    }
    expect(tried).toBeGreaterThan(20);
    // Some swaps are harmless (the other group holds the same addresses, or a deny hides it).
    expect(caught).toBeGreaterThan(tried / 2);
  });
});

describe('incremental changes agree with a cold load', () => {
  const SEQUENCES = Math.max(10, Math.round(STATES / 3));
  const STEPS = 40;

  it(`on ${SEQUENCES} random sequences of ${STEPS} changes`, () => {
    let applied = 0;
    let refused = 0;
    let reordered = 0;
    let groupUpdates = 0;
    for (let seed = FIRST_SEED; seed < FIRST_SEED + SEQUENCES; seed++) {
      const rng = prng(seed * 7919);
      const start = randomState(rng);
      const calc = createCalculator();
      calc.load(start);
      let state = start;
      let snapshot = calc.snapshot();
      const changes: StateChange[] = [];
      for (let step = 0; step < STEPS; step++) {
        const change = randomChange(rng, state);
        const next = applyChange(state, change);
        const valid = validateState(next).length === 0;
        const { delta, diagnostics } = feed(calc, change);
        const where = `seed ${seed} step ${step} ${JSON.stringify(change)}`;
        expect(diagnostics.length > 0, where).toBe(!valid);
        if (!valid) {
          expect(delta, where).toEqual({ groups: [], workloads: [] });
          expect(canon(calc.snapshot()), where).toBe(canon(snapshot));
          refused++;
          continue;
        }
        const now = calc.snapshot();
        expect(canon(now), where).toBe(canon(cold(next)));
        expect(canon(applyDelta(snapshot, delta)), where).toBe(canon(now));
        for (const g of delta.groups) {
          for (const w of g.workloads)
            expect(now.ruleSets.get(w)!.rules.some((r) => r.groups.includes(g.id))).toBe(true);
        }
        groupUpdates += delta.groups.filter((g) => !g.created && !g.deleted).length;
        snapshot = now;
        state = next;
        changes.push(change);
        applied++;
      }
      // Replay the accepted changes in another order that keeps each object's own order.
      const streams = new Map<string, StateChange[]>();
      for (const c of changes)
        streams.set(`${c.kind}/${c.name}`, [...(streams.get(`${c.kind}/${c.name}`) ?? []), c]);
      for (let attempt = 0; attempt < 5; attempt++) {
        const other = createCalculator();
        other.load(start);
        let replay = other.snapshot();
        const heads = [...streams.values()].map((s) => [...s]);
        let stuck = false;
        while (heads.some((h) => h.length > 0) && !stuck) {
          stuck = true;
          for (const h of rng.shuffle(heads.filter((x) => x.length > 0))) {
            const result = feed(other, h[0]!);
            if (result.diagnostics.length > 0) continue;
            replay = applyDelta(replay, result.delta);
            h.shift();
            stuck = false;
            break;
          }
        }
        if (stuck) continue;
        expect(canon(other.snapshot()), `seed ${seed} replay`).toBe(canon(calc.snapshot()));
        expect(canon(replay)).toBe(canon(calc.snapshot()));
        reordered++;
        break;
      }
    }
    expect(applied).toBeGreaterThan(SEQUENCES * STEPS * 0.6);
    expect(refused).toBeGreaterThan(0);
    expect(groupUpdates).toBeGreaterThan(SEQUENCES);
    expect(reordered).toBeGreaterThan(SEQUENCES * 0.8);
  }, 120_000);
});

// impact() against its form before issue 8's rewrite (impact.reference.test-util.ts): the same
// report, field for field, on random states, changes and observed rows, including what the
// rewrite keys differently: spellings of one address, copies from one end and from several,
// ties between equal times written differently, odd protocols and ports, rows that are no
// address (skipped with `skipUnparsable`, as the control plane filtered them before).

import { describe, expect, it } from 'vitest';
import { decideOn } from './calc/decide.js';
import { impact } from './impact.js';
import { referenceImpact } from './impact.reference.test-util.js';
import type { ObservedFlow } from './impact-flows.js';
import { formatAddress, parseAddress } from './ip.js';
import type { PolicyState } from './model.js';
import {
  applyChange,
  PORT_LO,
  prng,
  type Rng,
  randomChange,
  randomState,
  V4_BASE,
  V6_BASE,
} from './random.test-util.js';
import { validateState } from './validate-state.js';

const STATES = Number(process.env.POLICY_PROPERTY_STATES ?? 150);
const PROTOCOLS = [6, 6, 17, 132, 1, 58, 0, 47, 300];
const T = Date.parse('2026-11-30T00:00:00.000Z');

/** Another spelling of an IPv6 address: every group written out, upper case. */
function respell(text: string): string {
  const a = parseAddress(text);
  if (!a || a.family === 4) return text;
  return a.value.toString(16).padStart(32, '0').toUpperCase().match(/.{4}/g)!.join(':');
}

function address(rng: Rng, state: PolicyState): string {
  const own = state.workloads.flatMap((w) => w.addresses);
  if (own.length > 0 && rng.chance(0.6)) {
    const text = rng.pick(own);
    return rng.chance(0.3) ? respell(text) : text;
  }
  if (rng.chance(0.05)) return rng.pick(['not-an-address', '', '10.0.0.010']);
  const family = rng.chance(0.55) ? 4 : 6;
  return formatAddress(family, (family === 4 ? V4_BASE : V6_BASE) + BigInt(rng.int(0, 34)));
}

/** Rows as the flow store keeps them: few distinct flows, so most have several copies. */
function rows(rng: Rng, state: PolicyState, n: number): ObservedFlow[] {
  const seen = Array.from({ length: 4 }, (_, i) =>
    rng.pick([T + i * 1000, new Date(T + i * 1000).toISOString()]),
  );
  return Array.from({ length: n }, () => {
    const flow: ObservedFlow = {
      src: address(rng, state),
      dst: address(rng, state),
      protocol: rng.pick(PROTOCOLS),
      port: rng.pick([0, 1, 65535, 70000, PORT_LO, PORT_LO + 1, PORT_LO + 5]),
    };
    if (rng.chance(0.8)) flow.connections = rng.int(1, 5);
    if (rng.chance(0.8)) flow.lastSeen = rng.pick(seen);
    if (rng.chance(0.7)) {
      flow.workload = rng.pick(state.workloads).name;
      if (rng.chance(0.9)) flow.direction = rng.chance(0.5) ? 'ingress' : 'egress';
    }
    return flow;
  });
}

const valid = (f: ObservedFlow) =>
  parseAddress(f.src) !== undefined && parseAddress(f.dst) !== undefined;

describe('impact as before the rewrite', () => {
  it(`reports what the reference reports, on ${STATES} random changes`, () => {
    let groups = 0;
    let compared = 0;
    for (let seed = 1; compared < STATES; seed++) {
      const rng = prng(seed);
      const before = randomState(rng);
      let after = before;
      for (let i = rng.int(1, 3); i > 0; i--) after = applyChange(after, randomChange(rng, after));
      if (validateState(after).length > 0) continue;
      const observed = rows(rng, before, 80);
      const decide = { before: decideOn(before), after: decideOn(after) };
      const expected = referenceImpact(before, after, observed.filter(valid), { decide });
      // Stored rows: the ones that are no address are left out, one at a time from an iterator.
      expect(
        impact(before, after, observed.values(), { decide, skipUnparsable: true }),
        `seed ${seed}`,
      ).toEqual(expected);
      // Given as an array, with the model's decisions (the default, which checks the probe) on
      // a few.
      if (compared % 10 === 0) {
        const clean = observed.filter((f) => valid(f) && f.protocol < 256 && f.port! < 65536);
        expect(impact(before, after, clean), `seed ${seed}`).toEqual(
          referenceImpact(before, after, clean),
        );
      }
      compared++;
      groups += expected.groups.length;
    }
    // The reports are not all empty: the comparison covers changed flows.
    expect(groups).toBeGreaterThan(STATES);
  }, 120_000);

  it('refuses a row that is no address unless told to skip it, as before', () => {
    const state = randomState(prng(7));
    const flows = [{ src: 'not-an-address', dst: '10.0.0.1', protocol: 6, port: 80 }];
    expect(() => impact(state, state, flows)).toThrow(/not an IP address/);
    expect(() => referenceImpact(state, state, flows)).toThrow(/not an IP address/);
    expect(impact(state, state, flows, { skipUnparsable: true }).summary.flows).toBe(0);
  });
});

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFakeNft } from '@bulkhead/nftables/testing';
import { Mode, type PackedRanges, type PolicyUpdate } from '@bulkhead/proto';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDataplane, type Dataplane } from './dataplane.js';
import {
  chunked,
  currentPolicy,
  normalTable,
  prng,
  randomCalculator,
  randomChange,
  updateFor,
} from './delta.test-util.js';
import {
  FIXTURE_GROUPS,
  fixtureChain,
  fixtureFailsafe,
  fixturePolicy,
  fixtureUpdate,
  fullUpdate,
} from './fixture.test-util.js';
import { planDelta, planFull } from './model.js';
import { groupSet, renderModel } from './render.js';
import { mergeChunks, planUpdate } from './update.js';

const logger = pino({ level: 'silent' });
const FLOWS = { size: 65536, timeoutSeconds: 3600 };

describe('update apply', () => {
  let stateDir: string;
  let planes: Dataplane[];
  /** A dataplane on the fake kernel whose background state writes end before the dir goes. */
  const open = (kernel: ReturnType<typeof createFakeNft>): Dataplane => {
    const dp = createDataplane({ driver: kernel, stateDir, failsafe: fixtureFailsafe, logger });
    planes.push(dp);
    return dp;
  };
  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-delta-'));
    planes = [];
  });
  afterEach(async () => {
    await Promise.all(planes.map((dp) => dp.persisted()));
    await rm(stateDir, { recursive: true, force: true });
  });

  it.each([1, 2, 3, 4, 5, 6, 7, 8])(
    'the delta path reaches the table a fresh full load of the final state gives (seed %i)',
    async (seed) => {
      const rand = prng(seed);
      const calc = randomCalculator(rand);
      const kernel = createFakeNft();
      const dp = open(kernel);
      const first = await dp.apply(fullUpdate(currentPolicy(calc), 'h0', 1));
      expect(first.error).toBeUndefined();
      let hash = 'h0';
      const paths: (string | undefined)[] = [];
      for (let step = 1; step <= 30; step++) {
        const update = updateFor(randomChange(rand, calc), calc, hash, `h${step}`, step + 1);
        if (!update) continue;
        // Now and then in chunks, as a large update would come.
        const whole = rand() < 0.3 ? mergeChunks(chunked(update)) : update;
        const result = await dp.apply(whole);
        expect(result.error).toBeUndefined();
        paths.push(result.path);
        hash = update.hash;
        const fresh = createFakeNft();
        await fresh.apply(planFull(renderModel(currentPolicy(calc), fixtureFailsafe)));
        expect(normalTable(kernel.dump())).toEqual(normalTable(fresh.dump()));
      }
      expect(paths.length).toBeGreaterThan(5);
      expect(paths.every((p) => p === 'delta')).toBe(true);
      expect(dp.applied?.hash).toBe(hash);
    },
    // 30 changes, each checked against a fresh full load comparing whole dumps (rule chains hold
    // two flow generations): seconds on a loaded 2-core box.
    30_000,
  );

  it('the histories exercise group-only updates, created and deleted groups', () => {
    const seen = { groupOnly: 0, created: 0, deleted: 0, changed: 0 };
    for (let seed = 1; seed <= 8; seed++) {
      const rand = prng(seed);
      const calc = randomCalculator(rand);
      for (let step = 1; step <= 30; step++) {
        const u = updateFor(randomChange(rand, calc), calc, 'a', 'b', 1);
        if (!u) continue;
        if (!u.ruleSet) seen.groupOnly++;
        for (const g of u.groups) {
          if (g.created) seen.created++;
          else if (g.deleted) seen.deleted++;
          else seen.changed++;
        }
      }
    }
    for (const n of Object.values(seen)) expect(n).toBeGreaterThan(3);
  });

  it("a group change writes only that group's elements, nothing else", () => {
    const current = held();
    const update = delta8({
      groups: [
        {
          id: 'sel:web',
          created: false,
          deleted: false,
          removed: [{ from: '10.0.1.5', to: '10.0.1.5' }],
          added: [{ from: '10.0.1.4', to: '10.0.1.5' }],
        },
      ],
    });
    const plan = planUpdate(current, update, fixtureFailsafe, FLOWS);
    const tx = planDelta(current.model, plan.next, undefined, plan.patches);
    const name = groupSet('sel:web', 4);
    const where = { family: 'inet', table: 'bulkhead', name };
    const host = { concat: ['10.0.1.5', 'ipv4'] };
    expect(tx?.commands).toEqual([
      { delete: { element: { ...where, elem: [host] } } },
      {
        add: {
          element: { ...where, elem: [{ concat: [{ range: ['10.0.1.4', '10.0.1.5'] }, 'ipv4'] }] },
        },
      },
    ]);
    // Nothing written to the shared maps until commit, and rollback undoes it.
    const elems = plan.next.sets.get(name)!.elems!;
    const key = JSON.stringify(host);
    expect(elems.has(key)).toBe(true);
    plan.commit();
    expect(elems.has(key)).toBe(false);
    plan.rollback();
    expect(elems.has(key)).toBe(true);
    expect(planDelta(current.model, renderModel(fixturePolicy(), fixtureFailsafe))?.size).toBe(0);
  });

  it('a group change in the packed form writes what the text form writes', () => {
    const v4 = (...pairs: [string, string][]) =>
      Buffer.from(pairs.flat().flatMap((a) => a.split('.').map(Number)));
    const text = g('sel:web', ['10.0.1.4'], ['10.0.1.5']);
    text.added = [{ from: '10.0.1.4', to: '10.0.1.5' }];
    const packed = {
      ...g('sel:web', [], []),
      packed: {
        addedV4: v4(['10.0.1.4', '10.0.1.5']),
        addedV6: Buffer.alloc(0),
        removedV4: v4(['10.0.1.5', '10.0.1.5']),
        removedV6: Buffer.alloc(0),
      },
    };
    const [fromText, fromPacked] = [text, packed].map((group) => {
      const current = held();
      const plan = planUpdate(current, delta8({ groups: [group] }), fixtureFailsafe, FLOWS);
      return planDelta(current.model, plan.next, undefined, plan.patches)?.commands;
    });
    expect(fromText).toHaveLength(2);
    expect(fromPacked).toEqual(fromText);
  });

  const packed = (p: Partial<PackedRanges>): PolicyUpdate['groups'][number] => ({
    ...g('sel:web', [], []),
    packed: {
      addedV4: Buffer.alloc(0),
      addedV6: Buffer.alloc(0),
      removedV4: Buffer.alloc(0),
      removedV6: Buffer.alloc(0),
      ...p,
    },
  });

  it.each([
    ['a delta on another base', { baseHash: 'other' }],
    ['packed bytes that are not whole ranges', { groups: [packed({ addedV4: Buffer.alloc(7) })] }],
    [
      'a packed range in the wrong order',
      { groups: [packed({ addedV4: Buffer.from([10, 9, 0, 2, 10, 9, 0, 1]) })] },
    ],
    [
      'a packed removed range that is absent',
      { groups: [packed({ removedV6: Buffer.alloc(32, 0xfd) })] },
    ],
    ['a removed range that is absent', { groups: [g('sel:web', [], ['10.9.9.9'])] }],
    ['an added range that is present', { groups: [g('sel:web', ['10.0.1.5'], [])] }],
    ['an update of a group not held', { groups: [g('list:nope', ['10.9.9.9'], [])] }],
    ['a created group already held', { groups: [{ ...g('sel:web', [], []), created: true }] }],
    ['a deleted group still named', { groups: [{ ...g('list:db', [], []), deleted: true }] }],
    [
      'a range of two families',
      { groups: [{ ...g('sel:web', [], []), added: [{ from: '10.0.0.1', to: 'fd00::1' }] }] },
    ],
    [
      'a range in the wrong order',
      { groups: [{ ...g('sel:web', [], []), added: [{ from: '10.9.0.2', to: '10.9.0.1' }] }] },
    ],
  ] as [string, Partial<PolicyUpdate>][])('refuses %s and changes nothing', (_, part) => {
    const current = held();
    const before = JSON.stringify(normalModel(current.model));
    expect(() => planUpdate(current, delta8(part), fixtureFailsafe, FLOWS)).toThrow(
      expect.objectContaining({ code: expect.stringMatching(/UPDATE_REFUSED|RULESET_INVALID/) }),
    );
    expect(JSON.stringify(normalModel(current.model))).toBe(before);
  });

  it('a redeclared flow set cannot be a delta; a full load replaces the table', () => {
    const small = renderModel(fixturePolicy(), fixtureFailsafe, { size: 16, timeoutSeconds: 60 });
    expect(planDelta(renderModel(fixturePolicy(), fixtureFailsafe), small)).toBeUndefined();
    expect(planFull(small).commands[1]).toEqual({
      delete: { table: { family: 'inet', name: 'bulkhead' } },
    });
  });

  it('keeps the counters of unchanged rules and every recorded flow across a revision', async () => {
    const kernel = createFakeNft();
    const dp = open(kernel);
    await dp.apply(fixtureUpdate(Mode.MODE_ENFORCE, 1));
    kernel.setCounter(`${fixtureChain(0)}_allowed`, 4, 400);
    const handle = (name: string) =>
      kernel
        .dump()
        .map((o) => o.set as { name: string; handle: number } | undefined)
        .find((s) => s?.name === name)?.handle;
    const flowSet = handle('flows_in4');
    const groupSetHandle = handle(groupSet('list:db', 4));
    const next = fixturePolicy(Mode.MODE_ENFORCE, 2);
    next.ruleSet.rules[3]!.action = next.ruleSet.rules[2]!.action; // a rule changes
    next.ruleSet.rules[0]!.services.push({ protocol: 17, portFrom: 53, portTo: 53 });
    const update = {
      ...fullUpdate(next, 'hash-2', 2),
      full: false,
      baseHash: 'hash-1',
      groups: [],
    };
    expect((await dp.apply(update)).path).toBe('delta');
    const counters = await kernel.list({
      list: { counters: { family: 'inet', table: 'bulkhead' } },
    });
    expect(
      counters
        .map((o) => o.counter)
        .find((c) => (c as { name: string }).name.startsWith(fixtureChain(0))),
    ).toMatchObject({ packets: 4, bytes: 400 });
    expect(handle('flows_in4')).toBe(flowSet);
    expect(handle(groupSet('list:db', 4))).toBe(groupSetHandle);
    expect(FIXTURE_GROUPS.size).toBe(4);
  });
});

/** The fixture as the applied state (what planUpdate starts a delta from). */
function held() {
  const p = planUpdate(undefined, fixtureUpdate(), fixtureFailsafe, FLOWS);
  p.commit();
  return { applied: p.applied, model: p.next };
}

/** A delta on the fixture's applied state (hash-7), to hash-8. */
function delta8(part: Partial<PolicyUpdate>): PolicyUpdate {
  return {
    baseHash: 'hash-7',
    hash: 'hash-8',
    revision: 8,
    full: false,
    last: true,
    ruleSet: undefined,
    groups: [],
    ...part,
  };
}

function g(id: string, added: string[], removed: string[]) {
  const r = (a: string) => ({ from: a, to: a });
  return { id, created: false, deleted: false, added: added.map(r), removed: removed.map(r) };
}

function normalModel(m: ReturnType<typeof renderModel>): unknown {
  return [...m.sets].map(([n, s]) => [n, s.decl, [...(s.elems?.keys() ?? [])].sort()]);
}

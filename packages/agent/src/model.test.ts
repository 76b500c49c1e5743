import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFakeNft } from '@bulkhead/nftables/testing';
import { Mode } from '@bulkhead/proto';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDataplane } from './dataplane.js';
import { normalTable, prng, randomRuleSet } from './delta.test-util.js';
import { fixtureChain, fixtureFailsafe, fixtureRuleSet } from './fixture.test-util.js';
import { planDelta, planFull } from './model.js';
import { renderModel, renderRuleSet } from './render.js';

const logger = pino({ level: 'silent' });

describe('delta apply', () => {
  let stateDir: string;
  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-delta-'));
  });
  afterEach(async () => {
    await rm(stateDir, { recursive: true, force: true });
  });

  it.each([1, 2, 3, 4, 5, 6])(
    'reaches the same table as a fresh full load over random revisions (seed %i)',
    async (seed) => {
      const rand = prng(seed);
      const kernel = createFakeNft();
      const dp = createDataplane({ driver: kernel, stateDir, failsafe: fixtureFailsafe, logger });
      const paths: (string | undefined)[] = [];
      for (let revision = 1; revision <= 25; revision++) {
        const rs = randomRuleSet(rand, revision);
        const result = await dp.apply(rs);
        expect(result.error).toBeUndefined();
        paths.push(result.path);
        const fresh = createFakeNft();
        await fresh.apply(renderRuleSet(rs, fixtureFailsafe));
        expect(normalTable(kernel.dump())).toEqual(normalTable(fresh.dump()));
      }
      // Only the first apply found no table of its own.
      expect(paths).toEqual(['full', ...Array(24).fill('delta')]);
    },
  );

  it('writes only what changed: one element moved, nothing else', () => {
    const before = fixtureRuleSet();
    const after = fixtureRuleSet();
    after.entries[0] = { ...after.entries[0]!, addrTo: '10.0.0.127' };
    const tx = planDelta(renderModel(before, fixtureFailsafe), renderModel(after, fixtureFailsafe));
    expect(tx?.commands).toEqual([
      {
        delete: {
          element: {
            family: 'inet',
            table: 'bulkhead',
            name: 'in4_ports',
            elem: [{ concat: [{ range: ['10.0.0.0', '10.0.0.255'] }, 6, { range: [80, 90] }] }],
          },
        },
      },
      {
        add: {
          element: {
            family: 'inet',
            table: 'bulkhead',
            name: 'in4_ports',
            elem: [
              [
                { concat: [{ range: ['10.0.0.0', '10.0.0.127'] }, 6, { range: [80, 90] }] },
                { jump: { target: fixtureChain(0) } },
              ],
            ],
          },
        },
      },
    ]);
    const same = planDelta(
      renderModel(before, fixtureFailsafe),
      renderModel(before, fixtureFailsafe),
    );
    expect(same?.size).toBe(0);
  });

  it('a redeclared flow set cannot be a delta; a full load replaces the table', () => {
    const rs = fixtureRuleSet();
    const small = renderModel(rs, fixtureFailsafe, { size: 16, timeoutSeconds: 60 });
    expect(planDelta(renderModel(rs, fixtureFailsafe), small)).toBeUndefined();
    expect(planFull(small).commands[1]).toEqual({
      delete: { table: { family: 'inet', name: 'bulkhead' } },
    });
  });

  it('keeps the counters of unchanged rules and every recorded flow across a revision', async () => {
    const kernel = createFakeNft();
    const dp = createDataplane({ driver: kernel, stateDir, failsafe: fixtureFailsafe, logger });
    await dp.apply(fixtureRuleSet(Mode.MODE_ENFORCE, 1));
    kernel.setCounter(`${fixtureChain(0)}_allowed`, 4, 400);
    const handle = (name: string) =>
      kernel
        .dump()
        .map((o) => o.set as { name: string; handle: number } | undefined)
        .find((s) => s?.name === name)?.handle;
    const flowSet = handle('flows_in4');
    const next = fixtureRuleSet(Mode.MODE_ENFORCE, 2);
    next.entries.push({ ...next.entries[0]!, addrFrom: '10.0.9.0', addrTo: '10.0.9.255' });
    expect((await dp.apply(next)).path).toBe('delta');
    const counters = await kernel.list({
      list: { counters: { family: 'inet', table: 'bulkhead' } },
    });
    expect(
      counters
        .map((o) => o.counter)
        .find((c) => (c as { name: string }).name.startsWith(fixtureChain(0))),
    ).toMatchObject({ packets: 4, bytes: 400 });
    expect(handle('flows_in4')).toBe(flowSet);
  });
});

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type NftCommand,
  type NftDriver,
  NftError,
  type NftObject,
  type Transaction,
} from '@bulkhead/nftables';
import { Direction, Mode, RuleSet, Verdict } from '@bulkhead/proto';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDataplane, type Dataplane, type DataplaneOptions } from './dataplane.js';
import { fixtureFailsafe, fixtureRuleSet } from './fixture.test-util.js';

/**
 * A kernel stand-in just big enough for the dataplane: it keeps the last applied batch
 * whole or not at all, answers `list chain` and `reset counters` from it, and can be told
 * to refuse the next batch.
 */
function kernelDouble() {
  let batch: NftCommand[] | undefined;
  const counters = new Map<string, { packets: number; bytes: number }>();
  const d = {
    refuseNext: false,
    applies: 0,
    get batch() {
      return batch;
    },
    count(name: string, packets: number, bytes: number) {
      counters.set(name, { packets, bytes });
    },
    driver: {
      backend: 'double',
      async apply(tx: Transaction) {
        if (d.refuseNext) {
          d.refuseNext = false;
          throw new NftError('NFT_APPLY_FAILED', 'refused');
        }
        d.applies++;
        batch = tx.commands;
        counters.clear();
      },
      async check() {},
      async list(command: NftCommand): Promise<NftObject[]> {
        if (!batch) throw new NftError('NFT_LIST_FAILED', 'No such file or directory');
        if ('reset' in command) {
          const out = [...counters].map(([name, c]) => ({
            counter: { family: 'inet', table: 'bulkhead', name, ...c },
          }));
          for (const c of counters.values()) Object.assign(c, { packets: 0, bytes: 0 });
          return out;
        }
        return batch
          .map((c) => (c.add as { rule?: { chain: string } } | undefined)?.rule)
          .filter((r) => r?.chain === 'input')
          .map((rule) => ({ rule }));
      },
      close() {},
    } satisfies NftDriver,
  };
  return d;
}

describe('dataplane', () => {
  let stateDir: string;
  let kernel: ReturnType<typeof kernelDouble>;
  const logger = pino({ level: 'silent' });
  const make = (extra: Partial<DataplaneOptions> = {}): Dataplane =>
    createDataplane({
      driver: kernel.driver,
      stateDir,
      failsafe: fixtureFailsafe,
      logger,
      ...extra,
    });
  const persisted = async () => RuleSet.decode(await readFile(join(stateDir, 'ruleset.bin')));

  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-agent-'));
    kernel = kernelDouble();
  });
  afterEach(async () => {
    await rm(stateDir, { recursive: true, force: true });
  });

  it('applies, then persists the RuleSet', async () => {
    const dp = make();
    const rs = fixtureRuleSet(Mode.MODE_ENFORCE, 3);
    const result = await dp.apply(rs);
    expect(result.ok).toBe(true);
    expect(kernel.batch).toBeDefined();
    expect(dp.applied).toEqual(rs);
    expect(await persisted()).toEqual(rs);
  });

  it('a refused batch keeps the previous rules and file, and reports APPLY_FAILED', async () => {
    const applies: boolean[] = [];
    const dp = make({ onApply: (_rs, r) => applies.push(r.ok) });
    const first = fixtureRuleSet(Mode.MODE_MONITOR, 1);
    await dp.apply(first);
    const before = kernel.batch;
    kernel.refuseNext = true;
    const result = await dp.apply(fixtureRuleSet(Mode.MODE_ENFORCE, 2));
    expect(result.ok).toBe(false);
    expect(result.error?.code).toBe('APPLY_FAILED');
    expect(result.error?.cause).toBeInstanceOf(NftError);
    expect(kernel.batch).toBe(before);
    expect(dp.applied).toEqual(first);
    expect(await persisted()).toEqual(first);
    expect(applies).toEqual([true, false]);
  });

  it('reports an unrenderable RuleSet without touching the kernel', async () => {
    const dp = make();
    const bad = fixtureRuleSet();
    bad.entries[0]!.rule = 42;
    const result = await dp.apply(bad);
    expect(result.error?.code).toBe('RULESET_INVALID');
    expect(kernel.applies).toBe(0);
    await expect(readFile(join(stateDir, 'ruleset.bin'))).rejects.toThrow();
  });

  it('a restart leaves a kernel that already holds the persisted RuleSet alone', async () => {
    await make().apply(fixtureRuleSet(Mode.MODE_ENFORCE, 5));
    kernel.count('r0_allowed', 4, 400);
    const restarted = make();
    expect(await restarted.restore()).toBe('unchanged');
    expect(kernel.applies).toBe(1);
    expect(restarted.applied?.revision).toBe(5);
    // Counters survive the restart because the table was not replaced.
    const got = await restarted.collect();
    expect(got).toEqual([
      {
        ruleId: 'web/ingress/0',
        direction: Direction.DIRECTION_INGRESS,
        verdict: Verdict.VERDICT_ALLOWED,
        packets: 4,
        bytes: 400,
      },
    ]);
  });

  it('a restart re-applies the persisted RuleSet when the kernel lost it or differs', async () => {
    await make().apply(fixtureRuleSet(Mode.MODE_ENFORCE, 5));
    const freshKernel = kernelDouble();
    kernel = freshKernel;
    const restarted = make();
    expect(await restarted.restore()).toBe('applied');
    expect(freshKernel.applies).toBe(1);
    // A changed failsafe is a different rendering too.
    const again = make({ failsafe: { ...fixtureFailsafe, admin: undefined } });
    expect(await again.restore()).toBe('applied');
    expect(freshKernel.applies).toBe(2);
  });

  it('without state, restore does nothing; a corrupt file is ignored', async () => {
    expect(await make().restore()).toBe('none');
    await writeFile(join(stateDir, 'ruleset.bin'), Buffer.from([0xff, 0xff, 0xff]));
    expect(await make().restore()).toBe('none');
    expect(kernel.applies).toBe(0);
  });

  it('reads counters before replacing the table so no delta is lost', async () => {
    const seen: number[] = [];
    const dp = make({ onCounters: (c) => seen.push(c.length) });
    await dp.apply(fixtureRuleSet(Mode.MODE_ENFORCE, 1));
    kernel.count('r1_denied', 2, 100);
    kernel.count('in_default_denied', 1, 60);
    await dp.apply(fixtureRuleSet(Mode.MODE_MONITOR, 2));
    kernel.count('r1_would_deny', 7, 700);
    const got = await dp.collect();
    expect(got.map((c) => [c.ruleId, c.verdict, c.packets])).toEqual([
      ['web/ingress/1', Verdict.VERDICT_DENIED, 2],
      ['default', Verdict.VERDICT_DENIED, 1],
      ['web/ingress/1', Verdict.VERDICT_WOULD_DENY, 7],
    ]);
    expect(await dp.collect()).toEqual([]);
    expect(seen).toEqual([2, 1]);
  });
});

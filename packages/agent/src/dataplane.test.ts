import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NftError } from '@bulkhead/nftables';
import { createFakeNft, type FakeNft } from '@bulkhead/nftables/testing';
import { Direction, Mode, RuleSet, Verdict } from '@bulkhead/proto';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, type MockInstance, vi } from 'vitest';
import { createDataplane, type Dataplane, type DataplaneOptions } from './dataplane.js';
import { fixtureFailsafe, fixtureRuleSet } from './fixture.test-util.js';

describe('dataplane', () => {
  let stateDir: string;
  let kernel: FakeNft;
  let applies: MockInstance;
  const newKernel = () => {
    kernel = createFakeNft();
    applies = vi.spyOn(kernel, 'apply');
  };
  const table = () => kernel.dump().filter((o) => JSON.stringify(o).includes('"bulkhead"'));
  // Overlapping intervals in one map: renders fine, the kernel refuses the whole batch.
  const refused = (revision: number) => {
    const rs = fixtureRuleSet(Mode.MODE_MONITOR, revision);
    rs.entries.push({ ...rs.entries[3]!, addrFrom: '192.168.1.0', addrTo: '192.168.1.9' });
    return rs;
  };
  const logger = pino({ level: 'silent' });
  const make = (extra: Partial<DataplaneOptions> = {}): Dataplane =>
    createDataplane({
      driver: kernel,
      stateDir,
      failsafe: fixtureFailsafe,
      logger,
      ...extra,
    });
  const persisted = async () => RuleSet.decode(await readFile(join(stateDir, 'ruleset.bin')));

  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-agent-'));
    newKernel();
  });
  afterEach(async () => {
    await rm(stateDir, { recursive: true, force: true });
  });

  it('applies, then persists the RuleSet', async () => {
    const dp = make();
    const rs = fixtureRuleSet(Mode.MODE_ENFORCE, 3);
    const result = await dp.apply(rs);
    expect(result.ok).toBe(true);
    expect(table().some((o) => 'map' in o)).toBe(true);
    expect(dp.applied).toEqual(rs);
    expect(await persisted()).toEqual(rs);
  });

  it('a refused batch keeps the previous rules and file, and reports APPLY_FAILED', async () => {
    const outcomes: boolean[] = [];
    const dp = make({ onApply: (_rs, r) => outcomes.push(r.ok) });
    const first = fixtureRuleSet(Mode.MODE_ENFORCE, 1);
    await dp.apply(first);
    const before = table();
    const result = await dp.apply(refused(2));
    expect(result.ok).toBe(false);
    expect(result.error?.code).toBe('APPLY_FAILED');
    expect(result.error?.cause).toBeInstanceOf(NftError);
    expect(table()).toEqual(before);
    expect(dp.applied).toEqual(first);
    expect(await persisted()).toEqual(first);
    expect(outcomes).toEqual([true, false]);
  });

  it('reports an unrenderable RuleSet without touching the kernel', async () => {
    const dp = make();
    const bad = fixtureRuleSet();
    bad.entries[0]!.rule = 42;
    const result = await dp.apply(bad);
    expect(result.error?.code).toBe('RULESET_INVALID');
    expect(applies).not.toHaveBeenCalled();
    await expect(readFile(join(stateDir, 'ruleset.bin'))).rejects.toThrow();
  });

  it('a restart leaves a kernel that already holds the persisted RuleSet alone', async () => {
    await make().apply(fixtureRuleSet(Mode.MODE_ENFORCE, 5));
    kernel.setCounter('r0_allowed', 4, 400);
    const restarted = make();
    expect(await restarted.restore()).toBe('unchanged');
    expect(applies).toHaveBeenCalledTimes(1);
    expect(restarted.applied?.revision).toBe(5);
    // Counters survive the restart because the table was not replaced.
    expect(await restarted.collect()).toEqual([
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
    newKernel(); // a reboot: empty kernel, same state dir
    const restarted = make();
    expect(await restarted.restore()).toBe('applied');
    expect(applies).toHaveBeenCalledTimes(1);
    expect(restarted.applied?.revision).toBe(5);
    // A changed failsafe is a different rendering too.
    const again = make({ failsafe: { ...fixtureFailsafe, admin: undefined } });
    expect(await again.restore()).toBe('applied');
    expect(applies).toHaveBeenCalledTimes(2);
  });

  it('without state, restore does nothing; a corrupt file is ignored', async () => {
    expect(await make().restore()).toBe('none');
    await writeFile(join(stateDir, 'ruleset.bin'), Buffer.from([0xff, 0xff, 0xff]));
    expect(await make().restore()).toBe('none');
    expect(applies).not.toHaveBeenCalled();
  });

  it('reads counters before replacing the table so no delta is lost', async () => {
    const seen: number[] = [];
    const dp = make({ onCounters: (c) => seen.push(c.length) });
    await dp.apply(fixtureRuleSet(Mode.MODE_ENFORCE, 1));
    kernel.setCounter('r1_denied', 2, 100);
    kernel.setCounter('in_default_denied', 1, 60);
    await dp.apply(fixtureRuleSet(Mode.MODE_MONITOR, 2));
    kernel.setCounter('r1_would_deny', 7, 700);
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

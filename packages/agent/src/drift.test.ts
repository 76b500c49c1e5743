import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transaction } from '@bulkhead/nftables';
import { createFakeNft, type FakeNft } from '@bulkhead/nftables/testing';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDataplane, DATAPLANE_TAMPERED, type Dataplane } from './dataplane.js';
import { normalTable } from './delta.test-util.js';
import type { Drift } from './drift.js';
import { fixtureFailsafe, fixtureUpdate } from './fixture.test-util.js';
import { groupSet } from './render.js';

const T = { family: 'inet', table: 'bulkhead' };

/** The IPv4 set of the fixture group holding 192.168.0.0/16. */
const BAD4 = groupSet('cidr:bad', 4);
/** An element of an IPv4 group set. */
const el = (addr: unknown) => ({ concat: [addr, 'ipv4'] });

describe('drift', () => {
  let stateDir: string;
  let kernel: FakeNft;
  let dp: Dataplane;
  let tampers: Drift[];
  let want: unknown;

  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-drift-'));
    kernel = createFakeNft();
    tampers = [];
    dp = createDataplane({
      driver: kernel,
      stateDir,
      failsafe: fixtureFailsafe,
      logger: pino({ level: 'silent' }),
      onTamper: (d) => tampers.push(d),
    });
    await dp.apply(fixtureUpdate());
    want = normalTable(kernel.dump());
  });
  afterEach(async () => {
    await rm(stateDir, { recursive: true, force: true });
  });

  it('finds nothing in the table it wrote', async () => {
    expect(await dp.reconcile()).toBeUndefined();
    expect(tampers).toEqual([]);
    expect(dp.flows.take(0).events).toEqual([]);
  });

  it.each<[string, (tx: Transaction) => Transaction, Partial<Drift>]>([
    [
      'a flushed chain',
      (tx) => tx.flush({ chain: { ...T, name: 'input' } }),
      { chains: ['input'] },
    ],
    [
      'a deleted table',
      (tx) => tx.delete({ table: { family: 'inet', name: 'bulkhead' } }),
      { tableMissing: true },
    ],
    [
      'a foreign rule',
      (tx) => tx.add({ rule: { ...T, chain: 'input', expr: [{ accept: null }] } }),
      { chains: ['input'] },
    ],
    [
      'a changed set element',
      (tx) =>
        tx
          .delete({
            element: {
              ...T,
              name: BAD4,
              elem: [el({ range: ['192.168.0.0', '192.168.255.255'] })],
            },
          })
          .add({
            element: { ...T, name: BAD4, elem: [el({ prefix: { addr: '192.168.0.0', len: 17 } })] },
          }),
      { elements: [expect.objectContaining({ set: BAD4, missing: 1, extra: 1 })] },
    ],
    [
      'a foreign counter',
      (tx) => tx.add({ counter: { ...T, name: 'evil' } }),
      { counters: ['evil'] },
    ],
  ])('detects, reports and repairs %s', async (_what, tamper, expected) => {
    await kernel.apply(tamper(new Transaction()));
    const drift = await dp.reconcile();
    expect(drift).toMatchObject(expected);
    expect(tampers).toHaveLength(1);
    const events = dp.flows.take(0).events;
    expect(events.map((e) => e.code)).toEqual([DATAPLANE_TAMPERED]);
    expect(Object.keys(events[0]!.attributes).length).toBeGreaterThan(0);
    expect(normalTable(kernel.dump())).toEqual(want);
    expect(await dp.reconcile()).toBeUndefined();
  });

  it('takes nft listing a range as a prefix for the same element', async () => {
    // The fake keeps elements as given; rewrite one the way nft lists it.
    await kernel.apply(
      new Transaction()
        .delete({
          element: { ...T, name: BAD4, elem: [el({ range: ['192.168.0.0', '192.168.255.255'] })] },
        })
        .add({
          element: { ...T, name: BAD4, elem: [el({ prefix: { addr: '192.168.0.0', len: 16 } })] },
        }),
    );
    expect(await dp.reconcile()).toBeUndefined();
  });

  it('tells its own writes from foreign ones in monitor events', async () => {
    const ev = (verb: string, kind: string, body: Record<string, unknown>) => ({
      verb,
      kind,
      body,
      table: { family: 'inet', name: (body.table ?? body.name) as string },
    });
    expect(dp.isForeign(ev('delete', 'rule', { ...T, chain: 'input' }))).toBe(true);
    expect(dp.isForeign(ev('add', 'rule', { family: 'inet', table: 'other', chain: 'x' }))).toBe(
      false,
    );
    expect(dp.isForeign(ev('add', 'element', { ...T, name: 'flows_in4' }))).toBe(false);
    // A write is bracketed: its first command opens a window, its end mark closes it.
    const next = fixtureUpdate(undefined, 8);
    next.groups[0]!.added.pop();
    await dp.apply(next);
    const commands = kernel.lastTransaction!.commands;
    const open = (commands[0]!.add as { chain: { name: string } }).chain.name;
    const end = (commands.at(-3)!.add as { chain: { name: string } }).chain.name;
    const change = ev('delete', 'element', { ...T, name: 'g4_x' });
    expect(dp.isForeign(ev('add', 'chain', { ...T, name: open }))).toBe(false);
    expect(dp.isForeign(change)).toBe(false);
    expect(dp.isForeign(ev('add', 'chain', { ...T, name: end }))).toBe(false);
    expect(dp.isForeign(change)).toBe(true);
  });
});

import { describe, expect, it } from 'vitest';
import { describeNftContract } from './contract.js';
import { createFakeNft } from './fake.js';
import { Transaction } from './transaction.js';

describeNftContract('fake', async () => createFakeNft());

const T = { family: 'inet', table: 'bulkhead' };

describe('FakeNft extras', () => {
  it('records the last transaction and dumps the ruleset', async () => {
    const nft = createFakeNft();
    expect(nft.lastTransaction).toBeUndefined();
    const tx = new Transaction().add({ table: { family: 'inet', name: 'bulkhead' } });
    await nft.apply(tx);
    expect(nft.lastTransaction).toBe(tx);
    await nft.check(new Transaction().add({ chain: { ...T, name: 'x' } }));
    expect(nft.lastTransaction).toBe(tx);
    expect(nft.dump()).toEqual([{ table: { family: 'inet', name: 'bulkhead', handle: 1 } }]);
  });

  it('simulates traffic with setCounter, read back by list and zeroed by reset', async () => {
    const nft = createFakeNft();
    await nft.apply(
      new Transaction()
        .add({ table: { family: 'inet', name: 'bulkhead' } })
        .add({ counter: { ...T, name: 'r0_allowed' } }),
    );
    nft.setCounter('r0_allowed', 7, 700);
    const where = { counters: { family: 'inet', table: 'bulkhead' } };
    expect(await nft.list({ reset: where })).toEqual([
      { counter: { ...T, name: 'r0_allowed', handle: 1, packets: 7, bytes: 700 } },
    ]);
    expect(await nft.list({ list: where })).toEqual([
      { counter: { ...T, name: 'r0_allowed', handle: 1, packets: 0, bytes: 0 } },
    ]);
    expect(() => nft.setCounter('nope', 1, 1)).toThrow(/0 counters/);
  });

  it('simulates the packet path with packetAdd: counts per element, silently stops when full', async () => {
    const nft = createFakeNft();
    await nft.apply(
      new Transaction().add({ table: { family: 'inet', name: 'bulkhead' } }).add({
        set: {
          ...T,
          name: 'flows',
          type: ['ipv4_addr', 'inet_proto'],
          flags: ['timeout'],
          size: 2,
          stmt: [{ counter: null }],
        },
      }),
    );
    expect(nft.packetAdd('flows', { concat: ['10.0.0.1', 6] }, 60)).toBe(true);
    expect(nft.packetAdd('flows', { concat: ['10.0.0.1', 'tcp'] }, 40)).toBe(true);
    expect(nft.packetAdd('flows', { concat: ['10.0.0.2', 17] }, 30)).toBe(true);
    expect(nft.packetAdd('flows', { concat: ['10.0.0.3', 17] }, 30)).toBe(false);
    const [set] = await nft.list({ list: { set: { ...T, name: 'flows' } } });
    expect((set as { set: { elem: unknown[] } }).set.elem).toEqual([
      { elem: { val: { concat: ['10.0.0.1', 'tcp'] }, counter: { packets: 2, bytes: 100 } } },
      { elem: { val: { concat: ['10.0.0.2', 'udp'] }, counter: { packets: 1, bytes: 30 } } },
    ]);
    expect(() => nft.packetAdd('nope', '10.0.0.1', 1)).toThrow(/0 sets/);
  });

  it('returns copies: mutating a list answer does not change the fake', async () => {
    const nft = createFakeNft();
    await nft.apply(new Transaction().add({ table: { family: 'inet', name: 'bulkhead' } }));
    const list = await nft.list({ list: { ruleset: null } });
    (list[0]?.table as { name: string }).name = 'changed';
    expect(nft.dump()[0]).toEqual({ table: { family: 'inet', name: 'bulkhead', handle: 1 } });
  });

  it('keeps set elements with per-element counters (dynamic sets) as given', async () => {
    const nft = createFakeNft();
    const elem = {
      elem: {
        val: { concat: ['10.0.0.1', '10.0.0.2', 6, 443] },
        counter: { packets: 3, bytes: 180 },
      },
    };
    await nft.apply(
      new Transaction()
        .add({ table: { family: 'inet', name: 'bulkhead' } })
        .add({
          set: {
            ...T,
            name: 'flows_in',
            type: ['ipv4_addr', 'ipv4_addr', 'inet_proto', 'inet_service'],
            flags: ['dynamic', 'timeout'],
          },
        })
        .add({ element: { ...T, name: 'flows_in', elem: [elem] } }),
    );
    const [set] = await nft.list({ list: { set: { ...T, name: 'flows_in' } } });
    expect((set?.set as { elem?: unknown[] } | undefined)?.elem).toEqual([
      {
        elem: {
          val: { concat: ['10.0.0.1', '10.0.0.2', 'tcp', 443] },
          counter: { packets: 3, bytes: 180 },
        },
      },
    ]);
  });
});

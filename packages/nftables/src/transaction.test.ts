import { describe, expect, it } from 'vitest';
import type { NftObject } from './driver.js';
import { Transaction } from './transaction.js';

const table = { table: { family: 'inet', name: 'bulkhead' } };
const chain = { chain: { family: 'inet', table: 'bulkhead', name: 'input' } };

describe('Transaction', () => {
  it('queues commands in order as libnftables JSON and is chainable', () => {
    const tx = new Transaction()
      .add(table)
      .add(chain)
      .flush({ set: { family: 'inet', table: 'bulkhead', name: 's' } })
      .delete({ rule: { family: 'inet', table: 'bulkhead', chain: 'input', handle: 4 } })
      .reset({ counter: { family: 'inet', table: 'bulkhead', name: 'c' } })
      .create({ counter: { family: 'inet', table: 'bulkhead', name: 'c2' } });
    expect(tx.error).toBeUndefined();
    expect(tx.size).toBe(6);
    expect(tx.commands.map((c) => Object.keys(c)[0])).toEqual([
      'add',
      'add',
      'flush',
      'delete',
      'reset',
      'create',
    ]);
    expect(tx.commands[0]).toEqual({ add: table });
  });

  it('copies objects when queued, so later mutation by the caller changes nothing', () => {
    const obj = { table: { family: 'inet', name: 'a' } };
    const tx = new Transaction().add(obj);
    obj.table.name = 'b';
    expect(tx.commands[0]).toEqual({ add: { table: { family: 'inet', name: 'a' } } });
  });

  it('renders the batch as one libnftables JSON document', () => {
    const tx = new Transaction().add(table).add(chain);
    expect(JSON.parse(tx.json)).toEqual({ nftables: [{ add: table }, { add: chain }] });
    expect(new Transaction().json).toBe('{"nftables":[]}');
  });

  it('refuses objects that are not JSON', () => {
    const tx = new Transaction().add({ table: { family: 'inet', name: 't', big: 1n } });
    expect(tx.error?.code).toBe('NFT_INVALID');
    expect(tx.error?.message).toMatch(/not JSON/);
  });

  it('accepts base chains, concatenated interval verdict maps and their elements', () => {
    const tx = new Transaction()
      .add({
        chain: {
          family: 'inet',
          table: 'bulkhead',
          name: 'input',
          type: 'filter',
          hook: 'input',
          prio: 0,
          policy: 'drop',
        },
      })
      .add({
        map: {
          family: 'inet',
          table: 'bulkhead',
          name: 'in4_ports',
          type: ['ipv4_addr', 'inet_proto', 'inet_service'],
          map: 'verdict',
          flags: ['interval'],
        },
      })
      .add({
        element: {
          family: 'inet',
          table: 'bulkhead',
          name: 'in4_ports',
          elem: [
            [
              { concat: [{ range: ['10.0.0.1', '10.0.0.9'] }, 6, { range: [80, 90] }] },
              { jump: { target: 'r1' } },
            ],
          ],
        },
      })
      .add({
        rule: { family: 'inet', table: 'bulkhead', chain: 'input', expr: [{ accept: null }] },
      })
      .delete({ table: { family: 'inet', handle: 3 } });
    expect(tx.error).toBeUndefined();
  });

  const invalid: [string, (tx: Transaction) => Transaction, RegExp][] = [
    [
      'unknown kind',
      (tx) => tx.add({ flowtable: { family: 'inet', table: 't', name: 'f' } }),
      /unknown object kind 'flowtable'/,
    ],
    ['two kinds in one object', (tx) => tx.add({ ...table, ...chain }), /exactly one kind/],
    ['bad family', (tx) => tx.add({ table: { family: 'ipx', name: 't' } }), /family/],
    ['missing family', (tx) => tx.add({ table: { name: 't' } }), /family/],
    [
      'bad table name',
      (tx) => tx.add({ table: { family: 'inet', name: 'x; flush ruleset' } }),
      /table\.name/,
    ],
    [
      'name starting with a digit',
      (tx) => tx.add({ table: { family: 'inet', name: '1t' } }),
      /table\.name/,
    ],
    [
      'name longer than 64',
      (tx) => tx.add({ table: { family: 'inet', name: `a${'b'.repeat(64)}` } }),
      /table\.name/,
    ],
    [
      'chain without table',
      (tx) => tx.add({ chain: { family: 'inet', name: 'c' } }),
      /chain\.table/,
    ],
    [
      'rule without chain',
      (tx) => tx.add({ rule: { family: 'inet', table: 't', expr: [] } }),
      /rule\.chain/,
    ],
    [
      'rule expr not an array',
      (tx) => tx.add({ rule: { family: 'inet', table: 't', chain: 'c', expr: {} } }),
      /rule\.expr/,
    ],
    [
      'rule delete without handle',
      (tx) => tx.delete({ rule: { family: 'inet', table: 't', chain: 'c' } }),
      /handle/,
    ],
    [
      'set without type',
      (tx) => tx.add({ set: { family: 'inet', table: 't', name: 's' } }),
      /set\.type/,
    ],
    [
      'map without value type',
      (tx) => tx.add({ map: { family: 'inet', table: 't', name: 'm', type: 'ipv4_addr' } }),
      /map\.map/,
    ],
    [
      'flags not an array',
      (tx) =>
        tx.add({
          set: { family: 'inet', table: 't', name: 's', type: 'ipv4_addr', flags: 'interval' },
        }),
      /flags/,
    ],
    [
      'element without elem',
      (tx) => tx.add({ element: { family: 'inet', table: 't', name: 's' } }),
      /elem/,
    ],
    [
      'half a base chain',
      (tx) => tx.add({ chain: { family: 'inet', table: 't', name: 'c', hook: 'input' } }),
      /base chain/,
    ],
    [
      'bad policy',
      (tx) =>
        tx.add({
          chain: {
            family: 'inet',
            table: 't',
            name: 'c',
            type: 'filter',
            hook: 'input',
            prio: 0,
            policy: 'reject',
          },
        }),
      /policy/,
    ],
    [
      'policy on a regular chain',
      (tx) => tx.add({ chain: { family: 'inet', table: 't', name: 'c', policy: 'drop' } }),
      /base chain/,
    ],
    [
      'flush of a rule',
      (tx) => tx.flush({ rule: { family: 'inet', table: 't', chain: 'c', expr: [] } }),
      /'flush' does not apply/,
    ],
    ['reset of a table', (tx) => tx.reset(table), /'reset' does not apply/],
    ['not an object', (tx) => tx.add(null as unknown as NftObject), /plain object/],
  ];

  it.each(invalid)('refuses %s with NFT_INVALID', (_name, queue, message) => {
    const tx = queue(new Transaction().add(table));
    expect(tx.error?.code).toBe('NFT_INVALID');
    expect(tx.error?.message).toMatch(message);
    expect(tx.error?.message).toMatch(/^command 1 /);
  });

  it('keeps the first error and still counts later commands', () => {
    const tx = new Transaction()
      .add({ table: { family: 'bad', name: 't' } })
      .add({ table: { family: 'inet', name: '' } })
      .add(table);
    expect(tx.error?.message).toMatch(/^command 0 \(add\): table\.family/);
    expect(tx.size).toBe(3);
  });

  it('takes element texts that each stay one element, and refuses any that could splice', () => {
    const where = { family: 'inet', table: 'bulkhead', name: 's' };
    const good = [
      '{"concat":[{"range":["10.0.0.1","10.0.0.9"]},"ipv4"]}',
      '"a,b:]}\\"\\\\"', // separators and brackets inside a string, escaped quote and backslash
      '[{"concat":["::1",6]},{"jump":{"target":"r1"}}]',
      '7',
    ];
    const tx = new Transaction().elementsJson('add', where, good);
    expect(tx.error).toBeUndefined();
    expect(tx.commands[0]).toEqual({
      add: { element: { ...where, elem: good.map((t) => JSON.parse(t)) } },
    });
    const splices = [
      '1],[2', // closes what it did not open
      '"a"]}}},{"delete":{"table":{"family":"inet","name":"x"}}},{"add":{"element":{"elem":["b"',
      '1,2', // two elements
      '"a', // leaves a string open for the next text
      '"a\\"', // the quote is escaped: still open
      '{"a":[1}', // leaves a bracket open
      'x:1',
    ];
    for (const bad of splices) {
      const refused = new Transaction().addSetJson('set', { ...where, type: 'ipv4_addr' }, [
        '1',
        bad,
      ]);
      expect(refused.error?.message, bad).toBe('command 0 (add): element 1 is not one JSON value');
    }
  });
});

// The NftDriver contract's fixtures (contract.ts): the test tables, the batches its cases build
// on, and the batches the kernel refuses. Touches nothing itself.
import type { NftObject } from './driver.js';
import { Transaction } from './transaction.js';

export const family = 'inet';
export const table = 'bhtest';
export const T = { family, table };

export const TEST_TABLES = ['bhtest', 'bhtest2'];

export function objectsOf(list: NftObject[], kind: string): Record<string, unknown>[] {
  return list.filter((o) => kind in o).map((o) => o[kind] as Record<string, unknown>);
}

/** A table with a base chain, a regular chain, a named counter and a rule using it. */
export function baseTx(): Transaction {
  return new Transaction()
    .add({ table: { family, name: table } })
    .add({ counter: { ...T, name: 'c_allow' } })
    .add({
      chain: { ...T, name: 'input', type: 'filter', hook: 'input', prio: 0, policy: 'accept' },
    })
    .add({ chain: { ...T, name: 'r1' } })
    .add({ rule: { ...T, chain: 'r1', expr: [{ counter: 'c_allow' }, { accept: null }] } })
    .add({ set: { ...T, name: 'peers4', type: 'ipv4_addr', flags: ['interval'] } });
}

export function portsMap(name: string, addrType: string): NftObject {
  return {
    map: {
      ...T,
      name,
      type: [addrType, 'inet_proto', 'inet_service'],
      map: 'verdict',
      flags: ['interval'],
    },
  };
}

export function portsElement(
  name: string,
  lo: string,
  hi: string,
  ports: [number, number],
): NftObject {
  return {
    element: {
      ...T,
      name,
      elem: [[{ concat: [{ range: [lo, hi] }, 6, { range: ports }] }, { jump: { target: 'r1' } }]],
    },
  };
}

export function vmapRule(map: string, proto: 'ip' | 'ip6'): NftObject {
  const key = {
    concat: [
      { payload: { protocol: proto, field: 'saddr' } },
      { meta: { key: 'l4proto' } },
      { payload: { protocol: 'th', field: 'dport' } },
    ],
  };
  return { rule: { ...T, chain: 'input', expr: [{ vmap: { key, data: `@${map}` } }] } };
}

/** Batches the kernel refuses, each added to a transaction that already holds a harmless command. */
export const REFUSALS: [string, (tx: Transaction) => Transaction][] = [
  [
    'a chain in a missing table',
    (tx) => tx.add({ chain: { family, table: 'bhtest2', name: 'c' } }),
  ],
  [
    'a rule in a missing chain',
    (tx) => tx.add({ rule: { ...T, chain: 'nope', expr: [{ accept: null }] } }),
  ],
  [
    'a reference to a missing set',
    (tx) =>
      tx.add({
        rule: {
          ...T,
          chain: 'r1',
          expr: [
            {
              match: {
                op: '==',
                left: { payload: { protocol: 'ip', field: 'saddr' } },
                right: '@nope',
              },
            },
          ],
        },
      }),
  ],
  [
    'a jump to a missing chain',
    (tx) => tx.add({ rule: { ...T, chain: 'input', expr: [{ jump: { target: 'nope' } }] } }),
  ],
  [
    'a jump to a chain added later in the batch',
    (tx) =>
      tx
        .add({ rule: { ...T, chain: 'input', expr: [{ jump: { target: 'later' } }] } })
        .add({ chain: { ...T, name: 'later' } }),
  ],
  [
    'a missing named counter',
    (tx) => tx.add({ rule: { ...T, chain: 'r1', expr: [{ counter: 'nope' }] } }),
  ],
  [
    'a map element jumping to a missing chain',
    (tx) =>
      tx.add(portsMap('m4', 'ipv4_addr')).add({
        element: {
          ...T,
          name: 'm4',
          elem: [[{ concat: ['10.0.0.1', 6, 80] }, { jump: { target: 'nope' } }]],
        },
      }),
  ],
  ['deleting a missing table', (tx) => tx.delete({ table: { family, name: 'bhtest2' } })],
  ['deleting a missing chain', (tx) => tx.delete({ chain: { ...T, name: 'nope' } })],
  ['deleting a missing set', (tx) => tx.delete({ set: { ...T, name: 'nope' } })],
  ['deleting a missing counter', (tx) => tx.delete({ counter: { ...T, name: 'nope' } })],
  [
    'deleting a missing element',
    (tx) => tx.delete({ element: { ...T, name: 'peers4', elem: ['192.0.2.1'] } }),
  ],
  [
    'deleting a chain a jump still targets',
    (tx) =>
      tx
        .add({ rule: { ...T, chain: 'input', expr: [{ jump: { target: 'r1' } }] } })
        .delete({ chain: { ...T, name: 'r1' } }),
  ],
  ['deleting a counter a rule uses', (tx) => tx.delete({ counter: { ...T, name: 'c_allow' } })],
  ['creating a table that exists', (tx) => tx.create({ table: { family, name: table } })],
  ['creating a chain that exists', (tx) => tx.create({ chain: { ...T, name: 'r1' } })],
  [
    'creating an element that exists',
    (tx) =>
      tx
        .add({ element: { ...T, name: 'peers4', elem: ['10.9.0.1'] } })
        .create({ element: { ...T, name: 'peers4', elem: ['10.9.0.1'] } }),
  ],
  [
    'deleting a set a rule uses',
    (tx) =>
      tx
        .add({
          rule: {
            ...T,
            chain: 'r1',
            expr: [
              {
                match: {
                  op: '==',
                  left: { payload: { protocol: 'ip', field: 'saddr' } },
                  right: '@peers4',
                },
              },
            ],
          },
        })
        .delete({ set: { ...T, name: 'peers4' } }),
  ],
  [
    'adding a set again with another type',
    (tx) => tx.add({ set: { ...T, name: 'peers4', type: 'ipv6_addr', flags: ['interval'] } }),
  ],
  [
    'changing the priority of an existing base chain',
    (tx) =>
      tx.add({
        chain: {
          ...T,
          name: 'input',
          type: 'filter',
          hook: 'input',
          prio: 5,
          policy: 'accept',
        },
      }),
  ],
  [
    'overlapping intervals in one set',
    (tx) =>
      tx.add({
        element: {
          ...T,
          name: 'peers4',
          elem: [{ range: ['10.0.2.1', '10.0.2.9'] }, { prefix: { addr: '10.0.2.0', len: 24 } }],
        },
      }),
  ],
  [
    'overlapping concatenated intervals in a verdict map',
    (tx) =>
      tx
        .add(portsMap('m4', 'ipv4_addr'))
        .add(portsElement('m4', '10.0.0.1', '10.0.0.9', [80, 90]))
        .add(portsElement('m4', '10.0.0.5', '10.0.0.20', [85, 95])),
  ],
  [
    'a range in a set without flags interval',
    (tx) =>
      tx.add({ set: { ...T, name: 'plain', type: 'ipv4_addr' } }).add({
        element: { ...T, name: 'plain', elem: [{ range: ['10.0.0.1', '10.0.0.5'] }] },
      }),
  ],
];

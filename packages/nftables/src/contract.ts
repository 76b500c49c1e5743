// One behavioural contract for every NftDriver: the fake runs it in unit tests, libnftables
// and the nft binary run it against the kernel (inside `unshare --net`). If the fake and the
// kernel disagree, this suite is where it shows. Touches only tables named bhtest*.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  baseTx,
  family,
  objectsOf,
  portsElement,
  portsMap,
  REFUSALS,
  T,
  TEST_TABLES,
  table,
  vmapRule,
} from './contract-fixtures.js';
import type { NftDriver, NftObject } from './driver.js';
import { NftError } from './errors.js';
import { Transaction } from './transaction.js';

async function rejection(p: Promise<unknown>): Promise<NftError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(NftError);
  return err as NftError;
}

export function describeNftContract(name: string, make: () => Promise<NftDriver>): void {
  describe(`NftDriver contract: ${name}`, () => {
    let nft: NftDriver;

    async function dropTestTables(): Promise<void> {
      for (const t of TEST_TABLES) {
        await nft.apply(
          new Transaction()
            .add({ table: { family, name: t } })
            .delete({ table: { family, name: t } }),
        );
      }
    }

    async function tables(): Promise<string[]> {
      const list = await nft.list({ list: { tables: null } });
      return objectsOf(list, 'table')
        .filter((t) => t.family === family && TEST_TABLES.includes(t.name as string))
        .map((t) => t.name as string);
    }

    async function listTable(): Promise<NftObject[]> {
      return nft.list({ list: { table: { family, name: table } } });
    }

    beforeEach(async () => {
      nft = await make();
      await dropTestTables();
    });
    afterEach(async () => {
      try {
        await dropTestTables();
      } finally {
        nft.close();
      }
    });

    it('applies a batch and lists it back in nft JSON shapes', async () => {
      await nft.apply(baseTx());
      const list = await listTable();
      expect(objectsOf(list, 'table')).toEqual([expect.objectContaining({ family, name: table })]);
      const chains = objectsOf(list, 'chain');
      expect(chains.map((c) => c.name).sort()).toEqual(['input', 'r1']);
      expect(chains.find((c) => c.name === 'input')).toMatchObject({
        ...T,
        type: 'filter',
        hook: 'input',
        prio: 0,
        policy: 'accept',
      });
      const rules = objectsOf(list, 'rule');
      expect(rules).toHaveLength(1);
      expect(rules[0]).toMatchObject({
        ...T,
        chain: 'r1',
        expr: [{ counter: 'c_allow' }, { accept: null }],
      });
      expect(typeof rules[0]?.handle).toBe('number');
      expect(objectsOf(list, 'set')).toEqual([
        expect.objectContaining({ ...T, name: 'peers4', type: 'ipv4_addr', flags: ['interval'] }),
      ]);
      expect(objectsOf(list, 'counter')).toEqual([
        expect.objectContaining({ ...T, name: 'c_allow', packets: 0, bytes: 0 }),
      ]);
    });

    it('is atomic: a batch whose 3rd command fails leaves nothing of the first two', async () => {
      const tx = new Transaction()
        .add({ table: { family, name: table } })
        .add({ chain: { ...T, name: 'a' } })
        .add({ rule: { ...T, chain: 'missing', expr: [{ accept: null }] } });
      const err = await rejection(nft.apply(tx));
      expect(err.code).toBe('NFT_APPLY_FAILED');
      expect(typeof err.cause).toBe('string');
      expect(await tables()).toEqual([]);
    });

    it('refuses a transaction with a queued error without touching the kernel', async () => {
      const tx = new Transaction()
        .add({ table: { family, name: table } })
        .add({ chain: { ...T, name: 'bad name; flush ruleset' } });
      expect((await rejection(nft.apply(tx))).code).toBe('NFT_INVALID');
      expect((await rejection(nft.check(tx))).code).toBe('NFT_INVALID');
      expect(await tables()).toEqual([]);
    });

    it('check() accepts a valid batch and refuses a bad one, changing nothing', async () => {
      await nft.check(baseTx());
      expect(await tables()).toEqual([]);
      const bad = new Transaction().add({ chain: { ...T, name: 'x' } });
      expect((await rejection(nft.check(bad))).code).toBe('NFT_APPLY_FAILED');
      expect(await tables()).toEqual([]);
    });

    describe('refuses what the kernel refuses, and keeps the old state', () => {
      it.each(REFUSALS)('%s', async (_what, build) => {
        await nft.apply(baseTx());
        const before = await listTable();
        // A harmless first command proves the refusal also undoes what came before it.
        const tx = build(new Transaction().add({ chain: { ...T, name: 'canary' } }));
        expect(tx.error).toBeUndefined();
        expect((await rejection(nft.apply(tx))).code).toBe('NFT_APPLY_FAILED');
        expect(await listTable()).toEqual(before);
      });
    });

    it('treats add of an existing object or element as a no-op that keeps its contents', async () => {
      await nft.apply(
        baseTx()
          .add({ counter: { ...T, name: 'c_deny', packets: 5, bytes: 500 } })
          .add({
            element: { ...T, name: 'peers4', elem: [{ prefix: { addr: '10.1.0.0', len: 16 } }] },
          }),
      );
      const before = await listTable();
      await nft.apply(
        new Transaction()
          .add({ table: { family, name: table } })
          .add({ chain: { ...T, name: 'r1' } })
          .add({ counter: { ...T, name: 'c_deny', packets: 9, bytes: 9 } })
          .add({ set: { ...T, name: 'peers4', type: 'ipv4_addr', flags: ['interval'] } })
          .add({
            element: { ...T, name: 'peers4', elem: [{ prefix: { addr: '10.1.0.0', len: 16 } }] },
          }),
      );
      expect(await listTable()).toEqual(before);
    });

    it('updates the policy of an existing base chain', async () => {
      // A forward hook: nothing is routed in the test namespace, so a drop policy is inert.
      const fwd = (policy: string) => ({
        chain: { ...T, name: 'fwd', type: 'filter', hook: 'forward', prio: 0, policy },
      });
      await nft.apply(baseTx().add(fwd('accept')));
      await nft.apply(new Transaction().add(fwd('drop')));
      const chains = objectsOf(await listTable(), 'chain');
      expect(chains.find((c) => c.name === 'fwd')?.policy).toBe('drop');
    });

    it('flushes rules from a table but keeps chains, set elements and counters', async () => {
      await nft.apply(
        baseTx().add({
          element: { ...T, name: 'peers4', elem: [{ prefix: { addr: '10.1.0.0', len: 16 } }] },
        }),
      );
      await nft.apply(new Transaction().flush({ table: { family, name: table } }));
      const list = await listTable();
      expect(objectsOf(list, 'rule')).toEqual([]);
      expect(
        objectsOf(list, 'chain')
          .map((c) => c.name)
          .sort(),
      ).toEqual(['input', 'r1']);
      expect(objectsOf(list, 'counter').map((c) => c.name)).toEqual(['c_allow']);
      expect(objectsOf(list, 'set')[0]?.elem).toEqual([{ prefix: { addr: '10.1.0.0', len: 16 } }]);
      await nft.apply(new Transaction().flush({ set: { ...T, name: 'peers4' } }));
      expect(objectsOf(await listTable(), 'set')[0]?.elem).toBeUndefined();
    });

    it('deletes a chain together with its rules once nothing jumps to it', async () => {
      await nft.apply(baseTx());
      await nft.apply(new Transaction().delete({ chain: { ...T, name: 'r1' } }));
      const list = await listTable();
      expect(objectsOf(list, 'chain').map((c) => c.name)).toEqual(['input']);
      expect(objectsOf(list, 'rule')).toEqual([]);
      // Its rule no longer holds the counter, so the counter can go too.
      await nft.apply(new Transaction().delete({ counter: { ...T, name: 'c_allow' } }));
      expect(objectsOf(await listTable(), 'counter')).toEqual([]);
    });

    it('replaces a table in one batch (add, delete, add)', async () => {
      await nft.apply(baseTx());
      await nft.apply(
        new Transaction()
          .add({ table: { family, name: table } })
          .delete({ table: { family, name: table } })
          .add({ table: { family, name: table } })
          .add({ chain: { ...T, name: 'fresh' } }),
      );
      const list = await listTable();
      expect(objectsOf(list, 'chain').map((c) => c.name)).toEqual(['fresh']);
      expect(objectsOf(list, 'counter')).toEqual([]);
      expect(objectsOf(list, 'rule')).toEqual([]);
      // The same batch also works when the table does not exist yet.
      await dropTestTables();
      await nft.apply(
        new Transaction()
          .add({ table: { family, name: table } })
          .delete({ table: { family, name: table } })
          .add({ table: { family, name: table } }),
      );
      expect(await tables()).toEqual([table]);
    });

    it('loads concatenated interval verdict maps for IPv4 and IPv6 and lists their elements', async () => {
      await nft.apply(
        baseTx()
          .add(portsMap('in4_ports', 'ipv4_addr'))
          .add(portsMap('in6_ports', 'ipv6_addr'))
          .add(vmapRule('in4_ports', 'ip'))
          .add(vmapRule('in6_ports', 'ip6'))
          .add(portsElement('in4_ports', '10.0.0.1', '10.0.0.9', [80, 90]))
          .add(portsElement('in4_ports', '10.0.0.1', '10.0.0.9', [443, 443]))
          .add(portsElement('in6_ports', 'fd00::1', 'fd00::9', [80, 90])),
      );
      const m4 = objectsOf(await nft.list({ list: { map: { ...T, name: 'in4_ports' } } }), 'map');
      expect(m4).toHaveLength(1);
      expect(m4[0]).toMatchObject({ ...T, name: 'in4_ports', map: 'verdict', flags: ['interval'] });
      expect(m4[0]?.type).toEqual(['ipv4_addr', 'inet_proto', 'inet_service']);
      const elems4 = m4[0]?.elem as unknown[];
      expect(elems4).toHaveLength(2);
      expect(elems4).toContainEqual([
        { concat: [{ range: ['10.0.0.1', '10.0.0.9'] }, 'tcp', { range: [80, 90] }] },
        { jump: { target: 'r1' } },
      ]);
      const m6 = objectsOf(await nft.list({ list: { map: { ...T, name: 'in6_ports' } } }), 'map');
      expect(m6[0]?.elem).toEqual([
        [
          { concat: [{ range: ['fd00::1', 'fd00::9'] }, 'tcp', { range: [80, 90] }] },
          { jump: { target: 'r1' } },
        ],
      ]);
      const rules = objectsOf(await listTable(), 'rule').filter((r) => r.chain === 'input');
      expect(rules.map((r) => (r.expr as { vmap: { data: string } }[])[0]?.vmap.data)).toEqual([
        '@in4_ports',
        '@in6_ports',
      ]);
      // The same element again is a no-op; deleting it works; then the map can be emptied.
      await nft.apply(
        new Transaction().add(portsElement('in4_ports', '10.0.0.1', '10.0.0.9', [80, 90])),
      );
      await nft.apply(
        new Transaction().delete(portsElement('in4_ports', '10.0.0.1', '10.0.0.9', [80, 90])),
      );
      const after = objectsOf(
        await nft.list({ list: { map: { ...T, name: 'in4_ports' } } }),
        'map',
      );
      expect(after[0]?.elem).toHaveLength(1);
    });

    it('keeps a flow set: counters per element, refuses past its size, deletes exactly', async () => {
      const flows = {
        ...T,
        name: 'flows4',
        type: ['ipv4_addr', 'ipv4_addr', 'inet_proto', 'inet_service', 'mark'],
        // nft 1.0.6 JSON has no "dynamic" flag; the set gets it from the rule that adds to it.
        flags: ['timeout'],
        timeout: 3600,
        size: 2,
        stmt: [{ counter: null }],
      };
      const key = (port: number) => ({ concat: ['10.0.0.1', '10.0.0.2', 6, port, 3] });
      const addRule = {
        ...T,
        chain: 'input',
        expr: [
          {
            set: {
              op: 'add',
              elem: {
                concat: [
                  { payload: { protocol: 'ip', field: 'saddr' } },
                  { payload: { protocol: 'ip', field: 'daddr' } },
                  { meta: { key: 'l4proto' } },
                  { payload: { protocol: 'th', field: 'dport' } },
                  3,
                ],
              },
              set: '@flows4',
            },
          },
        ],
      };
      await nft.apply(baseTx().add({ set: flows }).add({ rule: addRule }));
      await nft.apply(
        new Transaction().add({ element: { ...T, name: 'flows4', elem: [key(80), key(81)] } }),
      );
      const full = await rejection(
        nft.apply(new Transaction().add({ element: { ...T, name: 'flows4', elem: [key(82)] } })),
      );
      expect(full.code).toBe('NFT_APPLY_FAILED');
      expect(String(full.cause)).toMatch(/Too many open files/);
      const listed = objectsOf(await nft.list({ list: { set: { ...T, name: 'flows4' } } }), 'set');
      expect(listed[0]).toMatchObject({ size: 2, stmt: [{ counter: null }] });
      const vals = ((listed[0]?.elem ?? []) as { elem: { val: unknown; counter: unknown } }[]).map(
        (e) => [e.elem.val, e.elem.counter],
      );
      expect(vals).toEqual([
        [{ concat: ['10.0.0.1', '10.0.0.2', 'tcp', 80, 3] }, { packets: 0, bytes: 0 }],
        [{ concat: ['10.0.0.1', '10.0.0.2', 'tcp', 81, 3] }, { packets: 0, bytes: 0 }],
      ]);
      // Deleting by the listed value (protocol by name) removes exactly that element.
      await nft.apply(
        new Transaction().delete({ element: { ...T, name: 'flows4', elem: [vals[0]![0]] } }),
      );
      const after = objectsOf(await nft.list({ list: { set: { ...T, name: 'flows4' } } }), 'set');
      expect(after[0]?.elem).toHaveLength(1);
      const gone = await rejection(
        nft.apply(new Transaction().delete({ element: { ...T, name: 'flows4', elem: [key(80)] } })),
      );
      expect(gone.code).toBe('NFT_APPLY_FAILED');
    });

    it('reads named counters with list and zeroes them with reset', async () => {
      // Counters may be created with values: the same on every backend, no traffic needed.
      await nft.apply(baseTx().add({ counter: { ...T, name: 'c_deny', packets: 5, bytes: 500 } }));
      const byName = (list: NftObject[]) =>
        Object.fromEntries(objectsOf(list, 'counter').map((c) => [c.name, [c.packets, c.bytes]]));
      const where = { counters: { family, table } };
      expect(byName(await nft.list({ list: where }))).toEqual({
        c_allow: [0, 0],
        c_deny: [5, 500],
      });
      expect(byName(await nft.list({ reset: where }))).toEqual({
        c_allow: [0, 0],
        c_deny: [5, 500],
      });
      expect(byName(await nft.list({ list: where }))).toEqual({ c_allow: [0, 0], c_deny: [0, 0] });
      const one = await nft.list({ list: { counter: { ...T, name: 'c_deny' } } });
      expect(objectsOf(one, 'counter')).toEqual([
        expect.objectContaining({ name: 'c_deny', packets: 0 }),
      ]);
    });

    it('fails a read of something missing with NFT_LIST_FAILED and refuses writes in list()', async () => {
      expect((await rejection(listTable())).code).toBe('NFT_LIST_FAILED');
      const err = await rejection(nft.list({ add: { table: { family, name: table } } }));
      expect(err.code).toBe('NFT_INVALID');
      expect((await rejection(nft.list({ list: null }))).code).toBe('NFT_INVALID');
      expect(await tables()).toEqual([]);
    });
  });
}

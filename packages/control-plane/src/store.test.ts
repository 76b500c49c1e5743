import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hashSecret, newSecret } from './access/secrets.js';
import { createSqliteStores, MIGRATIONS, SCHEMA_VERSION, type Stores } from './store/index.js';

const mode = { ingress: 'monitor', egress: 'monitor' } as const;

describe('store', () => {
  let dir: string;
  let store: Stores;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'bh-store-'));
    store = createSqliteStores({ path: join(dir, 'test.db') });
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('migrates a new database to the latest user_version, and reopens without migrating twice', () => {
    expect(store.schemaVersion()).toBe(SCHEMA_VERSION);
    store.policy.upsertWorkload({
      name: 'web-1',
      addresses: ['10.0.0.1'],
      labels: { app: 'web' },
      mode,
    });
    store.close();
    store = createSqliteStores({ path: join(dir, 'test.db') });
    expect(store.policy.getWorkload('web-1')?.labels).toEqual({ app: 'web' });
  });

  it('migrates step by step from an older schema, keeping the data', () => {
    store.close();
    const path = join(dir, 'old.db');
    const raw = new Database(path);
    raw.exec(MIGRATIONS[0]!);
    raw.pragma('user_version = 1');
    raw
      .prepare(
        `INSERT INTO workloads (name, addresses, labels, mode, created_at, updated_at)
         VALUES ('old', '["10.0.0.9"]', '{}', '{"ingress":"monitor","egress":"monitor"}', 't', 't')`,
      )
      .run();
    raw.close();
    store = createSqliteStores({ path });
    expect(store.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(store.policy.getWorkload('old')?.name).toBe('old');
    expect(store.visibility.queryFlows()).toEqual([]);
    // v3: objects that existed before versions start at 1 and count writes from there.
    expect(store.policy.getWorkload('old')?.version).toBe(1);
    // v6: the address index holds the addresses that were there before it.
    expect(store.policy.addressOwners(['10.0.0.9'], 'x')).toEqual(new Map([['10.0.0.9', 'old']]));
    store.policy.upsertWorkload({ name: 'old', addresses: [], labels: { a: 'b' }, mode });
    expect(store.policy.getWorkload('old')?.version).toBe(2);
    // v6: the index forgets the addresses the workload no longer has.
    expect(store.policy.addressOwners(['10.0.0.9'], 'x')).toEqual(new Map());
  });

  it('indexes workload addresses through inserts, address changes and deletes', () => {
    const put = (name: string, addresses: string[]) =>
      store.policy.upsertWorkload({ name, addresses, labels: {}, mode });
    put('a', ['10.0.0.1', 'fd00::1']);
    put('b', ['10.0.0.2']);
    const asked = ['10.0.0.1', '10.0.0.2', '10.0.0.3', 'fd00::1'];
    expect(store.policy.addressOwners(asked, 'b')).toEqual(
      new Map([
        ['10.0.0.1', 'a'],
        ['fd00::1', 'a'],
      ]),
    );
    put('a', ['10.0.0.3']);
    expect(store.policy.addressOwners(asked, 'x')).toEqual(
      new Map([
        ['10.0.0.2', 'b'],
        ['10.0.0.3', 'a'],
      ]),
    );
    store.deleteWorkload('a');
    expect(store.policy.addressOwners(asked, 'x')).toEqual(new Map([['10.0.0.2', 'b']]));
  });

  it('counts writes per object; a replace bumps only the objects whose body changed', () => {
    expect(store.policy.putResource('services', 'a', { name: 'a', ports: [] })).toBe(1);
    expect(store.policy.putResource('services', 'a', { name: 'a', ports: [] })).toBe(2);
    store.policy.putResource('services', 'b', { name: 'b', ports: [] });
    store.policy.replaceResources('services', [
      { name: 'a', ports: [] } as { name: string },
      { name: 'c', ports: [] } as { name: string },
    ]);
    expect(store.policy.listVersioned('services')).toEqual([
      { body: { name: 'a', ports: [] }, version: 2 },
      { body: { name: 'c', ports: [] }, version: 1 },
    ]);
    store.policy.replaceResources('services', [{ name: 'a', ports: [1] } as { name: string }]);
    expect(store.policy.getVersioned('services', 'a')?.version).toBe(3);
  });

  it('aggregates flows per peer, port and verdict across batches, once per seq', () => {
    store.policy.upsertWorkload({ name: 'db-1', addresses: ['10.0.0.2'], labels: {}, mode });
    store.fleet.createAgent({ id: 'a1', workload: 'db-1', hostname: 'db-1', certSerial: '01' });
    const flow = {
      direction: 'ingress',
      src: '10.0.0.1',
      dst: '10.0.0.2',
      protocol: 6,
      port: 5432,
      verdict: 'would-deny',
      ruleId: 'default',
    } as const;
    const t = (iso: string) => `2026-01-01T00:00:0${iso}.000Z`;
    const batch = (connections: number, first: string, last: string) => ({
      counters: [],
      flows: [
        { ...flow, connections, bytes: connections * 100, firstSeen: t(first), lastSeen: t(last) },
      ],
      events: [{ code: 'FLOWS_DROPPED', message: 'dropped', at: t(last), attributes: { n: '1' } }],
    });
    expect(store.fleet.addTelemetry('a1', 1, batch(2, '3', '4'))).toBe(true);
    expect(store.fleet.addTelemetry('a1', 1, batch(2, '3', '4'))).toBe(false);
    expect(store.fleet.addTelemetry('a1', 2, batch(1, '1', '2'))).toBe(true);
    expect(
      store.visibility.queryFlows({ match: [{ workloads: ['db-1'], addresses: [] }] }),
    ).toEqual([
      {
        workload: 'db-1',
        ...flow,
        connections: 3,
        bytes: 300,
        firstSeen: t('1'),
        lastSeen: t('4'),
      },
    ]);
    expect(store.visibility.queryFlows({ verdict: 'allowed' })).toEqual([]);
    expect(store.visibility.listEvents({ workload: 'db-1' })).toHaveLength(2);
    expect(store.visibility.listEvents()[0]).toMatchObject({
      agentId: 'a1',
      code: 'FLOWS_DROPPED',
      attributes: { n: '1' },
    });
  });

  it('refuses a database from a newer control plane', () => {
    store.close();
    const raw = new Database(join(dir, 'test.db'));
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    expect(() => createSqliteStores({ path: join(dir, 'test.db') })).toThrow(/newer/);
    store = createSqliteStores({ path: ':memory:' });
  });

  it('rolls back every write of a failed transaction', () => {
    expect(() =>
      store.tx(() => {
        store.policy.putResource('services', 'pg', { name: 'pg', ports: [] });
        store.access.appendAudit({ actor: 't', action: 'service.put', target: 'pg' });
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(store.policy.getResource('services', 'pg')).toBeUndefined();
    expect(store.access.listAudit()).toEqual([]);
  });

  it('keeps the audit log append-only', () => {
    store.access.appendAudit({ actor: 'a', action: 'x', target: 't', after: { v: 1 } });
    const raw = new Database(join(dir, 'test.db'));
    expect(() => raw.prepare('DELETE FROM audit').run()).toThrow(/append-only/);
    expect(() => raw.prepare("UPDATE audit SET actor = 'b'").run()).toThrow(/append-only/);
    raw.close();
    expect(store.access.listAudit()[0]).toMatchObject({
      actor: 'a',
      after: { v: 1 },
      before: null,
    });
  });

  it('counts a telemetry batch once per seq and sums deltas', () => {
    store.policy.upsertWorkload({ name: 'db-1', addresses: ['10.0.0.2'], labels: {}, mode });
    store.fleet.createAgent({ id: 'a1', workload: 'db-1', hostname: 'db-1', certSerial: '01' });
    const row = { ruleId: 'p/ingress/0', direction: 'ingress', verdict: 'allowed' } as const;
    expect(
      store.fleet.addTelemetry('a1', 1, { counters: [{ ...row, packets: 2, bytes: 100 }] }),
    ).toBe(true);
    expect(
      store.fleet.addTelemetry('a1', 1, { counters: [{ ...row, packets: 2, bytes: 100 }] }),
    ).toBe(false);
    expect(
      store.fleet.addTelemetry('a1', 2, { counters: [{ ...row, packets: 3, bytes: 50 }] }),
    ).toBe(true);
    expect(store.fleet.listCounters({ workload: 'db-1' })).toEqual([
      { workload: 'db-1', ...row, packets: 5, bytes: 150 },
    ]);
    expect(store.fleet.listCounters({ workload: 'other' })).toEqual([]);
  });

  it('records an ack for an agent that may sync only', () => {
    store.policy.upsertWorkload({ name: 'db-1', addresses: ['10.0.0.2'], labels: {}, mode });
    store.fleet.createAgent({ id: 'a1', workload: 'db-1', hostname: 'db-1', certSerial: '01' });
    const ack = { revision: 3, hash: 'h3', error: '', applyMicros: 7 };
    expect(store.fleet.recordAck('a1', ack)).toBe(true);
    expect(store.fleet.getAgent('a1')).toMatchObject({ appliedRevision: 3, appliedHash: 'h3' });
    expect(store.fleet.recordAck('a1', { ...ack, error: 'nft failed' })).toBe(true);
    expect(store.fleet.getAgent('a1')).toMatchObject({
      appliedHash: 'h3',
      lastError: 'nft failed',
    });
    expect(store.fleet.recordAck('nobody', ack)).toBe(false);
    store.fleet.revokeAgent('a1');
    expect(store.fleet.recordAck('a1', { ...ack, hash: 'h4' })).toBe(false);
    expect(store.fleet.recordAck('a1', { ...ack, error: 'late' })).toBe(false);
    expect(store.fleet.getAgent('a1')).toMatchObject({
      appliedHash: 'h3',
      lastError: 'nft failed',
    });
  });

  it("writes one event-loop turn's Hellos together, what is left at close; a failed write is told to each Hello it held", async () => {
    store.policy.upsertWorkload({ name: 'w', addresses: [], labels: {}, mode });
    for (const id of ['a1', 'a2', 'a3']) {
      store.fleet.createAgent({ id, workload: 'w', hostname: id, certSerial: id });
    }
    const failed: [string, unknown][] = [];
    const onFailed = (id: string) => (err: unknown) => failed.push([id, err]);
    store.fleet.recordHello('a1', '1.0', onFailed('a1'));
    store.fleet.recordHello('a2', '2.0', onFailed('a2'));
    expect(store.fleet.getAgent('a1')).toMatchObject({ version: '', lastSeen: null });
    await new Promise((resolve) => setImmediate(resolve));
    expect(store.fleet.getAgent('a1')).toMatchObject({
      version: '1.0',
      lastSeen: expect.any(String),
    });
    expect(store.fleet.getAgent('a2')?.version).toBe('2.0');

    store.fleet.recordHello('a1', '1.1', onFailed('a1'));
    store.close();
    store = createSqliteStores({ path: join(dir, 'test.db') });
    expect(store.fleet.getAgent('a1')?.version).toBe('1.1');

    const raw = new Database(join(dir, 'test.db'));
    raw.exec(`CREATE TRIGGER refuse BEFORE UPDATE OF version ON agents
      BEGIN SELECT RAISE(ABORT, 'refused'); END`);
    raw.close();
    store.fleet.recordHello('a2', '2.1', onFailed('a2'));
    store.fleet.recordHello('a3', '3.1', onFailed('a3'));
    expect(failed).toEqual([]);
    await new Promise((resolve) => setImmediate(resolve));
    // Both Hellos of that turn were in the refused write; each is told, with the error.
    expect(failed.map(([id]) => id)).toEqual(['a2', 'a3']);
    expect(String(failed[0]![1])).toMatch(/refused/);
    expect(store.fleet.getAgent('a2')?.version).toBe('2.0');
    // Nothing of that failure is left for the next write.
    failed.length = 0;
    const fix = new Database(join(dir, 'test.db'));
    fix.exec('DROP TRIGGER refuse');
    fix.close();
    store.fleet.recordHello('a2', '2.2', onFailed('a2'));
    await new Promise((resolve) => setImmediate(resolve));
    expect(failed).toEqual([]);
    expect(store.fleet.getAgent('a2')?.version).toBe('2.2');
  });

  it('deleting a workload removes its agents (foreign keys on)', () => {
    store.policy.upsertWorkload({ name: 'w', addresses: [], labels: {}, mode });
    store.fleet.createAgent({ id: 'a1', workload: 'w', hostname: 'w', certSerial: '01' });
    const row = { ruleId: 'default', direction: 'ingress', verdict: 'denied' } as const;
    store.fleet.addTelemetry('a1', 1, { counters: [{ ...row, packets: 1, bytes: 1 }] });
    expect(store.deleteWorkload('w')).toBe(true);
    expect(store.fleet.listCounters({ workload: 'w' })).toEqual([]);
    expect(store.fleet.getAgent('a1')).toBeUndefined();
    expect(() =>
      store.fleet.createAgent({ id: 'a2', workload: 'gone', hostname: 'x', certSerial: '2' }),
    ).toThrow(/FOREIGN KEY/);
  });

  it('numbers revisions from 1 and returns the latest snapshot', () => {
    expect(store.revisions.latestRevision()).toBeUndefined();
    expect(store.revisions.addRevision('admin', 'first', { policies: [] })).toBe(1);
    expect(store.revisions.addRevision('admin', 'second', { policies: [1] })).toBe(2);
    expect(store.revisions.latestRevision()).toMatchObject({
      revision: 2,
      note: 'second',
      snapshot: { policies: [1] },
    });
    expect(store.revisions.listRevisions().map((r) => r.revision)).toEqual([2, 1]);
  });

  it('stores only hashes of secrets', () => {
    const token = newSecret('bh_');
    expect(token).toMatch(/^bh_[A-Za-z0-9_-]{43}$/);
    store.access.createApiToken({
      id: 't1',
      name: 'ci',
      role: 'viewer',
      tokenHash: hashSecret(token),
    });
    expect(store.access.findApiToken(hashSecret(token))?.name).toBe('ci');
    const raw = new Database(join(dir, 'test.db'));
    const dump = JSON.stringify(raw.prepare('SELECT * FROM api_tokens').all());
    raw.close();
    expect(dump).not.toContain(token);
  });
});

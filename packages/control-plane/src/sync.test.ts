// The Sync stream in group form (wiring contract) against a real control plane and gRPC
// clients: full sync on Hello, deltas only to the agents a change concerns, resume by hash
// (also across a control-plane restart), chunked delivery of a large group, size warnings.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentServiceClient } from '@bulkhead/proto';
import { type ChannelCredentials, credentials, status } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ControlPlane } from './control-plane.js';
import { MAX_MESSAGE } from './rulesets/encode.js';
import { applyGroups, type ReceivedUpdate, SyncSession } from './sync-session.test-util.js';
import { makeCsr, restClient, silentLog, startTestControlPlane } from './test-support.js';

describe('Sync in group form', () => {
  let dir: string;
  let cp: ControlPlane;
  let token: string;
  const clients: AgentServiceClient[] = [];

  const start = async () => {
    cp = await startTestControlPlane(dir, {
      logger: process.env.DEBUG_SYNC ? (await import('pino')).pino({ level: 'error' }) : silentLog,
      maxRuleSetEntries: 100_000,
    });
    token = token ?? cp.initialAdminToken!;
  };
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bh-sync-'));
    token = undefined as unknown as string;
    await start();
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  // A new control plane each test: the caller is made per call.
  const api = (method: string, path: string, body?: unknown) =>
    restClient(cp, token)(method, path, body);

  /** Enrols a host with `app` and returns credentials for its Sync streams. */
  async function enrolled(hostname: string, app: string, address: string) {
    const t = (await api('POST', '/v1/enrollment-tokens', { labels: { app } })).json.token;
    const { csrPem, keyPem } = await makeCsr(hostname);
    const res = await new Promise<{ certificatePem: string }>((resolve, reject) =>
      connect(credentials.createSsl(Buffer.from(cp.caPem))).enroll(
        {
          bootstrapToken: t,
          hostname,
          addresses: [address],
          labels: {},
          csrPem,
          agentVersion: 't',
        },
        (err, r) => (err ? reject(err) : resolve(r)),
      ),
    );
    const caPem = cp.caPem;
    return () =>
      credentials.createSsl(
        Buffer.from(caPem),
        Buffer.from(keyPem),
        Buffer.from(res.certificatePem),
      );
  }

  function connect(creds: ChannelCredentials): AgentServiceClient {
    const c = new AgentServiceClient(`127.0.0.1:${cp.grpcPort}`, creds);
    clients.push(c);
    return c;
  }

  /** A stream that said Hello holding `hash` and got its answer (full sync or nothing). */
  async function session(creds: () => ChannelCredentials, hash = '', packed = false) {
    const s = new SyncSession(connect(creds()).sync(), packed);
    s.hello(hash);
    const state = hash === '' ? await s.next() : undefined;
    return { s, state };
  }

  /** Proves the stream got nothing since: the next update is the full sync a new Hello brings. */
  async function expectNothing(s: SyncSession): Promise<ReceivedUpdate> {
    s.hello();
    const u = await s.next();
    expect(u.full).toBe(true);
    return u;
  }

  const policies = async () => {
    await api('PUT', '/v1/services/pg', { ports: [{ protocol: 'tcp', port: 5432 }] });
    await api('PUT', '/v1/policies/db', {
      scope: { matchLabels: { app: 'db' } },
      ingress: [
        {
          action: 'allow',
          peers: [{ selector: { matchLabels: { app: 'web' } } }],
          services: ['pg'],
        },
      ],
    });
    await api('PUT', '/v1/policies/mon', {
      scope: { matchLabels: { app: 'mon' } },
      egress: [{ action: 'allow', peers: [{ cidr: '10.9.0.0/16' }] }],
    });
    expect((await api('POST', '/v1/provision', { note: 'base' })).status).toBe(200);
  };

  it('a label change sends one small group delta to the agents whose rules name the group, nothing to others', async () => {
    const db = await enrolled('db-1', 'db', '10.0.0.2');
    const web = await enrolled('web-1', 'web', '10.0.0.3');
    const mon = await enrolled('mon-1', 'mon', '10.0.0.7');
    await policies();
    const dbS = await session(db);
    const webS = await session(web);
    const monS = await session(mon);
    expect(dbS.state!.ruleSet!.rules.map((r) => r.id)).toEqual(['db/ingress/0']);
    const webGroup = dbS.state!.ruleSet!.rules[0]!.groups[0]!;
    expect(dbS.state!.groups).toEqual([
      expect.objectContaining({
        id: webGroup,
        created: true,
        added: [{ from: '10.0.0.3', to: '10.0.0.3' }],
      }),
    ]);

    // mon-1 becomes a web host (provisioned as revision 2, just that change): it joins db's peer
    // group and leaves the mon policy.
    const relabel = await api('PATCH', '/v1/workloads/mon-1?provision=true', {
      labels: { app: 'web' },
    });
    expect(relabel.status).toBe(200);
    const toDb = await dbS.s.next();
    expect(toDb).toMatchObject({ full: false, baseHash: dbS.state!.hash, revision: 2 });
    expect(toDb.ruleSet).toBeUndefined();
    expect(toDb.groups).toEqual([
      {
        id: webGroup,
        created: false,
        deleted: false,
        added: [{ from: '10.0.0.7', to: '10.0.0.7' }],
        removed: [],
      },
    ]);
    expect(toDb.chunkBytes).toHaveLength(1);
    expect(toDb.chunkBytes[0]).toBeLessThan(250);
    const toMon = await monS.s.next();
    expect(toMon.full).toBe(false);
    expect(toMon.ruleSet!.rules).toEqual([]);
    expect(toMon.groups).toEqual([expect.objectContaining({ deleted: true })]);
    await expectNothing(webS.s);
    const agents = (await api('GET', '/v1/agents')).json as Array<Record<string, unknown>>;
    expect(agents.find((a) => a.workload === 'db-1')?.desiredHash).toBe(toDb.hash);
  });

  it('an agent that reads packed ranges holds the same groups as one that reads text, from a third of the bytes', async () => {
    const text = await enrolled('db-1', 'db', '10.0.0.2');
    const packed = await enrolled('db-2', 'db', '10.0.0.4');
    await enrolled('web-1', 'web', '10.0.0.3');
    await policies();
    const textS = await session(text);
    const packedS = await session(packed, '', true);
    const held = (u: ReceivedUpdate) => applyGroups(new Map(), u.groups);
    expect(packedS.state!.groups.every((g) => g.packed && g.added.length === 0)).toBe(true);
    expect(held(packedS.state!)).toEqual(held(textS.state!));

    // 1,000 addresses and an IPv6 range more for the db hosts: a delta to both.
    const cidrs = Array.from({ length: 1000 }, (_, i) => `172.16.${i >> 7}.${(i & 127) * 2}/32`);
    await api('PUT', '/v1/ip-lists/peers', { cidrs: [...cidrs, '2001:db8::/120'] });
    await api('PUT', '/v1/policies/peers', {
      scope: { matchLabels: { app: 'db' } },
      ingress: [{ action: 'allow', peers: [{ ipList: 'peers' }] }],
    });
    expect((await api('POST', '/v1/provision', { note: 'peers' })).status).toBe(200);
    const [t, p] = [await textS.s.next(), await packedS.s.next()];
    const after = applyGroups(held(packedS.state!), p.groups);
    expect(after).toEqual(applyGroups(held(textS.state!), t.groups));
    expect([...after.values()].some((g) => g.has('2001:db8::-2001:db8::ff'))).toBe(true);
    const bytes = (u: ReceivedUpdate) => u.chunkBytes.reduce((a, b) => a + b, 0);
    expect(bytes(p)).toBeLessThan(bytes(t) / 3);
  });

  it('resumes by hash: nothing for the current hash, a full sync after missed updates, nothing after a restart', async () => {
    const db = await enrolled('db-1', 'db', '10.0.0.2');
    await enrolled('web-1', 'web', '10.0.0.3');
    await policies();
    const first = await session(db);
    first.s.stream.end();
    // Missed while disconnected: a new web host joins db's peer group.
    await enrolled('web-2', 'web', '10.0.0.5');
    const again = await session(db, first.state!.hash);
    const full = await again.s.next();
    expect(full).toMatchObject({ full: true, baseHash: '' });
    expect(full.hash).not.toBe(first.state!.hash);
    expect(JSON.stringify(full.groups)).toContain('10.0.0.5');
    again.s.stream.end();

    const current = await session(db, full.hash);
    expect((await expectNothing(current.s)).hash).toBe(full.hash);
    expect(current.s.welcomes).toHaveLength(2);
    current.s.stream.end();

    // A restart derives the same hash from the same state: nothing is re-sent.
    for (const c of clients.splice(0)) c.close();
    await cp.stop();
    await start();
    const agents = (await api('GET', '/v1/agents')).json as Array<Record<string, unknown>>;
    expect(agents.find((a) => a.workload === 'db-1')?.desiredHash).toBe(full.hash);
    const resumed = await session(db, full.hash);
    expect((await expectNothing(resumed.s)).hash).toBe(full.hash);
  });

  it('a Hello the store cannot record ends its stream UNAVAILABLE; the agent is served once the store works', async () => {
    const db = await enrolled('db-1', 'db', '10.0.0.2');
    await policies();
    const raw = new Database(join(dir, 'bulkhead.db'));
    try {
      raw.exec(`CREATE TRIGGER refuse BEFORE UPDATE OF version ON agents
        BEGIN SELECT RAISE(ABORT, 'disk full'); END`);
      const s = new SyncSession(connect(db()).sync());
      s.hello('');
      expect(await s.error).toMatchObject({ code: status.UNAVAILABLE });
      raw.exec('DROP TRIGGER refuse');
    } finally {
      raw.close();
    }
    const again = await session(db);
    expect(again.state?.full).toBe(true);
    const agents = (await api('GET', '/v1/agents')).json as Array<Record<string, unknown>>;
    expect(agents.find((a) => a.workload === 'db-1')?.version).toBe('t');
  });

  it('delivers a 200,000-range IP list in chunks of at most 1 MiB that reassemble to the group, and warns about the size', async () => {
    const mon = await enrolled('mon-1', 'mon', '10.0.0.4');
    await policies();
    const monS = await session(mon);
    // Every other address from 11.0.0.0, so no two ranges merge.
    const cidrs = Array.from({ length: 200_000 }, (_, i) => {
      const n = 11 * 2 ** 24 + 2 * i;
      return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}/32`;
    });
    const put = await api('PUT', '/v1/ip-lists/big', { cidrs });
    expect(put.status).toBe(200);
    await api('PUT', '/v1/policies/mon', {
      scope: { matchLabels: { app: 'mon' } },
      egress: [{ action: 'allow', peers: [{ cidr: '10.9.0.0/16' }, { ipList: 'big' }] }],
    });
    const prov = (await api('POST', '/v1/provision', { note: 'big list' })).json;
    expect(prov.changed).toEqual(['mon-1']);
    expect(prov.warnings).toEqual([
      {
        workload: 'mon-1',
        entries: 200_004, // 200,000 + 1 ranges, 2 nft rules (one per group), 1 service range
        message: 'the rule set of mon-1 has 200004 entries (more than 100000)',
      },
    ]);

    const u = await monS.s.next();
    expect(u.full).toBe(false);
    expect(u.chunkBytes.length).toBeGreaterThan(2);
    for (const n of u.chunkBytes) expect(n).toBeLessThanOrEqual(MAX_MESSAGE);
    const before = new Map(
      monS.state!.groups.map((g) => [g.id, new Set(g.added.map((r) => `${r.from}-${r.to}`))]),
    );
    const after = applyGroups(before, u.groups);
    const form = (await api('GET', '/v1/rulesets/mon-1')).json;
    expect(form.ruleSet.hash).toBe(u.ruleSet!.hash);
    const expected = new Map(
      (form.groups as Array<{ id: string; ranges: Array<{ from: string; to: string }> }>).map(
        (g) => [g.id, new Set(g.ranges.map((r) => `${r.from}-${r.to}`))],
      ),
    );
    expect(after.get('list:big')?.size).toBe(200_000);
    expect(after).toEqual(expected);
  }, 120_000);
});

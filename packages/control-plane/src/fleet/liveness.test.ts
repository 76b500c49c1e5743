import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type PolicyUpdate, SyncResponse } from '@bulkhead/proto';
import type { FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { createApi } from '../api.js';
import { createDomains, type Domains } from '../domains.js';
import { createPki } from '../pki.js';
import { createSqliteStores, type Stores } from '../store/index.js';
import { silentLog } from '../test-support.js';
import { createStreamRegistry, type StreamRegistry } from './streams.js';

const monitor = { ingress: 'monitor', egress: 'monitor' } as const;
const OFFLINE_AFTER = 60_000;

describe('offline agents (fake clock, REST)', () => {
  let dir: string;
  let store: Stores;
  let app: FastifyInstance;
  let streams: StreamRegistry;
  let domains: Domains;
  let admin: string;
  let t = Date.parse('2026-11-30T00:00:00Z');
  const now = () => new Date(t);

  /** web and db, each with an agent; db's policy allows web in; both provisioned. */
  async function setUp(withdraw: boolean) {
    dir = mkdtempSync(join(tmpdir(), 'bh-liveness-'));
    store = createSqliteStores({ path: join(dir, 'bulkhead.db'), now });
    streams = createStreamRegistry();
    domains = createDomains({
      stores: store,
      pki: await createPki({ dir: join(dir, 'ca') }),
      streams,
      log: silentLog,
      now,
      offline: { afterMs: OFFLINE_AFTER, withdraw },
    });
    domains.metrics.watch({
      agents: domains.fleet.listAgents,
      flowRows: () => 0,
      ingest: domains.fleet.ingest,
      dbPath: join(dir, 'bulkhead.db'),
    });
    admin = domains.access.bootstrapAdminToken()!;
    app = await createApi({ domains, log: silentLog });
    for (const [name, address] of [
      ['web', '10.0.0.1'],
      ['db', '10.0.0.2'],
    ] as const) {
      domains.policy.changeWorkloads((ws) =>
        ws.upsertWorkload({ name, addresses: [address], labels: { app: name }, mode: monitor }),
      );
      store.fleet.createAgent({
        id: `agent-${name}`,
        workload: name,
        hostname: name,
        certSerial: name,
      });
    }
    await call('PUT', '/v1/services/pg', { name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] });
    await call('PUT', '/v1/policies/db', {
      scope: { matchLabels: { app: 'db' } },
      ingress: [
        {
          action: 'allow',
          peers: [{ selector: { matchLabels: { app: 'web' } } }],
          services: ['pg'],
        },
      ],
    });
    expect((await call('POST', '/v1/provision', { note: 'db policy' })).statusCode).toBe(200);
  }

  afterEach(async () => {
    await app?.close();
    store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = (method: 'GET' | 'PUT' | 'POST', url: string, body?: unknown) =>
    app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${admin}` },
      ...(body === undefined ? {} : { payload: body as object }),
    });

  /** An open stream for the workload's agent; returns the updates it receives. */
  function connect(workload: string): { got: PolicyUpdate[]; remove(): void } {
    const got: PolicyUpdate[] = [];
    const remove = streams.add({
      agentId: `agent-${workload}`,
      workload,
      synced: '',
      send: (m) => got.push(SyncResponse.decode(m).update!),
      close: () => {},
    });
    return { got, remove };
  }

  const agents = async () =>
    Object.fromEntries(
      (await call('GET', '/v1/agents'))
        .json()
        .map((a: { workload: string; offline: boolean; connected: boolean }) => [
          a.workload,
          { offline: a.offline, connected: a.connected },
        ]),
    );
  /** The addresses in the groups db's rule set names (what its agent is sent). */
  const dbPeers = async () =>
    (
      (await call('GET', '/v1/rulesets/db')).json() as { groups: { ranges?: { from: string }[] }[] }
    ).groups.flatMap((g) => (g.ranges ?? []).map((r) => r.from));
  const metric = async (state: string) =>
    Number(
      new RegExp(`^bulkhead_agents\\{state="${state}"\\} (\\d+)$`, 'm').exec(
        (await call('GET', '/metrics')).body,
      )?.[1],
    );

  it('marks an agent offline after --offline-after without a stream, shows it, raises AGENT_OFFLINE/AGENT_ONLINE, keeps its addresses by default', async () => {
    await setUp(false);
    connect('db');
    domains.liveness.sweep();
    t += OFFLINE_AFTER - 1;
    domains.liveness.sweep();
    expect(await agents()).toEqual({
      web: { offline: false, connected: false },
      db: { offline: false, connected: true },
    });
    t += 1;
    domains.liveness.sweep();
    expect(await agents()).toEqual({
      web: { offline: true, connected: false },
      db: { offline: false, connected: true },
    });
    expect(await metric('offline')).toBe(1);
    // Raised once, however many sweeps see it offline.
    domains.liveness.sweep();
    const events = (await call('GET', '/v1/events?workload=web')).json();
    expect(JSON.stringify(events).match(/AGENT_OFFLINE/g)).toHaveLength(1);
    const audit = (await call('GET', '/v1/audit')).json() as { action: string; target: string }[];
    expect(audit.filter((a) => a.action.startsWith('agent.'))).toEqual([
      expect.objectContaining({ action: 'agent.offline', target: 'agent-web' }),
    ]);
    expect(await dbPeers()).toEqual(['10.0.0.1']);

    connect('web');
    domains.liveness.sweep();
    expect((await agents()).web).toEqual({ offline: false, connected: true });
    expect(await metric('offline')).toBe(0);
    expect(JSON.stringify((await call('GET', '/v1/events?workload=web')).json())).toContain(
      'AGENT_ONLINE',
    );
  });

  it('with withdraw, peers lose the addresses of a workload whose agents are all offline and get them back when one returns', async () => {
    await setUp(true);
    const db = connect('db');
    const web = connect('web');
    domains.liveness.sweep();
    expect(await dbPeers()).toEqual(['10.0.0.1']);
    web.remove();
    t += OFFLINE_AFTER;
    domains.liveness.sweep();
    expect((await agents()).web.offline).toBe(true);
    // Published as a workload change: db's agent was sent the group without web's address.
    expect(await dbPeers()).toEqual([]);
    expect(db.got.length).toBeGreaterThan(0);
    // A change to the withdrawn workload while it is away keeps it withdrawn.
    domains.policy.changeWorkloads((ws) =>
      ws.upsertWorkload({
        name: 'web',
        addresses: ['10.0.0.1'],
        labels: { app: 'web', env: 'prod' },
        mode: monitor,
      }),
    );
    expect(await dbPeers()).toEqual([]);
    // The workload itself is not edited: its addresses stay.
    expect((await call('GET', '/v1/workloads/web')).json().addresses).toEqual(['10.0.0.1']);

    const sent = db.got.length;
    connect('web');
    domains.liveness.sweep();
    expect(await dbPeers()).toEqual(['10.0.0.1']);
    expect(db.got.length).toBe(sent + 1);
  });
});

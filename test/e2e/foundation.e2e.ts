// The whole path on real nftables: policy written through the CLI and API, compiled by the
// control plane, pushed over mTLS gRPC to agent processes in namespace hosts, enforced by the
// kernel on real TCP and UDP connections.

import { type Bulkhead, EXAMPLES, type Lab, startBulkhead, until } from '@bulkhead/lab';
import { useLab } from '@bulkhead/lab/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

interface Counter {
  workload: string;
  ruleId: string;
  direction: string;
  verdict: string;
  packets: number;
}

describe('foundation: control plane to kernel', () => {
  const getLab = useLab({ hosts: ['cp', 'web', 'db', 'batch'] });
  let lab: Lab;
  let bh: Bulkhead;
  let db4: string;
  let db6: string;
  let revision = 0;

  const counters = (workload: string) =>
    bh.api<Counter[]>('GET', `/v1/counters?workload=${workload}`);
  const packets = async (workload: string, ruleId: string, verdict: string) =>
    (await counters(workload))
      .filter((c) => c.ruleId === ruleId && c.verdict === verdict && c.direction === 'ingress')
      .reduce((n, c) => n + c.packets, 0);

  beforeAll(async () => {
    lab = getLab();
    db4 = lab.hosts.db!.ipv4;
    db6 = lab.hosts.db!.ipv6!;
    bh = await startBulkhead(lab, 'cp', {
      web: { labels: { app: 'shop', role: 'web' } },
      db: { labels: { app: 'shop', role: 'db' } },
      batch: { labels: { app: 'reports', role: 'batch' } },
    });
    await lab.listen('db', 'tcp', 5432);
    await lab.listen('db', 'tcp', 6432);
    await lab.listen('db', 'udp', 5353);
  });

  afterAll(async () => {
    await bh?.close();
  });

  it('enrols every host as a workload in monitor mode with its labels and addresses', async () => {
    const workloads = await bh.api<
      { name: string; labels: Record<string, string>; addresses: string[]; mode: unknown }[]
    >('GET', '/v1/workloads');
    const db = workloads.find((w) => w.name === 'db');
    expect(workloads.map((w) => w.name).sort()).toEqual(['batch', 'db', 'web']);
    expect(db?.labels).toEqual({ app: 'shop', role: 'db' });
    expect(db?.addresses).toEqual(expect.arrayContaining([db4, db6]));
    expect(db?.mode).toEqual({ ingress: 'monitor', egress: 'monitor' });
  });

  it('applies policy files with the CLI and provisions a revision to every agent', async () => {
    const applied = await bh.cli(['apply', '-f', `${EXAMPLES}/demo`]);
    expect(applied.stderr).toBe('');
    expect(applied.code).toBe(0);
    await bh.api('PUT', '/v1/policies/shop-db-udp', {
      name: 'shop-db-udp',
      scope: { matchLabels: { app: 'shop', role: 'db' } },
      ingress: [
        {
          action: 'allow',
          peers: [{ selector: { matchLabels: { role: 'web' } } }],
          services: [{ protocol: 'udp', port: 5353 }],
        },
      ],
    });
    const prov = await bh.cli(['provision', '--note', 'e2e: shop segmentation', '-o', 'json']);
    expect(prov.code, prov.stderr).toBe(0);
    revision = (JSON.parse(prov.stdout) as { revision: number }).revision;
    expect(revision).toBeGreaterThan(0);
    const agents = await bh.waitInSync({ revision });
    expect(agents.every((a) => a.lastError === '' || a.lastError == null)).toBe(true);
  });

  it('monitor mode lets unallowed traffic through and counts it as would-deny', async () => {
    expect(await lab.connect('batch', db4, 'tcp', 5432)).toBe(true);
    await until(
      'would-deny counted on db',
      async () => (await packets('db', 'default', 'would-deny')) > 0,
    );
  });

  it('enforce mode: allowed TCP and UDP pass, the rest is refused, on IPv4 and IPv6', async () => {
    // Provisioned as a revision of its own.
    const enforced = await bh.api<{ provisioned: { revision: number } }>(
      'PATCH',
      '/v1/workloads/db?provision=true',
      {
        mode: { ingress: 'enforce' },
        confirm: true, // batch -> db was observed: enforcing cuts it, on purpose
      },
    );
    expect(enforced.provisioned.revision).toBe(revision + 1);
    revision = enforced.provisioned.revision;
    await bh.waitInSync({ revision });
    expect(await lab.connect('web', db4, 'tcp', 5432)).toBe(true);
    expect(await lab.connect('web', db6, 'tcp', 5432)).toBe(true);
    expect(await lab.connect('batch', db4, 'tcp', 5432)).toBe(false);
    expect(await lab.connect('batch', db6, 'tcp', 5432)).toBe(false);
    expect(await lab.connect('web', db4, 'udp', 5353)).toBe(true);
    expect(await lab.connect('batch', db4, 'udp', 5353)).toBe(false);
    expect(await lab.connect('web', db4, 'tcp', 6432)).toBe(false);
    // Egress stays in monitor: db may still open connections to anyone.
    await lab.listen('batch', 'tcp', 7000);
    expect(await lab.connect('db', lab.hosts.batch!.ipv4, 'tcp', 7000)).toBe(true);

    await until('counters attributed to rules', async () => {
      const allowed = await packets('db', 'shop-db/ingress/0', 'allowed');
      const udp = await packets('db', 'shop-db-udp/ingress/0', 'allowed');
      const denied = await packets('db', 'default', 'denied');
      return allowed >= 2 && udp >= 1 && denied >= 3;
    });
    const table = await bh.cli(['counters', '--workload', 'db']);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain('shop-db/ingress/0');
  });

  it('a new revision reaches all agents without breaking an established connection', async () => {
    const held = await lab.openTcp('web', db4, 5432);
    try {
      expect(await held.ping()).toBe(true);
      await bh.api('PUT', '/v1/services/postgres', {
        name: 'postgres',
        ports: [
          { protocol: 'tcp', port: 5432 },
          { protocol: 'tcp', port: 6432 },
        ],
      });
      const prov = await bh.api<{ revision: number; changed: string[] }>('POST', '/v1/provision', {
        note: 'e2e: pgbouncer port',
      });
      expect(prov.revision).toBe(revision + 1);
      expect(prov.changed).toEqual(['db']); // web and batch RuleSets are unchanged: nothing is pushed to them
      revision = prov.revision;
      await bh.waitInSync({ revision });
      expect(await held.ping()).toBe(true);
      expect(await lab.connect('web', db4, 'tcp', 6432)).toBe(true);
      expect(await lab.connect('batch', db4, 'tcp', 6432)).toBe(false);
    } finally {
      await held.close();
    }
  });

  it('an agent restarted while the control plane is down keeps enforcing', async () => {
    await bh.stopControlPlane();
    await bh.stopAgent('db');
    // The agent is gone and the rules stay: stopping never flushes.
    expect(await lab.connect('batch', db4, 'tcp', 5432)).toBe(false);
    const agent = bh.startAgent('db');
    // Give the restarted agent time to restore its state and fail to reach the control plane.
    await new Promise((r) => setTimeout(r, 3000));
    expect(agent.child.exitCode).toBeNull();
    expect(await lab.connect('batch', db4, 'tcp', 5432)).toBe(false);
    expect(await lab.connect('web', db4, 'tcp', 5432)).toBe(true);
    await bh.startControlPlane();
    const agents = await bh.waitInSync({ revision });
    expect(agents.find((a) => a.workload === 'db')?.connected).toBe(true);
    // web's and batch's agents kept their TLS sessions across the restart (the ticket key
    // survives it); db's agent restarted and has none.
    const metrics = await bh.controlPlaneMetrics();
    const handshakes = (session: string) =>
      metrics.get(`bulkhead_grpc_tls_handshakes_total{session="${session}"}`);
    expect(handshakes('resumed')).toBeGreaterThanOrEqual(2);
    expect(handshakes('full')).toBeGreaterThanOrEqual(1);
  });
});

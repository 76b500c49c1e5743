import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FlowView, MapView } from '@bulkhead/api';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApi } from './api.js';
import { createDomains, type Domains } from './domains.js';
import { createStreamRegistry } from './fleet/streams.js';
import { createPki } from './pki.js';
import { createSqliteStores, type Stores } from './store/index.js';
import { silentLog } from './test-support.js';
import type { FlowRow } from './visibility/flow-store.js';

const monitor = { ingress: 'monitor', egress: 'monitor' } as const;
const T = Date.parse('2026-03-01T10:00:00.000Z');
const at = (min: number) => new Date(T + min * 60_000).toISOString();

// A shop: two web servers, a database enforcing ingress, a bastion without labels, an office
// range, and the internet.
const WORKLOADS = [
  { name: 'web-1', addresses: ['10.0.1.1'], labels: { app: 'shop', role: 'web' }, mode: monitor },
  { name: 'web-2', addresses: ['10.0.1.2'], labels: { app: 'shop', role: 'web' }, mode: monitor },
  {
    name: 'db-1',
    addresses: ['10.0.2.1'],
    labels: { app: 'shop', role: 'db' },
    mode: { ingress: 'enforce', egress: 'monitor' },
  },
  { name: 'bastion', addresses: ['10.0.3.1'], labels: {}, mode: monitor },
] as const;
const pg = { protocol: 'tcp', port: 5432 };
const POLICIES = {
  db: {
    scope: { matchLabels: { app: 'shop', role: 'db' } },
    ingress: [
      { action: 'allow', peers: [{ selector: { matchLabels: { role: 'web' } } }], services: [pg] },
      { action: 'deny', peers: [{ ipList: 'office' }] },
    ],
  },
  web: {
    scope: { matchLabels: { role: 'web' } },
    egress: [
      { action: 'allow', peers: [{ selector: { matchLabels: { role: 'db' } } }], services: [pg] },
      {
        action: 'deny',
        peers: [{ cidr: '8.8.8.8/32' }],
        services: [{ protocol: 'udp', port: 53 }],
      },
    ],
  },
};

type Delta = Omit<FlowRow, 'workload'>;
const f = (
  direction: 'ingress' | 'egress',
  src: string,
  dst: string,
  protocol: number,
  port: number,
  verdict: FlowRow['verdict'],
  connections: number,
  first: number,
  last = first,
): Delta => ({
  direction,
  src,
  dst,
  protocol,
  port,
  verdict,
  ruleId: verdict === 'allowed' ? 'x/0' : 'default',
  connections,
  bytes: connections * 1000,
  firstSeen: at(first),
  lastSeen: at(last),
});

describe('visibility API', () => {
  let dir: string;
  let store: Stores;
  let domains: Domains;
  let app: FastifyInstance;
  let admin: string;
  let seq = 0;

  const call = (method: 'GET' | 'POST', url: string, body?: unknown, token = admin) =>
    app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${token}` },
      ...(body === undefined ? {} : { payload: body as object }),
    });
  const report = (workload: string, ...flows: Delta[]) =>
    store.fleet.addTelemetry(`agent-${workload}`, ++seq, { counters: [], flows });
  const flows = async (query: string): Promise<FlowView[]> => {
    const res = await call('GET', `/v1/flows${query}`);
    expect(res.statusCode, res.body).toBe(200);
    return res.json().flows;
  };
  const brief = (v: FlowView) =>
    `${v.reportedBy}:${v.src.workload ?? v.src.address}>${v.dst.workload ?? v.dst.address}/${v.protocol}/${v.port}`;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bh-vis-'));
    store = createSqliteStores({ path: join(dir, 'bulkhead.db') });
    const pki = await createPki({ dir: join(dir, 'ca') });
    domains = createDomains({
      stores: store,
      pki,
      streams: createStreamRegistry(),
      log: silentLog,
    });
    admin = domains.access.bootstrapAdminToken()!;
    app = await createApi({ domains, log: silentLog });
    for (const w of WORKLOADS) {
      store.policy.upsertWorkload({ ...w, addresses: [...w.addresses], labels: { ...w.labels } });
      store.fleet.createAgent({
        id: `agent-${w.name}`,
        workload: w.name,
        hostname: w.name,
        certSerial: '1',
      });
    }
    domains.policy.putResource('t', 'ip-lists', 'office', { cidrs: ['192.168.0.0/16'] });
    domains.policy.putResource('t', 'policies', 'db', POLICIES.db);
    domains.policy.putResource('t', 'policies', 'web', POLICIES.web);
    domains.revisions.provision('t', 'shop');

    // web-1 -> db both ends report (one flow); web-2 -> db only db reports.
    report('web-1', f('egress', '10.0.1.1', '10.0.2.1', 6, 5432, 'allowed', 3, 0, 50));
    report(
      'db-1',
      f('ingress', '10.0.1.1', '10.0.2.1', 6, 5432, 'allowed', 3, 0, 50),
      f('ingress', '10.0.1.2', '10.0.2.1', 6, 5432, 'allowed', 2, 10, 40),
      f('ingress', '192.168.7.7', '10.0.2.1', 6, 5432, 'denied', 4, 20, 30),
      f('ingress', '10.0.3.1', '10.0.2.1', 6, 22, 'denied', 1, 100),
    );
    report(
      'web-2',
      f('ingress', '192.168.7.7', '10.0.1.2', 6, 443, 'allowed', 6, 5, 45),
      f('egress', '10.0.1.2', '8.8.8.8', 17, 53, 'would-deny', 9, 55, 58),
    );
  });
  afterEach(async () => {
    await app.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists flows with resolved endpoints, newest first', async () => {
    const all = await flows('');
    expect(all.map(brief)).toEqual([
      'db-1:bastion>db-1/tcp/22',
      'web-2:web-2>8.8.8.8/udp/53',
      'db-1:web-1>db-1/tcp/5432',
      'web-1:web-1>db-1/tcp/5432',
      'web-2:192.168.7.7>web-2/tcp/443',
      'db-1:web-2>db-1/tcp/5432',
      'db-1:192.168.7.7>db-1/tcp/5432',
    ]);
    const office = all.find((v) => v.dst.workload === 'web-2' && v.port === 443)!;
    expect(office).toEqual({
      src: { address: '192.168.7.7', ipLists: ['office'] },
      dst: { address: '10.0.1.2', workload: 'web-2', labels: { app: 'shop', role: 'web' } },
      protocol: 'tcp',
      port: 443,
      direction: 'ingress',
      reportedBy: 'web-2',
      verdict: 'allowed',
      ruleId: 'x/0',
      firstSeen: at(5),
      lastSeen: at(45),
      connections: 6,
      bytes: 6000,
      // Allowed when it was seen; the provisioned policy now has nothing for web-2's ingress.
      noPolicy: [{ workload: 'web-2', direction: 'ingress' }],
    });
    expect(all.find((v) => v.port === 53)?.dst).toEqual({ address: '8.8.8.8', ipLists: [] });
  });

  it('filters by workload, repeated labels, port, protocol, verdict, window and newSince', async () => {
    // role=db AND app=shop: flows with db-1 at either end.
    const db = await flows('?label=role=db&label=app=shop');
    expect(db).toHaveLength(5);
    expect(db.every((v) => v.src.workload === 'db-1' || v.dst.workload === 'db-1')).toBe(true);
    // One label arrives as a string, not an array.
    expect(await flows('?label=role=web')).toHaveLength(5);
    expect(await flows('?label=role=web&label=app=other')).toEqual([]);
    expect((await flows('?workload=bastion')).map(brief)).toEqual(['db-1:bastion>db-1/tcp/22']);
    expect((await flows('?workload=web-1&label=role=db')).map(brief)).toEqual([
      'db-1:web-1>db-1/tcp/5432',
      'web-1:web-1>db-1/tcp/5432',
    ]);
    expect((await flows('?protocol=udp&port=53')).map((v) => v.verdict)).toEqual(['would-deny']);
    expect(await flows('?protocol=17&port=54')).toEqual([]);
    expect((await flows('?verdict=denied')).map((v) => v.port)).toEqual([22, 5432]);
    expect((await flows(`?newSince=${at(20)}`)).map(brief)).toEqual([
      'db-1:bastion>db-1/tcp/22',
      'web-2:web-2>8.8.8.8/udp/53',
      'db-1:192.168.7.7>db-1/tcp/5432',
    ]);
    // Buckets are hourly by last sighting: 10:xx holds all but the bastion (11:40).
    expect(await flows(`?since=${at(61)}&limit=10`)).toHaveLength(1);
    expect(await flows(`?until=${at(59)}`)).toHaveLength(6);
    expect(await flows('?limit=2')).toHaveLength(2);
  });

  it('refuses bad filters with the field', async () => {
    for (const [query, path] of [
      ['?label=nope', 'label[0]'],
      ['?protocol=gopher', 'protocol'],
      ['?since=yesterday', 'since'],
      ['?limit=10001', 'limit'],
      ['?port=70000', 'port'],
    ] as const) {
      const res = await call('GET', `/v1/flows${query}`);
      expect(res.statusCode, query).toBe(400);
      expect(res.json().error.details.map((d: { path: string }) => d.path)).toContain(path);
    }
  });

  it('maps groups, IP lists and external peers, with what the current revision says', async () => {
    const res = await call('GET', '/v1/map');
    expect(res.statusCode).toBe(200);
    const view: MapView = res.json();
    expect(view.groupBy).toEqual(['app', 'role']);
    expect(view.nodes).toEqual([
      {
        id: 'app=shop,role=db',
        kind: 'group',
        name: 'shop-db',
        labels: { app: 'shop', role: 'db' },
        workloads: ['db-1'],
      },
      {
        id: 'app=shop,role=web',
        kind: 'group',
        name: 'shop-web',
        labels: { app: 'shop', role: 'web' },
        workloads: ['web-1', 'web-2'],
      },
      { id: 'external:8.8.8.8', kind: 'external', name: '8.8.8.8' },
      { id: 'ip-list:office', kind: 'ip-list', name: 'office' },
      { id: 'workload:bastion', kind: 'group', name: 'bastion', workloads: ['bastion'] },
    ]);
    const edge = (from: string, to: string, port: number) =>
      view.edges.find((e) => e.from === from && e.to === to && e.port === port);
    // web-1 -> db reported by both ends counts once: 3 + web-2's 2.
    expect(edge('app=shop,role=web', 'app=shop,role=db', 5432)).toEqual({
      from: 'app=shop,role=web',
      to: 'app=shop,role=db',
      protocol: 'tcp',
      port: 5432,
      connections: 5,
      bytes: 5000,
      firstSeen: at(0),
      lastSeen: at(50),
      observed: { allowed: 5, denied: 0, 'would-deny': 0 },
      policy: 'allowed',
    });
    expect(edge('ip-list:office', 'app=shop,role=db', 5432)).toMatchObject({
      observed: { allowed: 0, denied: 4, 'would-deny': 0 },
      policy: 'denied',
    });
    expect(edge('ip-list:office', 'app=shop,role=web', 443)?.policy).toBe('not-covered');
    expect(edge('app=shop,role=web', 'external:8.8.8.8', 53)?.policy).toBe('would-deny');
    expect(edge('workload:bastion', 'app=shop,role=db', 22)?.policy).toBe('denied');
    expect(view.edges).toHaveLength(5);

    // Coarser groups merge edges; the worst verdict of the merged flows wins.
    const byApp: MapView = (await call('GET', '/v1/map?groupBy=app')).json();
    const inner = byApp.edges.filter((e) => e.from === 'app=shop' && e.to === 'app=shop');
    expect(inner).toMatchObject([{ port: 5432, connections: 5, policy: 'allowed' }]);
    // Only the bastion's flow falls in the window from 11:00.
    const late: MapView = (await call('GET', `/v1/map?since=${at(61)}`)).json();
    expect(late.edges.map((e) => `${e.from}>${e.to}`)).toEqual([
      'workload:bastion>app=shop,role=db',
    ]);
  });

  it('colours the map by the provisioned revision, not the draft', async () => {
    domains.policy.putResource('t', 'policies', 'web', { ...POLICIES.web, egress: [] });
    const before = (await call('GET', '/v1/map')).json() as MapView;
    expect(before.edges.find((e) => e.port === 53)?.policy).toBe('would-deny');
    domains.revisions.provision('t', 'no egress rules for web');
    const after = (await call('GET', '/v1/map')).json() as MapView;
    expect(after.edges.find((e) => e.port === 53)?.policy).toBe('not-covered');
  });

  it('recommends policies from observed flows, with coverage; viewers may ask', async () => {
    const viewer = (await call('POST', '/v1/tokens', { name: 'v', role: 'viewer' })).json().token;
    const res = await call(
      'POST',
      '/v1/recommendations',
      { scope: { matchLabels: { role: 'db' } } },
      viewer,
    );
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json();
    // web-1, web-2 (allowed already), the bastion, and the office (an existing deny wins).
    expect(body.coverage).toEqual({
      observed: 4,
      allowedByCurrent: 2,
      allowedWithProposal: 3,
      ratio: 0.75,
    });
    expect(body.uncovered.map(brief)).toEqual(['db-1:192.168.7.7>db-1/tcp/5432']);
    expect(body.uncovered[0].src.ipLists).toEqual(['office']);
    expect(body.policies.map((p: { name: string }) => p.name)).toEqual(['recommended-shop-db']);
    expect(JSON.stringify(body.policies)).toContain('10.0.3.1/32');
    // Nothing stored.
    expect((await call('GET', '/v1/policies')).json().map((p: { name: string }) => p.name)).toEqual(
      ['db', 'web'],
    );
    // A viewer still may not write.
    expect((await call('POST', '/v1/provision', {}, viewer)).statusCode).toBe(403);

    const one = (
      await call('POST', '/v1/recommendations', { workload: 'web-2', groupBy: ['role'] })
    ).json();
    expect(one.coverage.observed).toBe(3);
    const since = (
      await call('POST', '/v1/recommendations', { workload: 'db-1', since: at(61) })
    ).json();
    expect(since.coverage.observed).toBe(1);
  });

  it('answers 404 for an unknown workload and 400 with the path for a bad selector', async () => {
    const missing = await call('POST', '/v1/recommendations', { workload: 'nope' });
    expect(missing.statusCode).toBe(404);
    const bad = await call('POST', '/v1/recommendations', {
      scope: { matchExpressions: [{ key: 'app', operator: 'Sideways' }] },
    });
    expect(bad.statusCode).toBe(400);
    const paths = bad.json().error.details.map((d: { path: string }) => d.path);
    expect(paths.length).toBeGreaterThan(0);
    expect(paths.every((p: string) => p.startsWith('scope.matchExpressions[0]'))).toBe(true);
    const neither = await call('POST', '/v1/recommendations', {});
    expect(neither.statusCode).toBe(400);
    const both = await call('POST', '/v1/recommendations', { workload: 'db-1', scope: {} });
    expect(both.statusCode).toBe(400);
  });
});

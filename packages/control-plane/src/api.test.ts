import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Workload } from '@bulkhead/policy';
import { type PolicyUpdate, SyncResponse } from '@bulkhead/proto';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApi } from './api.js';
import { createDomains, type Domains } from './domains.js';
import { createStreamRegistry, type StreamRegistry } from './fleet/streams.js';
import { createPki } from './pki.js';
import { createSqliteStores, type Stores } from './store/index.js';
import { silentLog } from './test-support.js';

const monitor = { ingress: 'monitor', egress: 'monitor' } as const;
const NO_IMPACT = {
  summary: { newlyBlocked: 0, newlyAllowed: 0, stillWouldDeny: 0, flows: 0 },
  groups: [],
};
const pg = { name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] };
const dbPolicy = {
  scope: { matchLabels: { app: 'db' } },
  ingress: [
    { action: 'allow', peers: [{ selector: { matchLabels: { app: 'web' } } }], services: ['pg'] },
  ],
};

describe('REST API', () => {
  let dir: string;
  let store: Stores;
  let streams: StreamRegistry;
  let domains: Domains;
  let app: FastifyInstance;
  let admin: string;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bh-api-'));
    store = createSqliteStores({ path: join(dir, 'bulkhead.db') });
    const pki = await createPki({ dir: join(dir, 'ca') });
    streams = createStreamRegistry();
    domains = createDomains({ stores: store, pki, streams, log: silentLog });
    admin = domains.access.bootstrapAdminToken()!;
    app = await createApi({ domains, log: silentLog });
  });
  afterEach(async () => {
    await app.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = (
    method: 'GET' | 'PUT' | 'POST' | 'PATCH' | 'DELETE',
    url: string,
    body?: unknown,
    token = admin,
  ) =>
    app.inject({
      method,
      url,
      headers: token ? { authorization: `Bearer ${token}` } : {},
      ...(body === undefined ? {} : { payload: body as object }),
    });

  /**
   * Registers a fake open stream for a workload, as if its agent had said Hello holding
   * nothing (so its first update is a full sync), and returns the updates it receives.
   */
  function listen(workload: string): PolicyUpdate[] {
    const got: PolicyUpdate[] = [];
    streams.add({
      agentId: `agent-${workload}`,
      workload,
      synced: '',
      send: (m) => got.push(SyncResponse.decode(m).update!),
      close: () => {},
    });
    return got;
  }

  /** A workload written as enrolment writes it (validated, published). */
  const addWorkload = (w: Workload) => domains.policy.changeWorkloads((ws) => ws.upsertWorkload(w));
  const desiredHash = async () => (await call('GET', '/v1/agents')).json()[0].desiredHash;

  it('serves /healthz and the OpenAPI document without a token, everything else only with one', async () => {
    expect((await call('GET', '/healthz', undefined, '')).statusCode).toBe(200);
    const doc = await call('GET', '/docs/json', undefined, '');
    expect(doc.statusCode).toBe(200);
    expect(Object.keys(doc.json().paths)).toContain('/v1/policies/{name}');
    const res = await call('GET', '/v1/workloads', undefined, '');
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual({
      error: { code: 'UNAUTHENTICATED', message: 'missing bearer token', details: [] },
    });
    expect((await call('GET', '/v1/workloads', undefined, 'bh_wrong')).statusCode).toBe(401);
  });

  it('lets a viewer read but not write, and a deleted token stops working', async () => {
    const created = await call('POST', '/v1/tokens', { name: 'dashboards', role: 'viewer' });
    expect(created.statusCode).toBe(201);
    const { id, token } = created.json();
    expect(token).toMatch(/^bh_/);
    expect((await call('GET', '/v1/services', undefined, token)).statusCode).toBe(200);
    const put = await call('PUT', '/v1/services/pg', pg, token);
    expect(put.statusCode).toBe(403);
    expect(put.json().error.code).toBe('FORBIDDEN');
    expect(JSON.stringify((await call('GET', '/v1/tokens')).json())).not.toContain(token);
    expect((await call('DELETE', `/v1/tokens/${id}`)).statusCode).toBe(204);
    expect((await call('GET', '/v1/services', undefined, token)).statusCode).toBe(401);
  });

  it('names the offending field in validation errors', async () => {
    const bad = await call('PUT', '/v1/policies/db', {
      ...dbPolicy,
      ingress: [{ ...dbPolicy.ingress[0], action: 'alow' }],
    });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.code).toBe('VALIDATION_FAILED');
    expect(bad.json().error.details.map((d: { path: string }) => d.path)).toContain(
      'ingress[0].action',
    );

    const unknownRef = await call('PUT', '/v1/policies/db', dbPolicy);
    expect(unknownRef.statusCode).toBe(400);
    expect(unknownRef.json().error.details).toEqual([
      { path: 'ingress[0].services[0]', message: 'unknown service "pg"' },
    ]);

    const renamed = await call('PUT', '/v1/services/pg', { ...pg, name: 'postgres' });
    expect(renamed.statusCode).toBe(400);
    expect(renamed.json().error.details[0].path).toBe('name');

    const role = await call('POST', '/v1/tokens', { name: 'x', role: 'root' });
    expect(role.statusCode).toBe(400);
    expect(role.json().error.details.map((d: { path: string }) => d.path)).toContain('role');

    const extra = await call('POST', '/v1/enrollment-tokens', { ttl: 5 });
    expect(extra.statusCode).toBe(400);
    expect(extra.json().error.details).toEqual([{ path: 'ttl', message: 'is not a known field' }]);
  });

  it('stores resources, 404s unknown ones and 409s deleting a referenced service', async () => {
    const put = await call('PUT', '/v1/services/pg', { ports: pg.ports });
    expect(put.json()).toEqual({ ...pg, version: 1 });
    expect(put.headers.etag).toBe('"1"');
    expect((await call('PUT', '/v1/policies/db', dbPolicy)).statusCode).toBe(200);
    expect((await call('GET', '/v1/services/pg')).json()).toEqual({ ...pg, version: 1 });
    expect((await call('GET', '/v1/policies')).json()).toEqual([
      { ...dbPolicy, name: 'db', version: 1 },
    ]);

    const missing = await call('GET', '/v1/ip-lists/nope');
    expect(missing.statusCode).toBe(404);
    expect(missing.json().error.code).toBe('NOT_FOUND');
    expect((await call('GET', '/v1/no-such-route')).statusCode).toBe(404);

    const conflict = await call('DELETE', '/v1/services/pg');
    expect(conflict.statusCode).toBe(409);
    expect(conflict.json().error.code).toBe('CONFLICT');
    expect(conflict.json().error.message).toContain('policy db');

    expect((await call('DELETE', '/v1/policies/db')).statusCode).toBe(204);
    expect((await call('DELETE', '/v1/services/pg')).statusCode).toBe(204);
    expect((await call('DELETE', '/v1/services/pg')).statusCode).toBe(404);
  });

  it('audits every write with actor, before and after, newest first', async () => {
    await call('PUT', '/v1/services/pg', pg);
    await call('PUT', '/v1/services/pg', { ...pg, ports: [{ protocol: 'tcp', port: 5433 }] });
    await call('PUT', '/v1/services/bad', { ports: 'x' }); // refused: not audited
    const entries = (await call('GET', '/v1/audit?limit=2')).json();
    expect(entries).toHaveLength(2);
    expect(entries[0]).toMatchObject({
      actor: 'initial-admin',
      action: 'service.put',
      target: 'pg',
      before: pg,
      after: { ...pg, ports: [{ protocol: 'tcp', port: 5433 }] },
    });
    expect(entries[1]).toMatchObject({ action: 'service.put', before: null, after: pg });
    expect(entries[0].id).toBeGreaterThan(entries[1].id);
  });

  it('provisions revisions and pushes only to agents whose state changed', async () => {
    addWorkload({
      name: 'web',
      addresses: ['10.0.0.1'],
      labels: { app: 'web' },
      mode: monitor,
    });
    addWorkload({
      name: 'db',
      addresses: ['10.0.0.2'],
      labels: { app: 'db' },
      mode: monitor,
    });
    const webGot = listen('web');
    const dbGot = listen('db');

    const first = await call('POST', '/v1/provision', { note: 'baseline' });
    expect(first.statusCode).toBe(200);
    // No policy yet: the workloads' (empty) rule sets were published as they were added.
    expect(first.json()).toEqual({
      revision: 1,
      changed: [],
      unchanged: 2,
      impact: NO_IMPACT,
    });
    expect(webGot).toEqual([]);
    expect(dbGot).toEqual([]);

    await call('PUT', '/v1/services/pg', pg);
    await call('PUT', '/v1/policies/db', dbPolicy);
    const second = await call('POST', '/v1/provision', { note: 'db policy' });
    expect(second.json()).toMatchObject({ revision: 2, changed: ['db'], unchanged: 1 });
    expect(second.json().warnings).toBeUndefined();
    expect(dbGot.map((r) => [r.revision, r.full, r.last])).toEqual([[2, true, true]]);
    expect(webGot).toHaveLength(0);

    const bare = await app.inject({
      method: 'POST',
      url: '/v1/provision',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    });
    expect(bare.statusCode).toBe(400);
    expect(bare.json().error.details).toEqual([
      { path: 'note', message: 'is required: a non-empty string saying why' },
    ]);
    const blank = await call('POST', '/v1/provision', { note: '  ', confirm: 'yes' });
    expect(blank.json().error.details.map((d: { path: string }) => d.path)).toEqual([
      'note',
      'confirm',
    ]);
    const broken = await app.inject({
      method: 'POST',
      url: '/v1/provision',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      payload: '{"note":',
    });
    expect(broken.statusCode).toBe(400);
    expect(broken.json().error.code).toBe('VALIDATION_FAILED');

    const again = await call('POST', '/v1/provision', { note: 'no-op' });
    expect(again.json()).toMatchObject({ revision: 3, changed: [], unchanged: 2 });
    expect(dbGot).toHaveLength(1);

    const rev = (await call('GET', '/v1/revisions/2')).json();
    expect(rev).toMatchObject({ revision: 2, author: 'initial-admin', note: 'db policy' });
    expect(rev.snapshot.policies).toEqual([{ ...dbPolicy, name: 'db' }]);
    expect(
      (await call('GET', '/v1/revisions')).json().map((r: { revision: number }) => r.revision),
    ).toEqual([3, 2, 1]);

    const rs = (await call('GET', '/v1/rulesets/db')).json();
    expect(rs.ruleSet).toMatchObject({ workloadId: 'db', hash: dbGot[0]!.ruleSet!.hash });
    expect(rs.ruleSet.rules[0]).toMatchObject({ id: 'db/ingress/0', groups: [expect.any(String)] });
    expect(rs.groups).toEqual([
      { id: rs.ruleSet.rules[0].groups[0], ranges: [{ from: '10.0.0.1', to: '10.0.0.1' }] },
    ]);
  });

  it('recompiles a workload whose mode is patched against the latest revision, not the drafts', async () => {
    addWorkload({
      name: 'db',
      addresses: ['10.0.0.2'],
      labels: { app: 'db' },
      mode: monitor,
    });
    await call('POST', '/v1/provision', { note: 'empty' });
    const got = listen('db');
    await call('PUT', '/v1/services/pg', pg);
    await call('PUT', '/v1/policies/db', dbPolicy); // a draft: not provisioned
    const res = await call('PATCH', '/v1/workloads/db?provision=true', {
      mode: { ingress: 'enforce' },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json().mode).toEqual({ ingress: 'enforce', egress: 'monitor' });
    expect(got).toHaveLength(1);
    expect(got[0]!.ruleSet!.ingressMode).toBe(2);
    expect(got[0]!.ruleSet!.rules).toEqual([]);

    const bad = await call('PATCH', '/v1/workloads/db', { labels: { 'not ok': 'x' } });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.details[0].path).toMatch(/^labels/);
    expect((await call('PATCH', '/v1/workloads/nope', { labels: {} })).statusCode).toBe(404);
  });

  it('reports an in-sync agent at the newest revision that left its RuleSet unchanged', async () => {
    addWorkload({
      name: 'web',
      addresses: ['10.0.0.1'],
      labels: { app: 'web' },
      mode: monitor,
    });
    addWorkload({
      name: 'db',
      addresses: ['10.0.0.2'],
      labels: { app: 'db' },
      mode: monitor,
    });
    store.fleet.createAgent({ id: 'a-web', workload: 'web', hostname: 'web', certSerial: '1' });
    const webGot = listen('web');
    await call('POST', '/v1/provision', { note: 'empty' });
    const webHash = await desiredHash();
    store.fleet.recordAck('a-web', {
      revision: 1,
      hash: webHash,
      error: '',
      applyMicros: 1,
    });
    await call('PUT', '/v1/services/pg', pg);
    await call('PUT', '/v1/policies/db', dbPolicy);
    expect((await call('POST', '/v1/provision', { note: 'db' })).json().changed).toEqual(['db']);
    expect(webGot).toHaveLength(0);
    expect((await call('GET', '/v1/agents')).json()).toEqual([
      expect.objectContaining({
        id: 'a-web',
        inSync: true,
        appliedRevision: 2,
        desiredRevision: 2,
      }),
    ]);
    // A stale agent keeps the revision it reported.
    store.fleet.recordAck('a-web', { revision: 1, hash: 'old', error: '', applyMicros: 1 });
    expect((await call('GET', '/v1/agents')).json()).toEqual([
      expect.objectContaining({ inSync: false, appliedRevision: 1, desiredHash: webHash }),
    ]);
  });

  it('rolls back to an older revision as a new revision, pushing the old RuleSet content', async () => {
    addWorkload({
      name: 'db',
      addresses: ['10.0.0.2'],
      labels: { app: 'db' },
      mode: monitor,
    });
    const got = listen('db');
    await call('POST', '/v1/provision', { note: 'empty' });
    await call('PUT', '/v1/services/pg', pg);
    await call('PUT', '/v1/policies/db', dbPolicy);
    await call('POST', '/v1/provision', { note: 'db' });
    expect((await call('POST', '/v1/revisions/1/rollback')).json().error.details[0].path).toBe(
      'note',
    );
    const res = await call('POST', '/v1/revisions/1/rollback', { note: 'back to empty' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ revision: 3, changed: ['db'], unchanged: 0, impact: NO_IMPACT });
    expect(got.map((r) => [r.full, r.ruleSet?.rules.length])).toEqual([
      [true, 1],
      [false, 0],
    ]);
    expect(got[1]!.baseHash).toBe(got[0]!.hash);
    // The rule named a group; the agent drops it with the rule.
    expect(got[1]!.groups).toEqual([expect.objectContaining({ deleted: true, added: [] })]);
    expect((await call('GET', '/v1/policies')).json()).toEqual([]);
    expect((await call('GET', '/v1/revisions/3')).json().note).toBe('back to empty');
    expect((await call('POST', '/v1/revisions/9/rollback', { note: 'x' })).statusCode).toBe(404);
  });

  it('filters the audit log by id or by time', async () => {
    await call('PUT', '/v1/services/a', { ports: pg.ports });
    const [first] = (await call('GET', '/v1/audit')).json();
    await call('PUT', '/v1/services/b', { ports: pg.ports });
    const byId = (await call('GET', `/v1/audit?since=${first.id}`)).json();
    expect(byId.map((e: { target: string }) => e.target)).toEqual(['b']);
    const byTime = (await call('GET', '/v1/audit?since=2000-01-01T00:00:00Z')).json();
    expect(byTime.map((e: { target: string }) => e.target)).toEqual(['b', 'a', expect.any(String)]);
    const bad = await call('GET', '/v1/audit?since=yesterday');
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.details[0].path).toBe('since');
  });

  it('refuses to provision a state that does not compile', async () => {
    // Bypasses the PUT-time reference check, as a dangling reference left by older data would.
    store.policy.putResource('policies', 'db', { ...dbPolicy, name: 'db' });
    const res = await call('POST', '/v1/provision', { note: 'broken' });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.code).toBe('VALIDATION_FAILED');
    expect(res.json().error.details.length).toBeGreaterThan(0);
    expect(store.revisions.listRevisions()).toEqual([]);
  });

  it('refuses a draft that breaks after a valid revision with what the whole check finds', async () => {
    // Validation checks a provision against the provisioned state where it differs: a policy
    // broken since is still found, with the whole check's diagnostics.
    await call('PUT', '/v1/services/pg', pg);
    await call('PUT', '/v1/policies/db', dbPolicy);
    expect((await call('POST', '/v1/provision', { note: 'ok' })).statusCode).toBe(200);
    store.policy.putResource('policies', 'db', {
      ...dbPolicy,
      name: 'db',
      ingress: [{ ...dbPolicy.ingress[0], services: ['pg', 'gone'] }],
    });
    const res = await call('POST', '/v1/provision', { note: 'broken' });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.details).toEqual([
      { path: 'policies[0].ingress[0].services[1]', message: "unknown service 'gone'" },
    ]);
    expect(store.revisions.listRevisions().map((r) => r.revision)).toEqual([1]);
  });

  it('shows enrollment tokens once and never lists the secret', async () => {
    const res = await call('POST', '/v1/enrollment-tokens', {
      labels: { env: 'prod' },
      maxUses: 2,
    });
    expect(res.statusCode).toBe(201);
    const { id, token } = res.json();
    expect(token).toMatch(/^bhe_/);
    const list = (await call('GET', '/v1/enrollment-tokens')).json();
    expect(list).toMatchObject([{ id, labels: { env: 'prod' }, maxUses: 2, uses: 0 }]);
    expect(JSON.stringify(list)).not.toContain(token);
    expect((await call('DELETE', `/v1/enrollment-tokens/${id}`)).statusCode).toBe(204);
    expect((await call('GET', '/v1/enrollment-tokens')).json()).toEqual([]);
  });

  it('hides the cause of an unexpected error behind a generic 500', async () => {
    store.close();
    const res = await call('GET', '/v1/services');
    expect(res.statusCode).toBe(500);
    expect(res.json()).toEqual({
      error: { code: 'INTERNAL', message: 'internal error', details: [] },
    });
  });
});

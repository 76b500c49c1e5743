import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApi } from './api.js';
import { createDomains } from './domains.js';
import { createStreamRegistry } from './fleet/streams.js';
import { createPki } from './pki.js';
import { createSqliteStores, type Stores } from './store/index.js';
import { silentLog } from './test-support.js';

const monitor = { ingress: 'monitor', egress: 'monitor' } as const;
const DAY = 86_400_000;
const pg = { name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] };
const flexlm = { name: 'flexlm', ports: [{ protocol: 'tcp', port: 27000 }] };
const licenseServers = { name: 'license-servers', cidrs: ['192.0.2.10/32'] };
const allowFrom = (app: string) => ({ selector: { matchLabels: { app } } });

describe('policy lifecycle API', () => {
  let dir: string;
  let store: Stores;
  let app: FastifyInstance;
  let admin: string;
  let seq = 0;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bh-lifecycle-'));
    store = createSqliteStores({ path: join(dir, 'bulkhead.db') });
    const pki = await createPki({ dir: join(dir, 'ca') });
    const domains = createDomains({
      stores: store,
      pki,
      streams: createStreamRegistry(),
      log: silentLog,
    });
    admin = domains.access.bootstrapAdminToken()!;
    app = await createApi({ domains, log: silentLog });
    for (const [name, address, labels] of [
      ['billing', '10.0.0.10', { app: 'billing' }],
      ['web', '10.0.0.11', { app: 'web' }],
      ['db', '10.0.0.20', { app: 'db' }],
      ['batch', '10.0.0.30', { app: 'batch' }],
    ] as const) {
      store.policy.upsertWorkload({
        name,
        addresses: [address],
        labels: { ...labels },
        mode: monitor,
      });
      store.fleet.createAgent({
        id: `agent-${name}`,
        workload: name,
        hostname: name,
        certSerial: name,
      });
    }
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
    headers: Record<string, string> = {},
  ) =>
    app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${admin}`, ...headers },
      ...(body === undefined ? {} : { payload: body as object }),
    });

  /** A connection an agent reported, ingested through the flow store like real telemetry. */
  function observe(
    workload: string,
    f: { direction: 'ingress' | 'egress'; src: string; dst: string; port: number },
    daysAgo: number,
    connections = 3,
  ): void {
    const at = new Date(Date.now() - daysAgo * DAY).toISOString();
    const added = store.fleet.addTelemetry(`agent-${workload}`, ++seq, {
      counters: [],
      flows: [
        {
          ...f,
          protocol: 6,
          verdict: 'would-deny',
          ruleId: '',
          connections,
          bytes: 100,
          firstSeen: at,
          lastSeen: at,
        },
      ],
    });
    expect(added).toBe(true);
  }

  async function lastAudit(action: string) {
    const entries = (await call('GET', '/v1/audit?limit=50')).json() as {
      action: string;
      after: Record<string, unknown>;
      before: unknown;
    }[];
    return entries.find((e) => e.action === action);
  }

  it('outage 1: enforcing egress on a host whose policy misses the license server is refused until confirmed', async () => {
    // A weekly license check, seen once, six days ago.
    observe(
      'billing',
      { direction: 'egress', src: '10.0.0.10', dst: '192.0.2.10', port: 27000 },
      6,
    );
    await call('PUT', '/v1/services/pg', pg);
    await call('PUT', '/v1/services/flexlm', flexlm);
    await call('PUT', '/v1/ip-lists/license-servers', licenseServers);
    const billing = {
      scope: { matchLabels: { app: 'billing' } },
      egress: [{ action: 'allow', peers: [allowFrom('db')], services: ['pg'] }],
    };
    expect((await call('PUT', '/v1/policies/billing', billing)).statusCode).toBe(200);
    // Everything is in monitor mode: provisioning blocks nothing, the flow stays would-deny.
    const prov = await call('POST', '/v1/provision', { note: 'billing egress' });
    expect(prov.statusCode).toBe(200);
    expect(prov.json().impact.summary).toEqual({
      newlyBlocked: 0,
      newlyAllowed: 0,
      stillWouldDeny: 1,
      flows: 1,
    });

    // A mode is drafted; `provision=true` provisions just that change, behind the gate.
    const refused = await call('PATCH', '/v1/workloads/billing?provision=true', {
      mode: { egress: 'enforce' },
    });
    expect(refused.statusCode).toBe(409);
    const error = refused.json().error;
    expect(error.code).toBe('IMPACT_CONFIRMATION_REQUIRED');
    expect(error.details).toHaveLength(1);
    expect(error.impact.summary.newlyBlocked).toBe(1);
    expect(error.impact.groups[0]).toEqual({
      change: 'newly-blocked',
      src: 'app=billing',
      dst: 'ip-list:license-servers',
      protocol: 'tcp',
      port: 27000,
      connections: 3,
      lastSeen: expect.any(String),
      rules: [{ workload: 'billing', direction: 'egress', ruleId: 'no rule' }],
      flows: 1,
    });
    expect((await call('GET', '/v1/workloads/billing')).json().mode.egress).toBe('monitor');

    // The fix, checked before it is written: a candidate that also allows the license server.
    const fixed = {
      ...billing,
      egress: [
        ...billing.egress,
        { action: 'allow', peers: [{ ipList: 'license-servers' }], services: ['flexlm'] },
      ],
    };
    const whatIf = await call('POST', '/v1/impact', {
      target: {
        resources: [
          { kind: 'Policy', name: 'billing', ...fixed },
          { kind: 'Workload', name: 'billing', mode: { egress: 'enforce' } },
        ],
      },
    });
    expect(whatIf.statusCode).toBe(200);
    expect(whatIf.json().summary).toMatchObject({ newlyBlocked: 0, newlyAllowed: 1 });

    const confirmed = await call('PATCH', '/v1/workloads/billing?provision=true&confirm=true', {
      mode: { egress: 'enforce' },
    });
    expect(confirmed.statusCode).toBe(200);
    expect(confirmed.json().mode.egress).toBe('enforce');
    expect(confirmed.json().provisioned.impact.summary.newlyBlocked).toBe(1);
    expect((await lastAudit('workload.patch'))?.after).toMatchObject({
      mode: { egress: 'enforce' },
    });
    expect((await lastAudit('revision.provision'))?.after).toMatchObject({
      confirmed: true,
      impact: { newlyBlocked: 1 },
    });
  });

  it('outage 2: provisioning a policy that forgets the monthly batch job is refused, then confirmed', async () => {
    await call('PUT', '/v1/services/pg', pg);
    const db = (apps: string[]) => ({
      scope: { matchLabels: { app: 'db' } },
      ingress: [{ action: 'allow', peers: apps.map(allowFrom), services: ['pg'] }],
    });
    await call('PUT', '/v1/policies/db', db(['web', 'batch']));
    await call('PATCH', '/v1/workloads/db', { mode: { ingress: 'enforce' } });
    await call('POST', '/v1/provision', { note: 'db: web and batch' });
    // The month-end job, last run 20 days ago; web every day. Both ends reported the batch flow.
    observe('batch', { direction: 'egress', src: '10.0.0.30', dst: '10.0.0.20', port: 5432 }, 20);
    observe('db', { direction: 'ingress', src: '10.0.0.30', dst: '10.0.0.20', port: 5432 }, 20);
    observe('db', { direction: 'ingress', src: '10.0.0.11', dst: '10.0.0.20', port: 5432 }, 0, 50);

    await call('PUT', '/v1/policies/db', db(['web']));
    const refused = await call('POST', '/v1/provision', { note: 'db: tighten' });
    expect(refused.statusCode).toBe(409);
    const error = refused.json().error;
    expect(error.code).toBe('IMPACT_CONFIRMATION_REQUIRED');
    expect(error.impact.summary).toMatchObject({ newlyBlocked: 1, flows: 2 });
    expect(error.impact.groups[0]).toMatchObject({
      change: 'newly-blocked',
      src: 'app=batch',
      dst: 'app=db',
      protocol: 'tcp',
      port: 5432,
      rules: [{ workload: 'db', direction: 'ingress', ruleId: 'no rule' }],
      flows: 1,
    });
    expect((await call('GET', '/v1/revisions')).json()).toHaveLength(1);

    // The same question asked directly; a window of the last day does not see the batch job.
    const report = (await call('POST', '/v1/impact', {})).json();
    expect(report).toEqual(error.impact);
    const lastDay = await call('POST', '/v1/impact', {
      target: 'draft',
      since: new Date(Date.now() - DAY).toISOString(),
    });
    expect(lastDay.json().summary).toMatchObject({ newlyBlocked: 0, flows: 1 });

    const ok = await call('POST', '/v1/provision', { note: 'db: tighten', confirm: true });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toMatchObject({ revision: 2, impact: { summary: { newlyBlocked: 1 } } });
    const audit = await lastAudit('revision.provision');
    expect(audit?.after).toMatchObject({
      note: 'db: tighten',
      confirmed: true,
      impact: { newlyBlocked: 1, flows: 2 },
    });

    // Rolling back lets batch in again (nothing blocked): no confirmation needed. Batch's own
    // egress has no policy and is in monitor mode, so the flow is still would-deny there.
    const back = await call('POST', '/v1/revisions/1/rollback', { note: 'batch broke' });
    expect(back.statusCode).toBe(200);
    expect(back.json().impact.summary).toMatchObject({ newlyBlocked: 0, stillWouldDeny: 2 });
    expect(back.json().impact.groups).toContainEqual(
      expect.objectContaining({
        change: 'still-would-deny',
        src: 'app=batch',
        rules: [{ workload: 'batch', direction: 'egress', ruleId: 'no rule' }],
        noPolicy: [{ workload: 'batch', direction: 'egress' }],
      }),
    );
    // And rolling forward again is impact-checked like a provision.
    const forward = await call('POST', '/v1/revisions/2/rollback', { note: 'again' });
    expect(forward.statusCode).toBe(409);
    expect(forward.json().error.code).toBe('IMPACT_CONFIRMATION_REQUIRED');
    expect((await call('GET', '/v1/revisions')).json()).toHaveLength(3);
    expect((await call('GET', '/v1/policies/db')).json().ingress[0].peers).toHaveLength(2);
  });

  it('names the end whose direction has no policy, in the state the impact is judged against', async () => {
    await call('PUT', '/v1/services/pg', pg);
    await call('PUT', '/v1/policies/db', {
      scope: { matchLabels: { app: 'db' } },
      ingress: [{ action: 'allow', peers: [allowFrom('web')], services: ['pg'] }],
    });
    await call('POST', '/v1/provision', { note: 'db: web' });
    observe('web', { direction: 'egress', src: '10.0.0.11', dst: '10.0.0.20', port: 5432 }, 0);
    const impactOf = async (mode: object) =>
      (
        await call('POST', '/v1/impact', {
          target: { resources: [{ kind: 'Workload', name: 'web', mode }] },
        })
      ).json().groups;
    const web = [{ workload: 'web', direction: 'egress' }];
    const rules = [{ workload: 'web', direction: 'egress', ruleId: 'no rule' }];
    // db lets web in; web's egress passes only by monitor mode, and has no policy.
    expect(await impactOf({})).toEqual([
      expect.objectContaining({ change: 'still-would-deny', rules, noPolicy: web }),
    ]);
    // Enforced, the same gap blocks it.
    expect(await impactOf({ egress: 'enforce' })).toEqual([
      expect.objectContaining({ change: 'newly-blocked', rules, noPolicy: web }),
    ]);
    // Once web's egress has a policy (that does not allow db), the default deny is a rule gap.
    await call('PUT', '/v1/policies/web', {
      scope: { matchLabels: { app: 'web' } },
      egress: [{ action: 'allow', peers: [allowFrom('batch')], services: ['pg'] }],
    });
    const [group] = await impactOf({});
    expect(group).toMatchObject({ change: 'still-would-deny', rules });
    expect(group).not.toHaveProperty('noPolicy');
  });

  it('shows the draft against the latest revision and discards it back to the snapshot', async () => {
    await call('PUT', '/v1/services/pg', pg);
    await call('PUT', '/v1/policies/db', {
      scope: { matchLabels: { app: 'db' } },
      ingress: [{ action: 'allow', peers: [allowFrom('web')], services: ['pg'] }],
    });
    expect((await call('GET', '/v1/draft')).json().basedOn).toBe(0);
    await call('POST', '/v1/provision', { note: 'one' });
    const snapshot = (await call('GET', '/v1/policies')).json();
    expect((await call('GET', '/v1/draft')).json()).toEqual({ basedOn: 1, changes: [] });

    await call('PUT', '/v1/policies/db', {
      scope: { matchLabels: { app: 'db' } },
      ingress: [{ action: 'allow', peers: [allowFrom('batch')], services: ['pg'] }],
    });
    await call('PUT', '/v1/services/dns', { ports: [{ protocol: 'udp', port: 53 }] });
    const draft = (await call('GET', '/v1/draft')).json();
    expect(draft.basedOn).toBe(1);
    expect(draft.changes).toEqual([
      expect.objectContaining({
        kind: 'Policy',
        name: 'db',
        change: 'changed',
        fields: ['ingress'],
        rules: { added: [], removed: [], changed: ['db/ingress/0'] },
      }),
      expect.objectContaining({ kind: 'Service', name: 'dns', change: 'added' }),
    ]);

    const discarded = await call('DELETE', '/v1/draft');
    expect(discarded.statusCode).toBe(200);
    expect(discarded.json()).toEqual({ discarded: draft.changes });
    // Same content; the discard was a write, so the version moved on (1, edit 2, discard 3).
    const policies = (await call('GET', '/v1/policies')).json();
    expect(policies.map(({ version, ...p }: { version: number }) => p)).toEqual(
      snapshot.map(({ version, ...p }: { version: number }) => p),
    );
    expect(policies[0].version).toBe(3);
    expect((await call('GET', '/v1/services/dns')).statusCode).toBe(404);
    expect((await call('GET', '/v1/draft')).json()).toEqual({ basedOn: 1, changes: [] });
    const audit = await lastAudit('draft.discard');
    expect(audit?.before).toEqual(draft.changes);
  });

  it('diffs two revisions and a revision against the draft, by object and by workload', async () => {
    await call('POST', '/v1/provision', { note: 'empty' });
    await call('PUT', '/v1/services/pg', pg);
    await call('PUT', '/v1/policies/db', {
      scope: { matchLabels: { app: 'db' } },
      ingress: [{ action: 'allow', peers: [allowFrom('web')], services: ['pg'] }],
    });
    await call('POST', '/v1/provision', { note: 'db' });

    const diff = await call('GET', '/v1/revisions/1/diff?to=2');
    expect(diff.statusCode).toBe(200);
    const body = diff.json();
    expect(body.from).toBe(1);
    expect(body.to).toBe(2);
    expect(body.objects.map((o: { kind: string; name: string; change: string }) => o)).toEqual([
      expect.objectContaining({ kind: 'Policy', name: 'db', change: 'added' }),
      expect.objectContaining({ kind: 'Service', name: 'pg', change: 'added' }),
    ]);
    expect(body.workloads).toEqual([
      expect.objectContaining({
        workload: 'db',
        change: 'changed',
        rulesAdded: ['db/ingress/0'],
        rulesRemoved: [],
        entriesAdded: 1,
        entriesRemoved: 0,
      }),
    ]);
    // The reverse undoes it; the draft equals revision 2, so nothing differs.
    const reverse = (await call('GET', '/v1/revisions/2/diff?to=1')).json();
    expect(reverse.workloads[0]).toMatchObject({ rulesRemoved: ['db/ingress/0'] });
    expect((await call('GET', '/v1/revisions/2/diff?to=draft')).json()).toEqual({
      from: 2,
      to: 'draft',
      objects: [],
      workloads: [],
    });
    // Each revision carries its diff against the previous one, with author and note.
    const rev2 = (await call('GET', '/v1/revisions/2')).json();
    expect(rev2.note).toBe('db');
    expect(rev2.changes).toEqual(body.objects);
    expect((await call('GET', '/v1/revisions/1')).json().changes).toEqual([]);
    expect((await call('GET', '/v1/revisions/2/diff?to=9')).statusCode).toBe(404);
    expect((await call('GET', '/v1/revisions/2/diff?to=latest')).statusCode).toBe(400);
  });

  it('names the bad part of an impact request', async () => {
    const bad = async (body: unknown) => (await call('POST', '/v1/impact', body)).json().error;
    expect((await bad({ target: 'tomorrow' })).details[0].path).toBe('target');
    expect((await bad({ target: { revision: 0 } })).details[0].path).toBe('target.revision');
    expect((await bad({ target: { revision: 7 } })).code).toBe('NOT_FOUND');
    const res = await bad({
      target: { resources: [{ kind: 'Policy', name: 'x', scope: 5 }, { kind: 'Nope' }] },
    });
    expect(res.details.map((d: { path: string }) => d.path)).toEqual([
      expect.stringMatching(/^target\.resources\[0\]\.scope/),
      'target.resources[1].kind',
    ]);
    expect((await bad({ since: 'soon' })).details[0].path).toBe('since');
    // A bare POST asks about the draft; viewers may ask (it stores nothing) but not discard.
    const bare = await app.inject({
      method: 'POST',
      url: '/v1/impact',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    });
    expect(bare.json().summary).toEqual({
      newlyBlocked: 0,
      newlyAllowed: 0,
      stillWouldDeny: 0,
      flows: 0,
    });
    const viewer = (await call('POST', '/v1/tokens', { name: 'v', role: 'viewer' })).json().token;
    const asViewer = { authorization: `Bearer ${viewer}` };
    expect((await call('POST', '/v1/impact', {}, asViewer)).statusCode).toBe(200);
    expect((await call('GET', '/v1/draft', undefined, asViewer)).statusCode).toBe(200);
    expect((await call('DELETE', '/v1/draft', undefined, asViewer)).statusCode).toBe(403);
  });

  it('refuses a write based on a stale version (If-Match or body version) with 409 CONFLICT', async () => {
    const first = await call('PUT', '/v1/services/pg', pg);
    expect(first.json().version).toBe(1);
    const got = await call('GET', '/v1/services/pg');
    expect(got.headers.etag).toBe('"1"');

    // Alice and Bob both read version 1; Alice writes first.
    const alice = await call(
      'PUT',
      '/v1/services/pg',
      { ...pg, ports: [{ protocol: 'tcp', port: 5433 }] },
      {
        'if-match': got.headers.etag as string,
      },
    );
    expect(alice.statusCode).toBe(200);
    expect(alice.headers.etag).toBe('"2"');
    const bob = await call(
      'PUT',
      '/v1/services/pg',
      { ...pg, ports: [{ protocol: 'tcp', port: 6432 }] },
      {
        'if-match': '"1"',
      },
    );
    expect(bob.statusCode).toBe(409);
    expect(bob.json().error).toEqual({
      code: 'CONFLICT',
      message: 'service/pg was changed by someone else (version 2, you sent 1)',
      details: [],
    });
    const viaBody = await call('PUT', '/v1/services/pg', { ...pg, version: 1 });
    expect(viaBody.json().error.message).toBe(
      'service/pg was changed by someone else (version 2, you sent 1)',
    );
    expect((await call('GET', '/v1/services/pg')).json().ports[0].port).toBe(5433);
    // The current version is accepted, and no If-Match at all is an unconditional write.
    expect((await call('PUT', '/v1/services/pg', { ...pg, version: 2 })).json().version).toBe(3);
    expect((await call('PUT', '/v1/services/pg', pg)).json().version).toBe(4);
    const staleDelete = await call('DELETE', '/v1/services/pg', undefined, { 'if-match': '"3"' });
    expect(staleDelete.statusCode).toBe(409);
    expect(
      (await call('DELETE', '/v1/services/pg', undefined, { 'if-match': '"4"' })).statusCode,
    ).toBe(204);
    expect((await call('GET', '/v1/services/pg')).statusCode).toBe(404);
    const garbage = await call('PUT', '/v1/services/pg', pg, { 'if-match': 'yesterday' });
    expect(garbage.json().error.details[0].path).toBe('If-Match');

    // Workloads: the agent's writes count too, so an editor sees them.
    const w = await call('GET', '/v1/workloads/web');
    expect(w.headers.etag).toBe(`"${w.json().version}"`);
    const v = w.json().version as number;
    const patched = await call(
      'PATCH',
      '/v1/workloads/web',
      { labels: { app: 'web', env: 'prod' } },
      {
        'if-match': `"${v}"`,
      },
    );
    expect(patched.statusCode).toBe(200);
    expect(patched.json().version).toBe(v + 1);
    const stale = await call('PATCH', '/v1/workloads/web', { labels: {}, version: v });
    expect(stale.statusCode).toBe(409);
    expect(stale.json().error.message).toBe(
      `workload/web was changed by someone else (version ${v + 1}, you sent ${v})`,
    );
    expect((await call('GET', '/v1/workloads/web')).json().labels).toEqual({
      app: 'web',
      env: 'prod',
    });
    const staleDel = await call('DELETE', '/v1/workloads/web', undefined, { 'if-match': `"${v}"` });
    expect(staleDel.statusCode).toBe(409);
  });
});

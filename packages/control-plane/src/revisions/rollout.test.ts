import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RolloutView } from '@bulkhead/api';
import { Mode } from '@bulkhead/proto';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApi } from '../api.js';
import { createDomains, type Domains } from '../domains.js';
import { createStreamRegistry } from '../fleet/streams.js';
import { createPki, type Pki } from '../pki.js';
import { createSqliteStores, type Stores } from '../store/index.js';
import { silentLog } from '../test-support.js';
import type { FlowDelta } from '../visibility/store.js';
import { planWaves } from './rollout-plan.js';

const T0 = Date.parse('2026-11-30T10:00:00Z');
const monitor = { ingress: 'monitor', egress: 'monitor' } as const;
const WORKLOADS = [
  ['web', '10.0.0.1', 'web'],
  ['db1', '10.0.0.2', 'db'],
  ['db2', '10.0.0.3', 'db'],
  ['cache', '10.0.0.4', 'cache'],
] as const;
const allowWeb = (app: string, port: number) => ({
  scope: { matchLabels: { app } },
  ingress: [
    {
      action: 'allow',
      peers: [{ selector: { matchLabels: { app: 'web' } } }],
      services: [{ protocol: 'tcp', port }],
    },
  ],
});

/** web -> cache tcp/6379 as the cache reported it. */
const cacheFlow = (verdict: FlowDelta['verdict'], at: number): FlowDelta => ({
  direction: 'ingress',
  src: '10.0.0.1',
  dst: '10.0.0.4',
  protocol: 6,
  port: 6379,
  verdict,
  ruleId: 'default',
  connections: 1,
  bytes: 60,
  firstSeen: new Date(at).toISOString(),
  lastSeen: new Date(at).toISOString(),
});

describe('staged rollout (fake clock)', () => {
  let dir: string;
  let store: Stores;
  let pki: Pki;
  let domains: Domains;
  let app: FastifyInstance;
  let admin: string;
  let t = T0;
  let seq = 0;
  const now = () => new Date(t);

  async function open(): Promise<void> {
    store = createSqliteStores({ path: join(dir, 'bulkhead.db'), now });
    domains = createDomains({
      stores: store,
      pki,
      streams: createStreamRegistry(),
      log: silentLog,
      now,
    });
    admin ??= domains.access.bootstrapAdminToken()!;
    app = await createApi({ domains, log: silentLog });
  }
  async function close(): Promise<void> {
    await app.close();
    store.close();
  }

  beforeEach(async () => {
    t = T0;
    dir = mkdtempSync(join(tmpdir(), 'bh-rollout-'));
    pki = await createPki({ dir: join(dir, 'ca') });
    // Workloads exist before the domains start, so the publisher holds their rule sets.
    const first = createSqliteStores({ path: join(dir, 'bulkhead.db'), now });
    for (const [name, address, label] of WORKLOADS) {
      first.policy.upsertWorkload({
        name,
        addresses: [address],
        labels: { app: label },
        mode: monitor,
      });
      first.fleet.createAgent({
        id: `agent-${name}`,
        workload: name,
        hostname: name,
        certSerial: name,
      });
    }
    first.close();
    admin = undefined as unknown as string;
    await open();
    await call('PUT', '/v1/policies/db', allowWeb('db', 5432));
    await call('PUT', '/v1/policies/cache', allowWeb('cache', 6379));
    expect((await call('POST', '/v1/provision', { note: 'r1' })).statusCode).toBe(200);
    // The draft drops the cache's allowance: rolled out, it breaks web -> cache.
    expect((await call('DELETE', '/v1/policies/cache')).statusCode).toBeLessThan(300);
  });
  afterEach(async () => {
    await close();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = (method: 'GET' | 'PUT' | 'POST' | 'PATCH' | 'DELETE', url: string, body?: unknown) =>
    app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${admin}` },
      ...(body === undefined ? {} : { payload: body as object }),
    });
  const revisionOf = (w: string) => domains.revisions.getRuleSet(w).ruleSet.revision;
  const followers = () =>
    Object.fromEntries(WORKLOADS.map(([w]) => [w, revisionOf(w)])) as Record<string, number>;
  const status = async () => (await call('GET', '/v1/rollouts/current')).json() as RolloutView;
  const auditActions = () =>
    store.access
      .listAudit({ limit: 100 })
      .map((e) => e.action)
      .filter((a) => a.startsWith('rollout.'))
      .reverse();
  /** The cache reports a flow as real telemetry would: stored, then told to the domains. */
  function report(flow: FlowDelta): void {
    expect(store.fleet.addTelemetry('agent-cache', ++seq, { counters: [], flows: [flow] })).toBe(
      true,
    );
    domains.rollouts.observed('cache', [flow]);
  }
  const start = (body: object = {}) =>
    call('POST', '/v1/rollouts', {
      note: 'drop cache',
      canary: 'app=db',
      waves: 1,
      watchSeconds: 60,
      confirm: true,
      ...body,
    });

  it('gives the canary the new revision, then each wave after its watch window, then completes', async () => {
    const started = await start();
    expect(started.statusCode).toBe(200);
    expect(started.json()).toMatchObject({
      revision: 2,
      baseRevision: 1,
      status: 'running',
      waves: [
        ['db1', 'db2'],
        ['cache', 'web'],
      ],
      wave: 0,
    });
    expect(followers()).toEqual({ web: 1, db1: 2, db2: 2, cache: 1 });

    t += 59_000;
    domains.rollouts.tick();
    expect((await status()).wave).toBe(0);
    t += 1_000;
    domains.rollouts.tick();
    expect(await status()).toMatchObject({ wave: 1, status: 'running' });
    expect(followers()).toEqual({ web: 2, db1: 2, db2: 2, cache: 2 });

    t += 60_000;
    domains.rollouts.tick();
    expect(await status()).toMatchObject({ status: 'completed', endRevision: 2 });
    expect(followers()).toEqual({ web: 2, db1: 2, db2: 2, cache: 2 });
    expect(auditActions()).toEqual(['rollout.start', 'rollout.wave', 'rollout.complete']);
    // Finished: provisioning works again.
    expect((await call('POST', '/v1/provision', { note: 'after' })).statusCode).toBe(200);
  });

  it('goes through the impact gate: unconfirmed, a change that blocks observed flows is refused', async () => {
    report(cacheFlow('allowed', T0 - 3_600_000));
    const enforce = await call('PATCH', '/v1/workloads/cache', { mode: { ingress: 'enforce' } });
    expect(enforce.statusCode).toBe(200);
    const refused = await start({ confirm: false });
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error.code).toBe('IMPACT_CONFIRMATION_REQUIRED');
    expect((await call('GET', '/v1/rollouts/current')).statusCode).toBe(404);
    expect(store.revisions.latestRevision()?.revision).toBe(1);
  });

  it('holds and rolls a workload back when it denies a flow that worked before the wave', async () => {
    report(cacheFlow('allowed', T0 - 3_600_000));
    await start();
    t += 60_000;
    domains.rollouts.tick();
    expect(revisionOf('cache')).toBe(2);

    // A denied flow nobody saw working is no reason to hold.
    report({ ...cacheFlow('denied', t), src: '10.0.0.9' });
    expect((await status()).status).toBe('running');

    report(cacheFlow('denied', t));
    const held = await status();
    expect(held).toMatchObject({ status: 'held', rolledBack: ['cache'], wave: 1 });
    expect(held.hold?.flows).toEqual([
      expect.objectContaining({
        workload: 'cache',
        src: '10.0.0.1',
        dst: '10.0.0.4',
        port: 6379,
        ruleId: 'default',
      }),
    ]);
    expect(held.hold?.message).toContain('10.0.0.1 -> 10.0.0.4 6/6379');
    expect(held.hold?.message).toContain('default deny');
    expect(followers()).toEqual({ web: 2, db1: 2, db2: 2, cache: 1 });
    const events = (await call('GET', '/v1/events?workload=cache')).json();
    expect(events[0]).toMatchObject({ code: 'ROLLOUT_HELD' });
    expect(auditActions()).toEqual(['rollout.start', 'rollout.wave', 'rollout.hold']);

    // Held: the watch window passing does not complete it.
    t += 600_000;
    domains.rollouts.tick();
    expect((await status()).status).toBe('held');
    // Resume retries the rolled-back workload on the new revision.
    expect((await call('POST', '/v1/rollouts/current/resume')).json()).toMatchObject({
      status: 'running',
      rolledBack: [],
    });
    expect(revisionOf('cache')).toBe(2);
  });

  it('pauses, refuses other revisions meanwhile, and aborts back to the base revision', async () => {
    await start();
    expect((await call('POST', '/v1/rollouts/current/pause')).json().status).toBe('paused');
    t += 120_000;
    domains.rollouts.tick();
    expect((await status()).wave).toBe(0);
    const busy = await call('POST', '/v1/provision', { note: 'meanwhile' });
    expect(busy.statusCode).toBe(409);
    expect(busy.json().error.message).toContain('rollout 1 is paused');
    expect((await start()).statusCode).toBe(409);

    const aborted = await call('POST', '/v1/rollouts/current/abort');
    expect(aborted.json()).toMatchObject({ status: 'aborted', endRevision: 3 });
    expect(followers()).toEqual({ web: 3, db1: 3, db2: 3, cache: 3 });
    // Revision 3 is revision 1 again; the draft keeps the attempted change.
    const r3 = (await call('GET', '/v1/revisions/3')).json();
    expect(r3.snapshot.policies.map((p: { name: string }) => p.name)).toEqual(['cache', 'db']);
    expect(domains.revisions.getRuleSet('cache').ruleSet.rules.length).toBeGreaterThan(0);
    expect((await call('POST', '/v1/rollouts/current/resume')).statusCode).toBe(409);
    expect(auditActions()).toEqual(['rollout.start', 'rollout.pause', 'rollout.abort']);
  });

  it('resumes after a control-plane restart from what it stored, watching the wave again', async () => {
    await start();
    await close();
    t += 30_000;
    await open();
    expect(followers()).toEqual({ web: 1, db1: 2, db2: 2, cache: 1 });
    // The guard heard nothing while it was down: the wave's window starts again.
    t += 30_000;
    domains.rollouts.tick();
    expect(followers()).toEqual({ web: 1, db1: 2, db2: 2, cache: 1 });
    t += 30_000;
    domains.rollouts.tick();
    expect(followers()).toEqual({ web: 2, db1: 2, db2: 2, cache: 2 });
    expect(auditActions()).toEqual(['rollout.start', 'rollout.restore', 'rollout.wave']);
  });

  describe('a draft that switches a mode and changes a label', () => {
    /** What a workload's agents hold: revision, ingress mode, the policies that select it. */
    const held = (w: string) => {
      const r = domains.revisions.getRuleSet(w).ruleSet;
      return {
        revision: r.revision,
        enforce: r.ingressMode === Mode.MODE_ENFORCE,
        policies: [...new Set(r.rules.map((rule) => rule.policy))],
      };
    };
    const R1 = { revision: 1, enforce: false };
    /** An agent moves its workload to a new address (live, not drafted). */
    const move = (name: string, address: string) =>
      domains.policy.changeWorkloads((ws) =>
        ws.upsertWorkload({ ...ws.getWorkload(name)!, addresses: [address] }),
      );

    beforeEach(async () => {
      // Policies as in revision 1; the cache turns enforcing and is labelled a db (the db
      // policy selects it instead of the cache one); web turns enforcing too.
      expect((await call('PUT', '/v1/policies/cache', allowWeb('cache', 6379))).statusCode).toBe(
        200,
      );
      const cache = { labels: { app: 'db' }, mode: { ingress: 'enforce' } };
      expect((await call('PATCH', '/v1/workloads/cache', cache)).statusCode).toBe(200);
      const web = { mode: { ingress: 'enforce' } };
      expect((await call('PATCH', '/v1/workloads/web', web)).statusCode).toBe(200);
      // The canary (draft labels app=db): db1, db2 and the cache; web in the wave after.
      expect((await start({ note: 'enforce' })).json().waves).toEqual([
        ['cache', 'db1', 'db2'],
        ['web'],
      ]);
      expect(held('cache')).toEqual({ revision: 2, enforce: true, policies: ['db'] });
      expect(held('web')).toEqual({ ...R1, policies: [] });
      // Address changes during the rollout reach each side with that side's labels and modes.
      move('web', '10.0.0.11');
      move('cache', '10.0.0.14');
      expect(held('web')).toEqual({ ...R1, policies: [] });
      expect(held('cache')).toEqual({ revision: 2, enforce: true, policies: ['db'] });
    });

    it('gives it to the canary first, to everyone on completion', async () => {
      t += 60_000;
      domains.rollouts.tick();
      expect(held('web')).toEqual({ revision: 2, enforce: true, policies: [] });
      t += 60_000;
      domains.rollouts.tick();
      expect((await status()).status).toBe('completed');
      expect(held('cache')).toEqual({ revision: 2, enforce: true, policies: ['db'] });
      expect(held('web')).toEqual({ revision: 2, enforce: true, policies: [] });
    });

    it('returns everyone to the base revision on abort', async () => {
      expect((await call('POST', '/v1/rollouts/current/abort')).statusCode).toBe(200);
      expect(held('cache')).toEqual({ revision: 3, enforce: false, policies: ['cache'] });
      expect(held('web')).toEqual({ revision: 3, enforce: false, policies: [] });
    });
  });

  it('refuses bad requests, naming the field', async () => {
    const both = await start({ percent: 10 });
    expect(both.statusCode).toBe(400);
    expect(both.json().error.details[0].path).toBe('percent');
    const none = await start({ canary: 'app=nothing' });
    expect(none.statusCode).toBe(400);
    expect(none.json().error.details[0].path).toBe('canary');
    expect((await start({ note: ' ' })).statusCode).toBe(400);
    expect((await start({ watchSeconds: 0 })).statusCode).toBe(400);
    expect((await call('POST', '/v1/rollouts/current/pause')).statusCode).toBe(409);
    expect(store.revisions.latestRevision()?.revision).toBe(1);
  });
});

describe('planWaves', () => {
  const w = (name: string, app = 'x') => ({
    name,
    addresses: [],
    labels: { app },
    mode: monitor,
  });
  const fleet = Array.from({ length: 20 }, (_, i) => w(`w${i}`));

  it('takes a deterministic share as the canary and splits the rest evenly', () => {
    const plan = { percent: 10, waves: 3, seed: '7' };
    const waves = planWaves(fleet, plan);
    expect(waves.map((x) => x.length)).toEqual([2, 6, 6, 6]);
    expect(new Set(waves.flat()).size).toBe(20);
    expect(planWaves([...fleet].reverse(), plan)).toEqual(waves);
    expect(planWaves(fleet, { ...plan, seed: '8' })).not.toEqual(waves);
  });

  it('takes the selected workloads as the canary and leaves out empty waves', () => {
    const waves = planWaves([w('a', 'billing'), w('b'), w('c', 'billing')], {
      canary: { matchLabels: { app: 'billing' } },
      percent: 10,
      waves: 5,
      seed: '1',
    });
    expect(waves).toEqual([['a', 'c'], ['b']]);
  });
});

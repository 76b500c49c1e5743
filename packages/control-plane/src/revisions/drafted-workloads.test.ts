// Issue 11 section 1 through REST: labels and modes are drafted, provisioned behind the impact
// gate (whole draft or one workload's change) and restored by a rollback; the agents get only
// what a revision changes, never a draft.
import type { Labels } from '@bulkhead/policy';
import { type PolicyUpdate, SyncResponse } from '@bulkhead/proto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createRestHarness, type RestHarness } from '../rest.test-util.js';

const monitor = { ingress: 'monitor', egress: 'monitor' } as const;
const ENFORCE = 2;
const MONITOR = 1;

describe('labels and modes in the draft and in revisions', () => {
  let h: RestHarness;
  let got: Record<string, PolicyUpdate[]>;

  /** A workload as enrolment writes it (published), with an agent whose updates are kept. */
  function enrol(name: string, address: string, labels: Labels) {
    h.domains.policy.changeWorkloads((w) =>
      w.upsertWorkload({ name, addresses: [address], labels, mode: monitor }),
    );
    h.store.fleet.createAgent({
      id: `agent-${name}`,
      workload: name,
      hostname: name,
      certSerial: name,
    });
    got[name] = [];
    h.streams.add({
      agentId: `agent-${name}`,
      workload: name,
      synced: h.domains.fleet.listAgents().find((a) => a.id === `agent-${name}`)?.desiredHash ?? '',
      send: (m) => got[name]!.push(SyncResponse.decode(m).update!),
      close: () => {},
    });
  }
  // biome-ignore lint/suspicious/noExplicitAny: JSON bodies are checked by the assertions
  const ok = async (res: Promise<{ statusCode: number; json(): any }>) => {
    const r = await res;
    expect(r.statusCode, JSON.stringify(r.json())).toBe(200);
    return r.json();
  };
  const workload = async (name: string) => ok(h.call('GET', `/v1/workloads/${name}`));
  const dbAllowsWeb = async () =>
    JSON.stringify((await ok(h.call('GET', '/v1/rulesets/db'))).groups).includes('10.0.0.1');

  beforeEach(async () => {
    h = await createRestHarness([]);
    got = {};
    enrol('web', '10.0.0.1', { app: 'web' });
    enrol('db', '10.0.0.2', { app: 'db' });
    await ok(h.call('PUT', '/v1/services/pg', { ports: [{ protocol: 'tcp', port: 5432 }] }));
    await ok(
      h.call('PUT', '/v1/policies/db', {
        scope: { matchLabels: { app: 'db' } },
        ingress: [
          {
            action: 'allow',
            peers: [{ selector: { matchLabels: { app: 'web' } } }],
            services: ['pg'],
          },
        ],
      }),
    );
    await ok(h.call('PATCH', '/v1/workloads/db', { mode: { ingress: 'enforce' } }));
    await ok(h.call('POST', '/v1/provision', { note: 'db takes pg from web, enforced' }));
    // web -> db, seen allowed: removing web's label would cut it.
    h.observe('db', [
      { direction: 'ingress', src: '10.0.0.1', dst: '10.0.0.2', port: 5432, verdict: 'allowed' },
    ]);
    for (const list of Object.values(got)) list.length = 0;
  });
  afterEach(() => h.close());

  it('a label change waits in the draft, is refused by the gate, then provisioned and sent', async () => {
    expect(await dbAllowsWeb()).toBe(true);
    const drafted = await ok(h.call('PATCH', '/v1/workloads/web', { labels: {} }));
    expect(drafted.labels).toEqual({});
    expect(got).toEqual({ web: [], db: [] });
    expect(await dbAllowsWeb()).toBe(true);
    const draft = await ok(h.call('GET', '/v1/draft'));
    expect(draft).toMatchObject({ basedOn: 1, changes: [{ kind: 'Workload', name: 'web' }] });

    const refused = await h.call('POST', '/v1/provision', { note: 'web unlabelled' });
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error.impact.summary.newlyBlocked).toBe(1);
    expect(got).toEqual({ web: [], db: [] });

    const done = await ok(
      h.call('POST', '/v1/provision', { note: 'web unlabelled', confirm: true }),
    );
    expect(done).toMatchObject({ revision: 2, changed: ['db'] });
    // Incremental: only db's rule set named web; web's own did not move.
    expect(got.db).toHaveLength(1);
    expect(got.web).toEqual([]);
    expect(await dbAllowsWeb()).toBe(false);
    const revision = await ok(h.call('GET', '/v1/revisions/2'));
    expect(revision.changes).toMatchObject([{ kind: 'Workload', name: 'web' }]);
  });

  it('the one-workload shortcut is gated and audited, and leaves other draft edits in the draft', async () => {
    await ok(h.call('PUT', '/v1/policies/other', { scope: { matchLabels: { app: 'x' } } }));
    const refused = await h.call('PATCH', '/v1/workloads/web?provision=true', { labels: {} });
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error.code).toBe('IMPACT_CONFIRMATION_REQUIRED');
    // Refused: not even the draft changed.
    expect((await workload('web')).labels).toEqual({ app: 'web' });

    const done = await ok(
      h.call('PATCH', '/v1/workloads/web?provision=true&confirm=true', {
        labels: {},
        note: 'web leaves',
      }),
    );
    expect(done.provisioned).toMatchObject({ revision: 2, changed: ['db'] });
    expect(got.db).toHaveLength(1);
    const audit = (await ok(h.call('GET', '/v1/audit'))) as { action: string; target: string }[];
    const entry = audit.find((e) => e.action === 'revision.provision' && e.target === '2');
    expect(entry).toMatchObject({
      target: '2',
      after: { note: 'web leaves', confirmed: true, impact: { newlyBlocked: 1 } },
    });
    const draft = await ok(h.call('GET', '/v1/draft'));
    expect(draft).toMatchObject({ basedOn: 2, changes: [{ kind: 'Policy', name: 'other' }] });
  });

  it('rollback restores the labels and modes of the revision, and the agents get them', async () => {
    await ok(h.call('PATCH', '/v1/workloads/db?provision=true', { mode: { ingress: 'monitor' } }));
    expect(got.db!.at(-1)!.ruleSet!.ingressMode).toBe(MONITOR);
    await ok(h.call('PATCH', '/v1/workloads/web?provision=true&confirm=true', { labels: {} }));
    expect(await dbAllowsWeb()).toBe(false);

    await ok(h.call('POST', '/v1/revisions/1/rollback', { note: 'back to 1' }));
    expect((await workload('web')).labels).toEqual({ app: 'web' });
    expect((await workload('db')).mode.ingress).toBe('enforce');
    expect(await dbAllowsWeb()).toBe(true);
    expect(got.db!.at(-1)!.ruleSet!.ingressMode).toBe(ENFORCE);
    expect((await ok(h.call('GET', '/v1/draft'))).changes).toEqual([]);
  });

  it('a workload created after a revision keeps the labels it came with until one gives others', async () => {
    enrol('batch', '10.0.0.3', { app: 'batch' });
    await ok(h.call('PATCH', '/v1/workloads/batch', { labels: { app: 'web' } }));
    const batchInDb = async () =>
      JSON.stringify((await ok(h.call('GET', '/v1/rulesets/db'))).groups).includes('10.0.0.3');
    expect(await batchInDb()).toBe(false);
    // Rolling back to a revision it was not part of gives it its first labels again.
    await ok(h.call('POST', '/v1/provision', { note: 'batch is a web' }));
    expect(await batchInDb()).toBe(true);
    await ok(h.call('POST', '/v1/revisions/1/rollback', { note: 'undo' }));
    expect((await workload('batch')).labels).toEqual({ app: 'batch' });
    expect(await batchInDb()).toBe(false);
  });
});

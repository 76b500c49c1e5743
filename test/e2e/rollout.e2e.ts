// Staged rollout on real nftables: a change that forgets the web -> cache dependency is rolled
// out with the db as canary (untouched by it), then to the rest in a second wave; the cache's
// agent denies the connection the baseline shows working, and the rollout holds and returns the
// cache to the previous revision by itself: the connection works again with nobody acting.
// Then an enforce switch alone is rolled out: the canary enforces first, everyone on completion.
import type { FlowView, RolloutView } from '@bulkhead/api';
import { type Bulkhead, type Lab, startBulkhead, until } from '@bulkhead/lab';
import { useLab } from '@bulkhead/lab/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

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

describe('rollout: a second wave that breaks a dependency is held and rolled back by itself', () => {
  const getLab = useLab({ hosts: ['cp', 'web', 'db', 'cache'] });
  let lab: Lab;
  let bh: Bulkhead;
  let db4: string;
  let cache4: string;

  beforeAll(async () => {
    lab = getLab();
    db4 = lab.hosts.db!.ipv4;
    cache4 = lab.hosts.cache!.ipv4;
    bh = await startBulkhead(lab, 'cp', {
      web: { labels: { app: 'web' } },
      db: { labels: { app: 'db' } },
      cache: { labels: { app: 'cache' } },
    });
    await lab.listen('db', 'tcp', 5432);
    await lab.listen('cache', 'tcp', 6379);
  });

  afterAll(async () => {
    await bh?.close();
  });

  it('enforces a policy under which web reaches db and cache, and observes both', async () => {
    await bh.api('PUT', '/v1/policies/db', allowWeb('db', 5432));
    await bh.api('PUT', '/v1/policies/cache', allowWeb('cache', 6379));
    await bh.api('POST', '/v1/provision', { note: 'web may use db and cache' });
    for (const w of ['db', 'cache']) {
      await bh.api('PATCH', `/v1/workloads/${w}`, { mode: { ingress: 'enforce' } });
    }
    await bh.waitInSync();
    expect(await lab.connect('web', db4, 'tcp', 5432)).toBe(true);
    expect(await lab.connect('web', cache4, 'tcp', 6379)).toBe(true);
    await until('the cache reported web -> cache allowed', async () => {
      const { flows } = await bh.api<{ flows: FlowView[] }>(
        'GET',
        '/v1/flows?workload=cache&verdict=allowed',
      );
      return flows.some((f) => f.port === 6379);
    });
  });

  it('holds the rollout at the second wave and returns the cache to the previous revision', async () => {
    // The draft forgets the cache's allowance (the cache keeps enforcing: default deny).
    await bh.api('DELETE', '/v1/policies/cache');
    const refused = await bh.cli(['rollout', 'start', '--note', 'drop cache policy']);
    expect(refused.code, refused.stdout + refused.stderr).toBe(4);
    const started = await bh.cli([
      ...['rollout', 'start', '--note', 'drop cache policy', '--canary', 'app=db'],
      ...['--waves', '1', '--watch', '3s', '--confirm', '-o', 'json'],
    ]);
    expect(started.code, started.stderr).toBe(0);
    const rollout = JSON.parse(started.stdout) as RolloutView;
    expect(rollout.waves).toEqual([['db'], ['cache', 'web']]);

    // Traffic keeps flowing as it would in production; nobody touches the rollout.
    const held = await until(
      'the rollout held',
      async () => {
        await lab.connect('web', cache4, 'tcp', 6379, { timeoutMs: 500 });
        const r = await bh.api<RolloutView>('GET', '/v1/rollouts/current');
        return r.status === 'held' ? r : undefined;
      },
      { timeoutMs: 60_000 },
    );
    expect(held.wave).toBe(1);
    expect(held.rolledBack).toEqual(['cache']);
    expect(held.hold?.flows).toEqual([
      expect.objectContaining({ workload: 'cache', dst: cache4, port: 6379, ruleId: 'default' }),
    ]);
    expect(held.hold?.message).toContain('default deny');

    await until('web -> cache works again', () => lab.connect('web', cache4, 'tcp', 6379), {
      timeoutMs: 30_000,
    });
    expect(await lab.connect('web', db4, 'tcp', 5432)).toBe(true);

    const status = await bh.cli(['rollout', 'status']);
    expect(status.stdout).toMatch(/held/);
    expect(status.stdout).toContain('rolled back: cache');
    const audit = await bh.api<{ action: string }[]>('GET', '/v1/audit?limit=100');
    expect(audit.map((a) => a.action)).toEqual(
      expect.arrayContaining(['rollout.start', 'rollout.wave', 'rollout.hold']),
    );
  });

  it('aborts: every workload returns to the revision before the rollout', async () => {
    const aborted = await bh.cli(['rollout', 'abort', '-o', 'json']);
    expect(aborted.code, aborted.stderr).toBe(0);
    const r = JSON.parse(aborted.stdout) as RolloutView;
    expect(r.status).toBe('aborted');
    await bh.waitInSync({ revision: r.endRevision });
    expect(await lab.connect('web', cache4, 'tcp', 6379)).toBe(true);
    expect(await lab.connect('web', db4, 'tcp', 5432)).toBe(true);
  });

  it('rolls out an enforce switch: the canary enforces first, the rest on completion', async () => {
    // The draft still holds the aborted change: only the modes (db and cache enforce) remain.
    await bh.api('PUT', '/v1/policies/cache', allowWeb('cache', 6379));
    const started = await bh.cli([
      ...['rollout', 'start', '--note', 'enforce db and cache', '--canary', 'app=db'],
      ...['--waves', '1', '--watch', '10s', '--confirm', '-o', 'json'],
    ]);
    expect(started.code, started.stderr).toBe(0);
    const rollout = JSON.parse(started.stdout) as RolloutView;
    await bh.waitInSync();
    // The canary enforces (cache -> db is denied); web still reaches both.
    expect(await lab.connect('cache', db4, 'tcp', 5432, { timeoutMs: 500 })).toBe(false);
    expect(await lab.connect('web', db4, 'tcp', 5432)).toBe(true);

    await until(
      'the rollout completed',
      async () => (await bh.api<RolloutView>('GET', '/v1/rollouts/current')).status === 'completed',
      { timeoutMs: 60_000 },
    );
    await bh.waitInSync({ revision: rollout.revision });
    // The cache enforces too, and keeps enforcing after completion.
    expect(await lab.connect('db', cache4, 'tcp', 6379, { timeoutMs: 500 })).toBe(false);
    expect(await lab.connect('web', cache4, 'tcp', 6379)).toBe(true);
  });
});

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createRestHarness, type RestHarness } from '../rest.test-util.js';

const pg = { kind: 'Service', name: 'pg', ports: [{ protocol: 'tcp', port: 5432 }] };
const dbFrom = (peers: object[]) => ({
  scope: { matchLabels: { app: 'db' } },
  ingress: [{ action: 'allow', peers, services: ['pg'] }],
});
const fromApp = (app: string) => ({ selector: { matchLabels: { app } } });

describe('POST /v1/impact with deletions', () => {
  let h: RestHarness;
  beforeEach(async () => {
    h = await createRestHarness([
      ['web', '10.0.0.11', { app: 'web' }],
      ['db', '10.0.0.20', { app: 'db' }],
      ['batch', '10.0.0.30', { app: 'batch' }],
    ]);
    // Provisioned: db takes pg from anyone in 10/8, and enforces it.
    const { kind: _, ...service } = pg;
    expect((await h.call('PUT', '/v1/services/pg', service)).statusCode).toBe(200);
    const open = dbFrom([{ cidr: '10.0.0.0/8' }]);
    expect((await h.call('PUT', '/v1/policies/db-open', open)).statusCode).toBe(200);
    expect((await h.call('POST', '/v1/provision', { note: 'open' })).statusCode).toBe(200);
    await h.call('PATCH', '/v1/workloads/db?provision=true&confirm=true', {
      mode: { ingress: 'enforce' },
    });
    h.observe('db', [
      { direction: 'ingress', src: '10.0.0.30', dst: '10.0.0.20', port: 5432, verdict: 'allowed' },
      { direction: 'ingress', src: '10.0.0.11', dst: '10.0.0.20', port: 5432, verdict: 'allowed' },
    ]);
  });
  afterEach(() => h.close());

  const impact = async (target: unknown) => {
    const res = await h.call('POST', '/v1/impact', { target });
    return { status: res.statusCode, body: res.json() };
  };
  // The repository's files: the same policy under a new name, web only.
  const files = [pg, { kind: 'Policy', name: 'db', ...dbFrom([fromApp('web')]) }];

  it('counts what prune deletes: the allow-all kept under its old name no longer hides the block', async () => {
    const kept = await impact({ resources: files });
    expect(kept.body.summary).toMatchObject({ newlyBlocked: 0, flows: 2 });

    const pruned = await impact({ resources: files, prune: true });
    expect(pruned.status).toBe(200);
    expect(pruned.body.summary).toMatchObject({ newlyBlocked: 1, flows: 2 });
    expect(pruned.body.groups[0]).toMatchObject({
      change: 'newly-blocked',
      src: 'app=batch',
      dst: 'app=db',
      rules: [{ workload: 'db', direction: 'ingress', ruleId: 'no rule' }],
    });
    // The same deletion named explicitly; the draft itself is untouched.
    const named = await impact({
      resources: files,
      deletes: [{ kind: 'Policy', name: 'db-open' }],
    });
    expect(named.body).toEqual(pruned.body);
    // Both at once delete it once, and nothing else (the service stays: the candidate compiles).
    const both = await impact({
      resources: files,
      prune: true,
      deletes: [{ kind: 'Policy', name: 'db-open' }],
    });
    expect(both.body).toEqual(pruned.body);
    const names = (await h.call('GET', '/v1/policies')).json().map((p: { name: string }) => p.name);
    expect(names).toEqual(['db-open']);
  });

  it('deletes alone are a candidate: the draft without those objects', async () => {
    const res = await impact({ deletes: [{ kind: 'Policy', name: 'db-open' }] });
    expect(res.body.summary).toMatchObject({ newlyBlocked: 2 });
    // A service a remaining policy names cannot go: the candidate does not compile.
    const broken = await impact({ deletes: [{ kind: 'Service', name: 'pg' }] });
    expect(broken.status).toBe(400);
  });

  it('names the bad part of a deletion', async () => {
    const paths = async (target: unknown) => {
      const { status, body } = await impact(target);
      expect(status).toBe(400);
      return body.error.details.map((d: { path: string }) => d.path);
    };
    expect(await paths({ deletes: 'db-open' })).toEqual(['target.deletes']);
    expect(
      await paths({
        resources: files,
        deletes: [
          { kind: 'Workload', name: 'db' },
          { kind: 'Policy', name: 'nope' },
          { kind: 'Service', name: 'pg' },
        ],
      }),
    ).toEqual(['target.deletes[0].kind', 'target.deletes[1].name', 'target.deletes[2].name']);
    expect(await paths({ resources: [], prune: 'yes', extra: 1 })).toEqual([
      'target.extra',
      'target.prune',
    ]);
  });
});

describe('POST /v1/impact connection counts', () => {
  it('adds up the rows one end reported under different verdicts and rules', async () => {
    const h = await createRestHarness([
      ['web', '10.0.0.11', { app: 'web' }],
      ['db', '10.0.0.20', { app: 'db' }],
    ]);
    try {
      const flow = {
        direction: 'ingress',
        src: '10.0.0.11',
        dst: '10.0.0.20',
        port: 5432,
      } as const;
      // 5 would-deny before a rule let web in, 3 allowed by it; web's egress saw all 8.
      h.observe('db', [
        { ...flow, verdict: 'would-deny', connections: 5 },
        { ...flow, verdict: 'allowed', ruleId: 'db/ingress/0', connections: 3 },
      ]);
      h.observe('web', [{ ...flow, direction: 'egress', connections: 8 }]);
      const res = await h.call('POST', '/v1/impact', {
        target: { resources: [{ kind: 'Workload', name: 'db', mode: { ingress: 'enforce' } }] },
      });
      expect(res.json().groups.map((g: { connections: number }) => g.connections)).toEqual([8]);
    } finally {
      await h.close();
    }
  });
});

import type { HygieneFinding, HygieneView } from '@bulkhead/api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createRestHarness, DAY, type RestHarness } from '../rest.test-util.js';

const selector = (labels: Record<string, string>) => ({ selector: { matchLabels: labels } });

describe('GET /v1/hygiene', () => {
  let h: RestHarness;
  let clock = Date.parse('2026-01-01T00:00:00Z');
  const ids: Record<string, string> = {};

  beforeEach(async () => {
    clock = Date.parse('2026-01-01T00:00:00Z');
    h = await createRestHarness(
      [
        ['web', '10.0.0.11', { app: 'web' }],
        ['web2', '10.0.0.12', { app: 'web' }],
        ['db', '10.0.0.20', { app: 'db' }],
        ['batch', '10.0.0.30', { app: 'batch' }],
      ],
      () => new Date(clock),
    );
    const ok = async (res: Promise<{ statusCode: number; json(): { id?: string } }>) => {
      const r = await res;
      expect(r.statusCode).toBeLessThan(300);
      return r.json();
    };
    await ok(h.call('PUT', '/v1/services/pg', { ports: [{ protocol: 'tcp', port: 5432 }] }));
    await ok(
      h.call('PUT', '/v1/policies/db', {
        scope: { matchLabels: { app: 'db' } },
        ingress: [
          { action: 'allow', peers: [{ cidr: '10.0.0.0/8' }], services: ['pg'] },
          // Everything it allows, db/ingress/0 already allows (and decides first).
          { action: 'allow', peers: [selector({ app: 'batch' })], services: ['pg'] },
          { action: 'deny', peers: [{ cidr: '192.0.2.0/24' }] },
        ],
      }),
    );
    await ok(
      h.call('PUT', '/v1/policies/web-out', {
        scope: { matchLabels: { app: 'web' } },
        egress: [{ action: 'allow', peers: [{ selector: {} }] }],
      }),
    );
    await ok(h.call('PATCH', '/v1/workloads/db', { mode: { ingress: 'enforce' } }));
    await ok(h.call('POST', '/v1/provision', { note: 'baseline' }));
    ids.viewer = (await ok(h.call('POST', '/v1/tokens', { name: 'dashboard', role: 'viewer' })))
      .id!;
    ids.oldToken = (await ok(h.call('POST', '/v1/enrollment-tokens', { ttlSeconds: 90 * 86_400 })))
      .id!;
    ids.expired = (await ok(h.call('POST', '/v1/enrollment-tokens', { ttlSeconds: 86_400 }))).id!;
    clock += 40 * DAY;
    ids.soon = (await ok(h.call('POST', '/v1/enrollment-tokens', { ttlSeconds: 3 * 86_400 }))).id!;
    for (const src of ['10.0.0.11', '10.0.0.12']) {
      const flow = { src, dst: '10.0.0.20', port: 5432, verdict: 'allowed' } as const;
      h.observe('db', [{ ...flow, direction: 'ingress', ruleId: 'db/ingress/0' }]);
      h.observe(src === '10.0.0.11' ? 'web' : 'web2', [
        { ...flow, direction: 'egress', ruleId: 'web-out/egress/0' },
      ]);
    }
  });
  afterEach(() => h.close());

  const audit = async (query = '') => {
    const res = await h.call('GET', `/v1/hygiene${query}`);
    expect(res.statusCode).toBe(200);
    return res.json() as HygieneView;
  };
  const of = (view: HygieneView, kind: HygieneFinding['kind']) =>
    view.findings.filter((f) => f.kind === kind);

  it('finds unused, broad and shadowed rules, each with what to change', async () => {
    const view = await audit();
    expect(view).toMatchObject({ days: 30, revision: 1 });
    expect(of(view, 'unused-rule')).toEqual([
      {
        kind: 'unused-rule',
        subject: 'db/ingress/2',
        detail: 'no connection in the last 30 days, and its counters never moved',
        fix: 'remove db/ingress/2 if the dependency it allows is gone',
      },
    ]);
    expect(of(view, 'shadowed-rule')).toEqual([
      expect.objectContaining({
        subject: 'db/ingress/1',
        detail: expect.stringContaining('db/ingress/0'),
      }),
    ]);
    expect(of(view, 'broad-rule')).toEqual([
      expect.objectContaining({
        subject: 'db/ingress/0 peers[0]',
        fix: 'narrow 10.0.0.0/8 to 10.0.0.8/29',
      }),
      expect.objectContaining({
        subject: 'web-out/egress/0',
        detail: 'allows any protocol and port; seen: tcp/5432',
        fix: "limit the rule's services to tcp/5432",
      }),
      expect.objectContaining({
        subject: 'web-out/egress/0 peers[0]',
        detail: 'selects every workload; seen: db',
      }),
    ]);
    // Flows older than the window do not count as hits.
    clock += 31 * DAY;
    expect(of(await audit(), 'unused-rule').map((f) => f.subject)).toEqual([
      'db/ingress/0',
      'db/ingress/2',
      'web-out/egress/0',
    ]);
  });

  it('finds workloads long in monitor mode and tokens never used or near expiry', async () => {
    const view = await audit();
    const monitor = of(view, 'monitor-too-long');
    expect(monitor.map((f) => f.subject)).toEqual(['batch', 'db', 'web', 'web2']);
    expect(monitor[1]).toEqual({
      kind: 'monitor-too-long',
      subject: 'db',
      detail: 'egress still in monitor mode 40 days after enrolment',
      fix: 'check `bulkhead impact` for it, then `bulkhead mode db --egress enforce --provision`',
    });
    // Tokens made in the same instant come in no particular order.
    const tokens = view.findings
      .filter((f) => f.kind.endsWith('token'))
      .map((f) => `${f.kind} ${f.subject.includes(ids.viewer!) ? 'viewer' : f.subject}`);
    expect(tokens.sort()).toEqual(
      [
        `expiring-enrolment-token ${ids.expired}`,
        `unused-enrolment-token ${ids.oldToken}`,
        `expiring-enrolment-token ${ids.soon}`,
        'unused-api-token viewer',
      ].sort(),
    );
    // A longer window: nothing is old enough yet.
    expect(of(await audit('?days=60'), 'monitor-too-long')).toEqual([]);
    expect((await h.call('GET', '/v1/hygiene?days=0')).statusCode).toBe(400);
  });
});

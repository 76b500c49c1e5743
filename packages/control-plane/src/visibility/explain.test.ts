import type { ExplainView } from '@bulkhead/api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createRestHarness, type RestHarness } from '../rest.test-util.js';

const fromApps = (...apps: string[]) => apps.map((app) => ({ selector: { matchLabels: { app } } }));
const dbPolicy = (...apps: string[]) => ({
  scope: { matchLabels: { app: 'db' } },
  ingress: [{ action: 'allow', peers: fromApps(...apps), services: ['pg'] }],
});

describe('POST /v1/explain', () => {
  let h: RestHarness;
  beforeEach(async () => {
    h = await createRestHarness([
      ['web', '10.0.0.11', { app: 'web' }],
      ['web2', '10.0.0.12', { app: 'web' }],
      ['db', '10.0.0.20', { app: 'db' }],
      ['batch', '10.0.0.30', { app: 'batch' }],
    ]);
    const ok = async (res: Promise<{ statusCode: number }>) =>
      expect((await res).statusCode).toBe(200);
    // Revision 1: db takes pg from web only, and enforces it.
    await ok(h.call('PUT', '/v1/services/pg', { ports: [{ protocol: 'tcp', port: 5432 }] }));
    await ok(h.call('PUT', '/v1/policies/db', dbPolicy('web')));
    await ok(h.call('PATCH', '/v1/workloads/db', { mode: { ingress: 'enforce' } }));
    await ok(h.call('POST', '/v1/provision', { note: 'db' }));
    // The draft: batch too, and web's egress gets a policy.
    await ok(h.call('PUT', '/v1/policies/db', dbPolicy('web', 'batch')));
    await ok(
      h.call('PUT', '/v1/policies/web-out', {
        scope: { matchLabels: { app: 'web' } },
        egress: [{ action: 'allow', peers: fromApps('db'), services: ['pg'] }],
      }),
    );
  });
  afterEach(() => h.close());

  const explain = async (body: object, headers?: Record<string, string>) => {
    const res = await h.call('POST', '/v1/explain', body, headers);
    return { status: res.statusCode, body: res.json() };
  };

  it('gives the verdict and the deciding rule at each end, provisioned and draft side by side', async () => {
    const { status, body } = await explain({
      from: 'web',
      to: 'db',
      protocol: 'tcp',
      port: 5432,
    });
    expect(status).toBe(200);
    const view = body as ExplainView;
    expect(view).toMatchObject({ protocol: 'tcp', port: 5432, truncated: false });
    expect(view.sides.map((s) => [s.state, s.revision])).toEqual([
      ['provisioned', 1],
      ['draft', undefined],
    ]);
    const [provisioned, draft] = view.sides.map((s) => s.pairs[0]!);
    expect(provisioned).toEqual({
      src: { address: '10.0.0.11', workload: 'web' },
      dst: { address: '10.0.0.20', workload: 'db' },
      verdict: 'not-covered',
      summary:
        "allowed at db's ingress, but web's egress has no policy (monitor mode lets it through)",
      ends: [
        {
          workload: 'web',
          direction: 'egress',
          mode: 'monitor',
          action: 'deny',
          policies: [],
          verdict: 'not-covered',
          reason: 'egress has no policy: default deny',
        },
        {
          workload: 'db',
          direction: 'ingress',
          mode: 'enforce',
          action: 'allow',
          ruleId: 'db/ingress/0',
          policies: ['db'],
          verdict: 'allowed',
          reason: 'allowed by db/ingress/0',
        },
      ],
    });
    expect(draft!.verdict).toBe('allowed');
    expect(draft!.summary).toBe("allowed at web's egress and db's ingress");
    expect(draft!.ends.map((e) => e.ruleId)).toEqual(['web-out/egress/0', 'db/ingress/0']);
  });

  it("says where an allowed flow is not covered because the other end's egress has no policy", async () => {
    // Revision 1: db's ingress allows web; web's egress has no policy (and is in monitor).
    h.observe('db', [
      {
        direction: 'ingress',
        src: '10.0.0.11',
        dst: '10.0.0.20',
        port: 5432,
        verdict: 'allowed',
        ruleId: 'db/ingress/0',
      },
    ]);
    const [flow] = (await h.call('GET', '/v1/flows')).json().flows;
    expect(flow).toMatchObject({
      verdict: 'allowed',
      noPolicy: [{ workload: 'web', direction: 'egress' }],
    });
    const edges = (await h.call('GET', '/v1/map?groupBy=app')).json().edges;
    expect(edges).toEqual([
      expect.objectContaining({
        from: 'app=web',
        to: 'app=db',
        policy: 'not-covered',
        noPolicy: ['egress'],
      }),
    ]);
    // Once web's egress has a policy that allows it (the draft, provisioned), nothing is missing.
    await h.call('POST', '/v1/provision', { note: 'web-out', confirm: true });
    const after = (await h.call('GET', '/v1/flows')).json().flows[0];
    expect(after.noPolicy).toBeUndefined();
    expect((await h.call('GET', '/v1/map?groupBy=app')).json().edges[0]).toMatchObject({
      policy: 'allowed',
    });
  });

  it('names the default deny of a policy that selects the end but allows nothing here', async () => {
    const { body } = await explain({ from: 'batch', to: 'db', protocol: 'tcp', port: 5432 });
    const [provisioned, draft] = (body as ExplainView).sides.map((s) => s.pairs[0]!);
    expect(provisioned!.verdict).toBe('denied');
    expect(provisioned!.summary).toBe("blocked at db's ingress");
    expect(provisioned!.ends[1]!.reason).toBe('default deny: no rule of db allows it');
    expect(draft!.ends[1]!.reason).toBe('allowed by db/ingress/0');
    // Another port is denied in both.
    const other = await explain({ from: 'batch', to: 'db', protocol: 'tcp', port: 22 });
    expect(
      other.body.sides.map((s: { pairs: { verdict: string }[] }) => s.pairs[0]!.verdict),
    ).toEqual(['denied', 'denied']);
  });

  it('takes labels and addresses, one revision or the draft alone', async () => {
    const labels = await explain({
      from: 'app=web',
      to: '10.0.0.20',
      protocol: 'tcp',
      port: 5432,
      draft: true,
    });
    const view = labels.body as ExplainView;
    expect(view.sides.map((s) => s.state)).toEqual(['draft']);
    expect(view.sides[0]!.pairs.map((p) => [p.src.workload, p.dst.workload, p.verdict])).toEqual([
      ['web', 'db', 'allowed'],
      ['web2', 'db', 'allowed'],
    ]);
    // An address no workload owns has no end: only web's egress speaks.
    const out = await explain({
      from: 'web',
      to: '192.0.2.1',
      protocol: 'udp',
      port: 53,
      revision: 1,
    });
    const side = (out.body as ExplainView).sides[0]!;
    expect(side).toMatchObject({ state: 'revision', revision: 1 });
    expect(side.pairs[0]!.dst).toEqual({ address: '192.0.2.1' });
    expect(side.pairs[0]!.ends.map((e) => [e.workload, e.direction])).toEqual([['web', 'egress']]);
    // Ports mean nothing to icmp.
    const ping = await explain({ from: 'web', to: 'db', protocol: 'icmp', port: 8 });
    expect(ping.body.port).toBe(0);
  });

  it('refuses what it cannot answer, and lets viewers ask', async () => {
    expect((await explain({ from: 'nope', to: 'db', protocol: 'tcp' })).status).toBe(404);
    expect((await explain({ from: 'app=none', to: 'db', protocol: 'tcp' })).status).toBe(404);
    const bad = await explain({ from: 'web', to: 'db', protocol: 'tls', port: 443 });
    expect(bad.body.error.details[0].path).toBe('protocol');
    const both = await explain({
      from: 'web',
      to: 'db',
      protocol: 'tcp',
      revision: 1,
      draft: true,
    });
    expect(both.status).toBe(400);
    const family = await explain({ from: 'web', to: '2001:db8::1', protocol: 'tcp' });
    expect(family.body.error.details[0].path).toBe('to');
    expect((await explain({ from: 'web', to: 'db', protocol: 'tcp', revision: 9 })).status).toBe(
      404,
    );
    const viewer = (await h.call('POST', '/v1/tokens', { name: 'v', role: 'viewer' })).json().token;
    const asViewer = await explain(
      { from: 'web', to: 'db', protocol: 'tcp', port: 5432 },
      { authorization: `Bearer ${viewer}` },
    );
    expect(asViewer.status).toBe(200);
  });
});

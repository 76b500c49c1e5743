import type { ExplainEnd, ExplainView, HygieneView } from '@bulkhead/api';
import { describe, expect, it } from 'vitest';
import { useCliFixture } from './test-util.js';

const fx = useCliFixture({ prefix: 'bulkhead-questions-' });
const cli = (argv: string[]) => fx.connected(argv);

const end = (
  workload: string,
  direction: 'ingress' | 'egress',
  reason: string,
  mode: 'monitor' | 'enforce' = 'monitor',
): ExplainEnd => ({
  workload,
  direction,
  mode,
  action: reason.startsWith('allowed') ? 'allow' : 'deny',
  policies: [],
  verdict: reason.startsWith('allowed') ? 'allowed' : 'not-covered',
  reason,
});

const VIEW: ExplainView = {
  from: 'web',
  to: 'db',
  protocol: 'tcp',
  port: 5432,
  truncated: false,
  sides: [
    {
      state: 'provisioned',
      revision: 3,
      pairs: [
        {
          src: { address: '10.0.0.11', workload: 'web' },
          dst: { address: '10.0.0.20', workload: 'db' },
          verdict: 'not-covered',
          summary:
            "allowed at db's ingress, but web's egress has no policy (monitor mode lets it through)",
          ends: [
            end('web', 'egress', 'egress has no policy: default deny'),
            end('db', 'ingress', 'allowed by db/ingress/0', 'enforce'),
          ],
        },
      ],
    },
    {
      state: 'draft',
      pairs: [
        {
          src: { address: '10.0.0.11', workload: 'web' },
          dst: { address: '10.0.0.20', workload: 'db' },
          verdict: 'allowed',
          summary: "allowed at web's egress and db's ingress",
          ends: [
            end('web', 'egress', 'allowed by web-out/egress/0'),
            end('db', 'ingress', 'allowed by db/ingress/0', 'enforce'),
          ],
        },
      ],
    },
  ],
};

describe('explain', () => {
  it('asks about the pair and prints the sides next to each other', async () => {
    fx.api.override = (r) => (r.url === '/v1/explain' ? { status: 200, body: VIEW } : undefined);
    const out = await cli(['explain', 'web', 'db', 'tcp/5432']);
    expect(out.code).toBe(0);
    expect(fx.api.requests.map((r) => [r.method, r.url, r.body])).toEqual([
      ['POST', '/v1/explain', { from: 'web', to: 'db', protocol: 'tcp', port: 5432 }],
    ]);
    expect(out.stdout).toBe(
      [
        'web (10.0.0.11) -> db (10.0.0.20)  tcp/5432',
        '              PROVISIONED (REVISION 3)                                                                DRAFT',
        "  verdict     would-deny (web's egress has no policy)                                                 allowed",
        "  why         allowed at db's ingress, but web's egress has no policy (monitor mode lets it through)  allowed at web's egress and db's ingress",
        '  web egress  egress has no policy: default deny (monitor: let through)                               allowed by web-out/egress/0',
        '  db ingress  allowed by db/ingress/0                                                                 allowed by db/ingress/0',
        '',
      ].join('\n'),
    );
  });

  it('passes --revision or --draft, prints JSON as given, and refuses bad arguments', async () => {
    fx.api.override = (r) => (r.url === '/v1/explain' ? { status: 200, body: VIEW } : undefined);
    const json = await cli([
      '-o',
      'json',
      'explain',
      'app=web',
      '10.0.0.20',
      'icmp',
      '--revision',
      '2',
    ]);
    expect(JSON.parse(json.stdout)).toEqual(VIEW);
    await cli(['explain', 'web', 'db', 'udp/53', '--draft']);
    expect(fx.api.requests.map((r) => r.body)).toEqual([
      { from: 'app=web', to: '10.0.0.20', protocol: 'icmp', revision: 2 },
      { from: 'web', to: 'db', protocol: 'udp', port: 53, draft: true },
    ]);
    expect((await cli(['explain', 'web', 'db', 'tcp/99999'])).code).toBe(2);
    expect((await cli(['explain', 'web', 'db', 'tcp/'])).code).toBe(2);
    expect((await cli(['explain', 'web', 'db', 'tcp/1', '--draft', '--revision', '1'])).code).toBe(
      2,
    );
    expect(fx.api.requests).toHaveLength(2);
  });
});

const HYGIENE: HygieneView = {
  days: 30,
  at: '2026-02-10T00:00:00.000Z',
  revision: 4,
  findings: [
    {
      kind: 'broad-rule',
      subject: 'db/ingress/0 peers[0]',
      detail: 'wider than seen',
      fix: 'narrow 10.0.0.0/8 to 10.0.0.8/29',
    },
    {
      kind: 'unused-api-token',
      subject: 'dashboard (t1)',
      detail: 'never "used"',
      fix: 'delete it, if nobody needs it',
    },
  ],
};

describe('audit-policy', () => {
  it('prints findings as a table, JSON or CSV, and passes the window', async () => {
    fx.api.override = (r) =>
      r.url.startsWith('/v1/hygiene') ? { status: 200, body: HYGIENE } : undefined;
    const out = await cli(['audit-policy', '--days', '90', '--expiring-days', '3']);
    expect(out.code).toBe(0);
    expect(fx.api.requests[0]!.url).toBe('/v1/hygiene?days=90&expiringDays=3');
    expect(out.stdout).toBe(
      [
        'policy audit of revision 4, flows of the last 30 days: 2 finding(s)',
        'KIND              SUBJECT                DETAIL           FIX',
        'broad-rule        db/ingress/0 peers[0]  wider than seen  narrow 10.0.0.0/8 to 10.0.0.8/29',
        'unused-api-token  dashboard (t1)         never "used"     delete it, if nobody needs it',
        '',
      ].join('\n'),
    );
    expect(JSON.parse((await cli(['-o', 'json', 'audit-policy'])).stdout)).toEqual(HYGIENE);
    expect((await cli(['audit-policy', '--csv'])).stdout).toBe(
      [
        '"kind","subject","detail","fix"',
        '"broad-rule","db/ingress/0 peers[0]","wider than seen","narrow 10.0.0.0/8 to 10.0.0.8/29"',
        '"unused-api-token","dashboard (t1)","never ""used""","delete it, if nobody needs it"',
        '',
      ].join('\n'),
    );
    expect((await cli(['audit-policy', '--days', '0'])).code).toBe(2);
  });
});

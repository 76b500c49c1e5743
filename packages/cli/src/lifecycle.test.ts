import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ImpactView as ImpactReport } from '@bulkhead/api';
import { describe, expect, it } from 'vitest';
import type { Answer, Recorded } from './fake-api.js';
import { formatImpact } from './lifecycle-text.js';
import { useCliFixture } from './test-util.js';

const NOW = new Date('2026-06-10T12:00:00Z');
const fx = useCliFixture({ prefix: 'bulkhead-lifecycle-', now: NOW });
const cli = (argv: string[]) => fx.connected(argv);

/** Answers `method path` (query ignored) with `answer`; everything else goes to the fake's store. */
function route(routes: Record<string, Answer>): void {
  fx.api.override = (r: Recorded) => routes[`${r.method} ${r.url.split('?')[0]}`];
}

const ago = (days: number) => new Date(NOW.getTime() - days * 86400e3).toISOString();

const BLOCKING: ImpactReport = {
  summary: { newlyBlocked: 2, newlyAllowed: 1, stillWouldDeny: 3, flows: 12 },
  groups: [
    {
      change: 'still-would-deny',
      src: 'app=shop,role=web',
      dst: '203.0.113.9',
      protocol: 'udp',
      port: 53,
      connections: 1,
      lastSeen: ago(0.5),
      rules: [{ workload: 'web-1', direction: 'egress', ruleId: 'no rule' }],
      flows: 3,
    },
    {
      change: 'newly-allowed',
      src: 'app=shop,role=web',
      dst: 'app=shop,role=db',
      protocol: 'tcp',
      port: 5432,
      connections: 40,
      lastSeen: ago(1 / 24),
      rules: [{ workload: 'db-1', direction: 'ingress', ruleId: 'shop-db/ingress/0' }],
      flows: 1,
    },
    {
      change: 'newly-blocked',
      src: 'app=billing,role=app',
      dst: 'ip-list:license-servers',
      protocol: 'tcp',
      port: 27000,
      connections: 4,
      lastSeen: ago(6),
      rules: [{ workload: 'bill-1', direction: 'egress', ruleId: 'no rule' }],
      flows: 2,
    },
  ],
};

const HARMLESS: ImpactReport = {
  summary: { newlyBlocked: 0, newlyAllowed: 1, stillWouldDeny: 0, flows: 5 },
  groups: [BLOCKING.groups[1]!],
};

const refusal = (impact: ImpactReport): Answer => ({
  status: 409,
  body: {
    error: {
      code: 'IMPACT_CONFIRMATION_REQUIRED',
      message: `${impact.summary.newlyBlocked} observed flows would be newly blocked`,
      details: [],
      impact,
    },
  },
});

async function writePolicyFile(): Promise<string> {
  const file = join(fx.dir, 'policy.yaml');
  await writeFile(
    file,
    [
      'kind: Service',
      'name: postgres',
      'ports: [{ protocol: tcp, port: 5432 }]',
      '---',
      'kind: Policy',
      'name: shop-db',
      'scope: { matchLabels: { app: shop, role: db } }',
      'ingress:',
      '  - action: allow',
      '    peers: [{ selector: { matchLabels: { app: shop, role: web } } }]',
      '    services: [postgres]',
      '',
    ].join('\n'),
  );
  return file;
}

describe('formatImpact', () => {
  it('prints the summary, then newly blocked, newly allowed, still would-deny, aligned', () => {
    expect(formatImpact(BLOCKING, NOW)).toBe(
      [
        'impact: 2 newly blocked, 1 newly allowed, 3 still would-deny (of 12 observed flows)',
        'BLOCKED     app=billing,role=app -> ip-list:license-servers  tcp/27000  4 conns   last 6d ago   (default: no rule allows it)',
        'ALLOWED     app=shop,role=web -> app=shop,role=db            tcp/5432   40 conns  last 1h ago   (shop-db/ingress/0)',
        'WOULD-DENY  app=shop,role=web -> 203.0.113.9                 udp/53     1 conn    last 12h ago  (default: no rule allows it)',
        '',
      ].join('\n'),
    );
  });

  it('prints the one example line of the brief as given', () => {
    const one = { ...BLOCKING, groups: [BLOCKING.groups[2]!] };
    expect(formatImpact(one, NOW).split('\n')[1]).toBe(
      'BLOCKED  app=billing,role=app -> ip-list:license-servers  tcp/27000  4 conns  last 6d ago  (default: no rule allows it)',
    );
  });

  it("says which end has no policy, as flows and map do, instead of the default deny's words", () => {
    const web = (n: number) => ({ workload: `web-${n}`, direction: 'egress' as const });
    const row = {
      ...BLOCKING.groups[0]!,
      rules: [1, 2].map((n) => ({ ...web(n), ruleId: 'no rule' })),
      noPolicy: [web(1)],
    };
    expect(formatImpact({ ...BLOCKING, groups: [row] }, NOW).split('\n')[1]).toBe(
      "WOULD-DENY  app=shop,role=web -> 203.0.113.9  udp/53  1 conn  last 12h ago  (web-1's egress has no policy, default: no rule allows it)",
    );
  });
});

describe('plan', () => {
  it('prints the diff, sends every document as resources, and exits 4 on newly blocked flows', async () => {
    const file = await writePolicyFile();
    route({ 'POST /v1/impact': { status: 200, body: BLOCKING } });
    const out = await cli(['plan', '-f', file, '--since', '7d']);
    expect(out.stderr).toBe('');
    expect(out.code).toBe(4);
    expect(out.stdout).toBe(
      `+ service/postgres\n+ policy/shop-db\n2 to add, 0 to change, 0 to delete, 0 unchanged\n${formatImpact(BLOCKING, NOW)}`,
    );
    const impact = fx.api.requests.find((r) => r.url === '/v1/impact')!;
    expect(impact.body).toEqual({
      target: {
        resources: [
          { kind: 'Service', name: 'postgres', ports: [{ protocol: 'tcp', port: 5432 }] },
          {
            kind: 'Policy',
            name: 'shop-db',
            scope: { matchLabels: { app: 'shop', role: 'db' } },
            ingress: [
              {
                action: 'allow',
                peers: [{ selector: { matchLabels: { app: 'shop', role: 'web' } } }],
                services: ['postgres'],
              },
            ],
          },
        ],
      },
      since: ago(7),
    });
    // plan only reads: the impact query is its one POST.
    expect(fx.api.writes()).toEqual([['POST', '/v1/impact']]);
  });

  it('with --prune asks about the deletions too, and exits 4 when they newly block flows', async () => {
    const file = await writePolicyFile();
    // The allow-all the files no longer hold (renamed to shop-db): prune deletes it.
    fx.api.store.set('/v1/policies/allow-all', {
      name: 'allow-all',
      scope: {},
      ingress: [{ action: 'allow', peers: [{ cidr: '0.0.0.0/0' }] }],
    });
    route({ 'POST /v1/impact': { status: 200, body: BLOCKING } });
    const out = await cli(['plan', '-f', file, '--prune']);
    expect(out.stderr).toBe('');
    expect(out.code).toBe(4);
    expect(out.stdout).toBe(
      `+ service/postgres\n+ policy/shop-db\n- policy/allow-all\n2 to add, 0 to change, 1 to delete, 0 unchanged\n${formatImpact(BLOCKING, NOW)}`,
    );
    const impact = fx.api.requests.find((r) => r.url === '/v1/impact')!;
    expect(impact.body).toMatchObject({ target: { prune: true, resources: expect.any(Array) } });
    expect((impact.body as { target: { resources: unknown[] } }).target.resources).toHaveLength(2);
    expect(fx.api.writes()).toEqual([['POST', '/v1/impact']]);
  });

  it('exits 0 when nothing would be newly blocked, even with changes', async () => {
    const file = await writePolicyFile();
    route({ 'POST /v1/impact': { status: 200, body: HARMLESS } });
    const out = await cli(['plan', '-f', file]);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain('impact: 0 newly blocked, 1 newly allowed');
  });

  it('exits 3 on invalid files without a request, 1 on an API error, 2 on a bad --since', async () => {
    const bad = join(fx.dir, 'bad.yaml');
    await writeFile(bad, 'kind: IpList\nname: x\ncidrs: [10.0.0.0/33]\n');
    expect((await cli(['plan', '-f', bad])).code).toBe(3);
    expect(fx.api.requests).toEqual([]);

    const file = await writePolicyFile();
    expect((await cli(['plan', '-f', file, '--since', 'yesterday'])).code).toBe(2);
    expect(fx.api.requests).toEqual([]);

    route({
      'POST /v1/impact': { status: 500, body: { error: { code: 'INTERNAL', message: 'boom' } } },
    });
    const out = await cli(['plan', '-f', file]);
    expect(out.code).toBe(1);
    expect(out.stderr).toContain('boom');
  });

  it('prints the server report unchanged with -o json', async () => {
    const file = await writePolicyFile();
    route({ 'POST /v1/impact': { status: 200, body: BLOCKING } });
    const out = await cli(['-o', 'json', 'plan', '-f', file]);
    expect(out.code).toBe(4);
    expect(JSON.parse(out.stdout)).toEqual(BLOCKING);
  });
});

describe('impact', () => {
  it('judges the draft by default and a revision with --revision', async () => {
    route({ 'POST /v1/impact': { status: 200, body: HARMLESS } });
    const draft = await cli(['impact']);
    expect(draft.code).toBe(0);
    expect(draft.stdout).toBe(formatImpact(HARMLESS, NOW));
    route({ 'POST /v1/impact': { status: 200, body: BLOCKING } });
    const rev = await cli(['impact', '--revision', '7', '--group-by', 'app']);
    expect(rev.code).toBe(4);
    expect(fx.api.requests.map((r) => r.body)).toEqual([
      { target: 'draft' },
      { target: { revision: 7 }, groupBy: ['app'] },
    ]);
  });

  it('exits 2 on a bad revision number and 1 on an answer that is no impact report', async () => {
    expect((await cli(['impact', '--revision', 'x'])).code).toBe(2);
    route({ 'POST /v1/impact': { status: 200, body: { hello: 1 } } });
    expect((await cli(['impact'])).code).toBe(1);
  });
});

describe('provision, rollback and mode are impact-checked', () => {
  it('provision needs --note (exit 2 naming it, nothing sent)', async () => {
    const out = await cli(['provision']);
    expect(out.code).toBe(2);
    expect(out.stderr).toContain('--note');
    expect((await cli(['provision', '--note', ' '])).code).toBe(2);
    expect(fx.api.requests).toEqual([]);
  });

  it('a refusal prints the impact and how to go ahead, and exits 4', async () => {
    route({ 'POST /v1/provision': refusal(BLOCKING) });
    const out = await cli(['provision', '--note', 'open 8443']);
    expect(out.code).toBe(4);
    expect(out.stdout).toBe(formatImpact(BLOCKING, NOW));
    expect(out.stderr).toBe(
      'refused: 2 observed flows would be newly blocked; re-run with --confirm to provision anyway\n',
    );
    expect(fx.api.requests[0]!.body).toEqual({ note: 'open 8443' });
  });

  it('--confirm sends confirm: true; success prints the revision and the impact summary', async () => {
    route({
      'POST /v1/provision': {
        status: 200,
        body: { revision: 9, changed: ['bill-1'], unchanged: 3, impact: BLOCKING },
      },
    });
    const out = await cli(['provision', '--note', 'cut licences', '--confirm']);
    expect(out.code).toBe(0);
    expect(fx.api.requests[0]!.body).toEqual({ note: 'cut licences', confirm: true });
    expect(out.stdout).toBe(
      'revision 9: 1 workload(s) changed, 3 unchanged\n  bill-1\nimpact: 2 newly blocked, 1 newly allowed, 3 still would-deny (of 12 observed flows)\n',
    );
  });

  it('rollback: refused with exit 4, then sent with confirm', async () => {
    route({ 'POST /v1/revisions/3/rollback': refusal(BLOCKING) });
    const refused = await cli(['rollback', '3', '--note', 'back']);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain('re-run with --confirm to roll back anyway');
    route({
      'POST /v1/revisions/3/rollback': {
        status: 200,
        body: { revision: 10, changed: [], unchanged: 4, impact: HARMLESS },
      },
    });
    const done = await cli(['rollback', '3', '--note', 'back', '--confirm']);
    expect(done.code).toBe(0);
    expect(done.stdout).toContain('revision 10 (rollback to 3)');
    expect(fx.api.requests.map((r) => r.body)).toEqual([
      { note: 'back' },
      { note: 'back', confirm: true },
    ]);
  });

  it('mode --provision: refused with exit 4 and nothing changed; --confirm goes through', async () => {
    fx.api.store.set('/v1/workloads/db-1', { name: 'db-1', mode: { ingress: 'monitor' } });
    fx.api.override = (r) =>
      r.method === 'PATCH' && !r.url.includes('confirm=true') ? refusal(BLOCKING) : undefined;
    const refused = await cli(['mode', 'db-1', '--ingress', 'enforce', '--provision']);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain('re-run with --confirm to provision anyway');
    expect(fx.api.store.get('/v1/workloads/db-1')!.mode).toEqual({ ingress: 'monitor' });
    const argv = ['mode', 'db-1', '--ingress', 'enforce', '--provision', '--confirm'];
    const done = await cli([...argv, '--note', 'db enforces']);
    expect(done.code).toBe(0);
    expect(done.stdout).toMatch(/^workload\/db-1 mode: ingress=enforce \(provisioned as revision/);
    expect(fx.api.writes()).toEqual([
      ['PATCH', '/v1/workloads/db-1?provision=true'],
      ['PATCH', '/v1/workloads/db-1?provision=true&confirm=true'],
    ]);
    expect(fx.api.requests.at(-1)!.body).toEqual({
      mode: { ingress: 'enforce' },
      note: 'db enforces',
    });
    expect((await cli(['mode', 'db-1', '--ingress', 'enforce', '--confirm'])).code).toBe(2);
  });
});

const CHANGED_POLICY = {
  kind: 'Policy',
  name: 'shop-db',
  change: 'changed',
  fields: ['ingress'],
  before: {
    name: 'shop-db',
    version: 2,
    scope: { matchLabels: { app: 'shop' } },
    ingress: [{ action: 'allow', services: ['postgres'] }],
  },
  after: {
    name: 'shop-db',
    version: 3,
    scope: { matchLabels: { app: 'shop' } },
    ingress: [{ action: 'allow', services: ['https'] }],
  },
};

describe('draft', () => {
  it('shows the draft changes as diff does', async () => {
    route({
      'GET /v1/draft': {
        status: 200,
        body: {
          basedOn: 4,
          changes: [
            { kind: 'Service', name: 'ssh', change: 'added', after: { name: 'ssh' } },
            CHANGED_POLICY,
            { kind: 'IpList', name: 'old-vpn', change: 'removed', before: { name: 'old-vpn' } },
          ],
        },
      },
    });
    const out = await cli(['draft']);
    expect(out.code).toBe(0);
    expect(out.stdout).toBe(
      [
        '+ service/ssh',
        '~ policy/shop-db (ingress)',
        '    @@ -7,3 +7,3 @@',
        '       - action: allow',
        '         services:',
        '    -      - postgres',
        '    +      - https',
        '- ip-list/old-vpn',
        '1 added, 1 changed, 1 removed (based on revision 4)',
        '',
      ].join('\n'),
    );
  });

  it('says so when there is nothing', async () => {
    route({ 'GET /v1/draft': { status: 200, body: { basedOn: 0, changes: [] } } });
    expect((await cli(['draft'])).stdout).toBe('no changes (based on no revision yet)\n');
  });

  it('discard sends DELETE /v1/draft and lists what was thrown away', async () => {
    route({ 'DELETE /v1/draft': { status: 200, body: { discarded: [CHANGED_POLICY] } } });
    const out = await cli(['draft', 'discard']);
    expect(out.code).toBe(0);
    expect(fx.api.writes()).toEqual([['DELETE', '/v1/draft']]);
    expect(out.stdout).toBe('~ policy/shop-db (ingress)\ndiscarded 1 change(s)\n');
  });
});

describe('diff --from --to', () => {
  const DIFF = {
    from: 3,
    to: 5,
    objects: [{ kind: 'Service', name: 'ssh', change: 'added', after: { name: 'ssh' } }],
    workloads: [
      {
        workload: 'db-1',
        change: 'changed',
        rulesAdded: ['shop-db/ingress/1'],
        rulesRemoved: ['old/ingress/0'],
        rulesChanged: [],
        entriesAdded: 4,
        entriesRemoved: 2,
      },
    ],
  };

  it('prints objects and the effect per workload; exit 5 when they differ', async () => {
    route({ 'GET /v1/revisions/3/diff': { status: 200, body: DIFF } });
    const out = await cli(['diff', '--from', '3', '--to', '5']);
    expect(out.code).toBe(5);
    expect(fx.api.requests[0]!.url).toBe('/v1/revisions/3/diff?to=5');
    expect(out.stdout).toBe(
      [
        'revision 3 -> revision 5: 1 added, 0 changed, 0 removed',
        '+ service/ssh',
        '1 workload(s) affected:',
        '~ workload/db-1  rules +shop-db/ingress/1 -old/ingress/0  entries +4 -2',
        '',
      ].join('\n'),
    );
  });

  it('compares with the draft by default; exit 0 when equal', async () => {
    route({
      'GET /v1/revisions/3/diff': {
        status: 200,
        body: { from: 3, to: 'draft', objects: [], workloads: [] },
      },
    });
    const out = await cli(['diff', '--from', '3']);
    expect(out.code).toBe(0);
    expect(fx.api.requests[0]!.url).toBe('/v1/revisions/3/diff?to=draft');
    expect(out.stdout).toBe('revision 3 -> the draft: no changes\n');
  });

  it('refuses -f with --from, --to alone and a bad --to (exit 2, nothing sent)', async () => {
    const file = await writePolicyFile();
    expect((await cli(['diff', '-f', file, '--from', '3'])).code).toBe(2);
    expect((await cli(['diff', '--to', '5'])).code).toBe(2);
    expect((await cli(['diff', '--from', '3', '--to', 'latest'])).code).toBe(2);
    expect(fx.api.requests).toEqual([]);
  });
});

describe('stale writes', () => {
  it('apply and prune send If-Match with the version they read; label does too', async () => {
    const file = await writePolicyFile();
    fx.api.store.set('/v1/services/postgres', {
      name: 'postgres',
      ports: [{ protocol: 'tcp', port: 5433 }],
      version: 4,
    });
    fx.api.store.set('/v1/ip-lists/old', { name: 'old', cidrs: ['10.0.0.0/8'], version: 7 });
    const out = await cli(['apply', '-f', file, '--prune']);
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    const conditional = fx.api.requests
      .filter((r) => r.method !== 'GET')
      .map((r) => [r.method, r.url, r.ifMatch]);
    expect(conditional).toEqual([
      ['PUT', '/v1/services/postgres', '"4"'],
      // New objects have no version to hold on to.
      ['PUT', '/v1/policies/shop-db', undefined],
      ['DELETE', '/v1/ip-lists/old', '"7"'],
    ]);

    fx.api.store.set('/v1/workloads/w1', { name: 'w1', labels: { app: 'a' }, version: 2 });
    expect((await cli(['label', 'w1', 'role=db'])).code).toBe(0);
    expect(fx.api.requests.at(-1)!.ifMatch).toBe('"2"');
  });

  it('a write that lost the race prints the server message once and exits 1', async () => {
    const file = await writePolicyFile();
    fx.api.store.set('/v1/services/postgres', { name: 'postgres', ports: [], version: 3 });
    // Someone else writes between apply's GET and its PUT.
    fx.api.override = (r) => {
      if (r.method === 'GET' && r.url === '/v1/services/postgres') {
        const answer = { status: 200, body: fx.api.store.get(r.url) };
        fx.api.store.set(r.url, { name: 'postgres', ports: [], version: 4 });
        return answer;
      }
      return undefined;
    };
    const out = await cli(['apply', '-f', file]);
    expect(out.code).toBe(1);
    expect(out.stderr).toBe(
      'error: service/postgres was changed by someone else (version 4, you sent 3) (CONFLICT, HTTP 409)\n',
    );
    // Stopped at the conflict: the policy after it was not sent.
    expect(fx.api.writes()).toEqual([['PUT', '/v1/services/postgres']]);
    expect(fx.api.store.get('/v1/services/postgres')!.version).toBe(4);
  });
});

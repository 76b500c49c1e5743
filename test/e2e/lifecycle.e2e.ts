// Policy lifecycle on real nftables: observe traffic, plan a tighter policy that forgets the
// license server, see the plan report it, get refused at provision, provision anyway with
// confirmation, see the kernel refuse the connection, roll back, see it work again — and find
// every step in the audit log.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FlowView } from '@bulkhead/api';
import { type Bulkhead, type Lab, startBulkhead, until } from '@bulkhead/lab';
import { useLab } from '@bulkhead/lab/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const EXIT_BLOCKING = 4;

describe('lifecycle: plan, impact gate, provision with confirmation, rollback, audit', () => {
  // lic is a license server without an agent, known to Bulkhead as an IP list.
  const getLab = useLab({ hosts: ['cp', 'app', 'db', 'lic'] });
  let lab: Lab;
  let bh: Bulkhead;
  let dir: string;
  let baseline = 0;
  let db4: string;
  let lic4: string;

  beforeAll(async () => {
    lab = getLab();
    db4 = lab.hosts.db!.ipv4;
    lic4 = lab.hosts.lic!.ipv4;
    dir = mkdtempSync(join(tmpdir(), 'bulkhead-lifecycle-'));
    bh = await startBulkhead(lab, 'cp', {
      app: { labels: { app: 'billing', role: 'app' } },
      db: { labels: { app: 'billing', role: 'db' } },
    });
    await lab.listen('db', 'tcp', 5432);
    await lab.listen('lic', 'tcp', 27000);
  });

  afterAll(async () => {
    await bh?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('observes the app in monitor mode, then enforces an allow-all egress baseline', async () => {
    expect(await lab.connect('app', db4, 'tcp', 5432)).toBe(true);
    expect(await lab.connect('app', lic4, 'tcp', 27000)).toBe(true);
    await until('both dependencies observed', async () => {
      const { flows } = await bh.api<{ flows: FlowView[] }>('GET', '/v1/flows?workload=app');
      return flows.some((f) => f.port === 5432) && flows.some((f) => f.dst.address === lic4);
    });

    await bh.api('PUT', '/v1/ip-lists/license-servers', { cidrs: [`${lic4}/32`] });
    await bh.api('PUT', '/v1/policies/billing-app', {
      scope: { matchLabels: { app: 'billing', role: 'app' } },
      egress: [{ action: 'allow', peers: [{ cidr: '0.0.0.0/0' }, { cidr: '::/0' }] }],
    });
    // Everything observed is allowed by the baseline: enforcing needs no confirmation. The mode
    // is drafted with the policy, so the baseline revision holds both.
    await bh.api('PATCH', '/v1/workloads/app', { mode: { egress: 'enforce' } });
    const prov = await bh.api<{ revision: number }>('POST', '/v1/provision', {
      note: 'baseline: billing app may call anything',
    });
    baseline = prov.revision;
    await bh.waitInSync();
    expect(await lab.connect('app', db4, 'tcp', 5432)).toBe(true);
    expect(await lab.connect('app', lic4, 'tcp', 27000)).toBe(true);
  });

  it('plans a policy that declares only the database and reports the license server', async () => {
    writeFileSync(
      join(dir, 'billing.yaml'),
      [
        'kind: Policy',
        'name: billing-app',
        'description: the app talks to its database (the owners forgot the license server)',
        'scope: { matchLabels: { app: billing, role: app } }',
        'egress:',
        '  - action: allow',
        '    peers: [{ selector: { matchLabels: { app: billing, role: db } } }]',
        '    services: [{ protocol: tcp, port: 5432 }]',
        '',
      ].join('\n'),
    );
    const plan = await bh.cli(['plan', '-f', dir]);
    expect(plan.code, plan.stdout + plan.stderr).toBe(EXIT_BLOCKING);
    const blocked = plan.stdout.split('\n').find((l) => l.includes('license-servers'));
    expect(blocked, plan.stdout).toBeDefined();
    expect(blocked).toMatch(/BLOCKED/);
    expect(blocked).toContain('27000');
    expect(blocked).toContain('no rule');
    expect(plan.stdout).not.toMatch(/BLOCKED.*5432/);
  });

  it('refuses to provision without confirmation, then provisions with it', async () => {
    const applied = await bh.cli(['apply', '-f', dir]);
    expect(applied.code, applied.stderr).toBe(0);
    const refused = await bh.cli(['provision', '--note', 'tighten billing egress']);
    expect(refused.code, refused.stdout + refused.stderr).toBe(EXIT_BLOCKING);
    expect(refused.stdout + refused.stderr).toContain('--confirm');
    // Nothing changed: the license server still answers.
    expect(await lab.connect('app', lic4, 'tcp', 27000)).toBe(true);

    const confirmed = await bh.cli(['provision', '--note', 'tighten billing egress', '--confirm']);
    expect(confirmed.code, confirmed.stderr).toBe(0);
    await bh.waitInSync();
    expect(await lab.connect('app', db4, 'tcp', 5432)).toBe(true);
    expect(await lab.connect('app', lic4, 'tcp', 27000)).toBe(false);
  });

  it('rolls back to the baseline in one command and the connection works again', async () => {
    const rb = await bh.cli(['rollback', String(baseline), '--note', 'license server outage']);
    expect(rb.code, rb.stdout + rb.stderr).toBe(0);
    await bh.waitInSync();
    expect(await lab.connect('app', lic4, 'tcp', 27000)).toBe(true);
  });

  it('exports the state as files that reproduce it exactly', async () => {
    const out = join(dir, 'export');
    const exported = await bh.cli(['export', '-o', out]);
    expect(exported.code, exported.stderr).toBe(0);
    const diff = await bh.cli(['diff', '-f', out, '--prune']);
    expect(diff.code, diff.stdout + diff.stderr).toBe(0);
    expect(diff.stdout).toMatch(/no changes/);
  });

  it('keeps every step in the audit log', async () => {
    const audit = await bh.api<{ action: string; target: string; after?: unknown }[]>(
      'GET',
      '/v1/audit?limit=200',
    );
    const text = JSON.stringify(audit);
    const actions = audit.map((a) => a.action);
    expect(actions).toEqual(expect.arrayContaining([expect.stringMatching(/provision/)]));
    expect(actions).toEqual(expect.arrayContaining([expect.stringMatching(/rollback/)]));
    expect(text).toContain('tighten billing egress');
    expect(text).toMatch(/"confirmed":true/);
    expect(text).toContain('license server outage');
  });
});

import { describe, expect, it } from 'vitest';
import { useCliFixture } from './test-util.js';

const fx = useCliFixture({ prefix: 'bh-cli-workloads-' });
const connected = (...argv: string[]) => fx.connected(argv);

const PENDING = {
  name: 'mon-1',
  addresses: ['10.0.0.60'],
  labels: {},
  mode: { ingress: 'monitor', egress: 'monitor' },
  pending: { addresses: ['10.0.0.60', '192.0.2.7'], agentId: '0cedffcf-1c38', requestedAt: 'T' },
};

describe('workloads and what their agents claim', () => {
  it('workloads still lists every workload', async () => {
    fx.api.store.set('/v1/workloads/mon-1', PENDING);
    const r = await connected('workloads');
    expect(r.code, r.stderr).toBe(0);
    expect(fx.api.requests.map((q) => q.url)).toEqual(['/v1/workloads']);
    expect(r.stdout).toMatch(/^NAME\s+ADDRESSES/);
  });

  it('workloads pending asks for the pending ones and shows what is claimed', async () => {
    fx.api.override = (q) =>
      q.url === '/v1/workloads?pending=true' ? { status: 200, body: [PENDING] } : undefined;
    const r = await connected('workloads', 'pending');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')[0]).toMatch(/^NAME\s+ADDRESSES\s+PENDING\s+AGENT\s+REQUESTED/);
    expect(r.stdout).toContain('10.0.0.60,192.0.2.7');
    expect(r.stdout).toContain('0cedffcf');
  });

  it('workloads approve and deny post to the workload and print its addresses', async () => {
    fx.api.override = (q) =>
      q.method === 'POST'
        ? {
            status: 200,
            body: { ...PENDING, addresses: ['10.0.0.60', '192.0.2.7'], pending: null },
          }
        : undefined;
    const approved = await connected('workloads', 'approve', 'mon-1');
    expect(approved.code, approved.stderr).toBe(0);
    expect(approved.stdout).toBe('workload/mon-1 addresses: 10.0.0.60,192.0.2.7\n');
    expect((await connected('workloads', 'deny', 'mon-1')).code).toBe(0);
    expect(fx.api.writes()).toEqual([
      ['POST', '/v1/workloads/mon-1/addresses/approve'],
      ['POST', '/v1/workloads/mon-1/addresses/deny'],
    ]);
  });

  it('a refused approval exits non-zero with the server message and field', async () => {
    fx.api.override = () => ({
      status: 409,
      body: {
        error: {
          code: 'CONFLICT',
          message: 'pending addresses of workload mon-1 belong to another workload',
          details: [{ path: 'addresses[0]', message: '10.0.0.61 belongs to workload late-1' }],
        },
      },
    });
    const r = await connected('workloads', 'approve', 'mon-1');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('addresses[0]: 10.0.0.61 belongs to workload late-1');
  });

  it('workloads release needs --note and sends it', async () => {
    expect((await connected('workloads', 'release', 'db-1')).code).toBe(2);
    expect(fx.api.requests).toEqual([]);
    fx.api.override = () => ({
      status: 200,
      body: { name: 'db-1', released: { note: 'reinstalled' } },
    });
    const r = await connected('workloads', 'release', 'db-1', '--note', 'reinstalled');
    expect(r.code, r.stderr).toBe(0);
    expect(fx.api.requests[0]).toMatchObject({
      method: 'POST',
      url: '/v1/workloads/db-1/release',
      body: { note: 'reinstalled' },
    });
    expect(r.stdout).toBe('workload/db-1 released: its agents are revoked\n');
  });

  it('enrollment-token create sends a bound workload and the scope flags', async () => {
    fx.api.override = () => ({ status: 201, body: { id: 'et1', token: 'bhe_x' } });
    const r = await connected(
      'enrollment-token',
      'create',
      '--workload',
      'db-1',
      '--allow-name',
      'web-*',
      '--allow-name',
      'api-1',
      '--allow-label',
      'app=web',
      '--allow-label',
      'app=shop',
      '--allow-label',
      'env=*',
      '--allow-cidr',
      '10.1.0.0/24',
    );
    expect(r.code, r.stderr).toBe(0);
    expect(fx.api.requests[0]!.body).toEqual({
      workload: 'db-1',
      scope: {
        names: ['web-*', 'api-1'],
        labels: { app: ['web', 'shop'], env: ['*'] },
        cidrs: ['10.1.0.0/24'],
      },
    });
    const bad = await connected('enrollment-token', 'create', '--allow-label', 'app');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--allow-label needs k=v or k=*');
  });
});

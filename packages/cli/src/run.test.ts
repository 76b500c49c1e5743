import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { FakeApi } from './fake-api.js';
import { useCliFixture } from './test-util.js';

const fx = useCliFixture({ prefix: 'bulkhead-cli-' });
const { cli } = fx;
const connected = (...argv: string[]) => fx.connected(argv);

const WORKLOAD = {
  name: 'web-1',
  addresses: ['10.0.0.5'],
  labels: { app: 'web', env: 'dev', tier: 'front' },
  mode: { ingress: 'monitor', egress: 'monitor' },
};

describe('apply', () => {
  async function writeSources(): Promise<string> {
    const src = join(fx.dir, 'policy');
    await mkdir(src);
    // File order puts the policy first: apply must still send it last.
    await writeFile(
      join(src, '1-web.yaml'),
      [
        'kind: Policy',
        'name: web-ingress',
        'scope:',
        '  matchLabels: {app: web}',
        'ingress:',
        '  - action: allow',
        '    peers: [{ipList: office}]',
        '    services: [https]',
        '---',
        'kind: Workload',
        'name: web-1',
        'labels: {app: web, env: prod}',
        '',
      ].join('\n'),
    );
    await writeFile(
      join(src, '2-basics.yml'),
      [
        'kind: Service',
        'name: https',
        'ports: [{protocol: tcp, port: 443}]',
        '---',
        'kind: IpList',
        'name: office',
        'cidrs: [192.0.2.0/24]',
        '---',
        '',
      ].join('\n'),
    );
    await writeFile(join(src, 'notes.txt'), 'not a resource');
    return src;
  }

  it('sends ip lists and services before policies, then workload patches', async () => {
    fx.api.store.set('/v1/workloads/web-1', WORKLOAD);
    const src = await writeSources();

    const r = await connected('apply', '-f', src);

    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(fx.api.writes()).toEqual([
      ['PUT', '/v1/ip-lists/office'],
      ['PUT', '/v1/services/https'],
      ['PUT', '/v1/policies/web-ingress'],
      ['PATCH', '/v1/workloads/web-1'],
    ]);
    const put = (url: string) => fx.api.requests.find((q) => q.method !== 'GET' && q.url === url);
    expect(put('/v1/ip-lists/office')?.body).toEqual({ name: 'office', cidrs: ['192.0.2.0/24'] });
    expect(put('/v1/policies/web-ingress')?.body).toMatchObject({
      name: 'web-ingress',
      ingress: [{ action: 'allow', peers: [{ ipList: 'office' }], services: ['https'] }],
    });
    expect(put('/v1/workloads/web-1')?.body).toEqual({ labels: { app: 'web', env: 'prod' } });
    expect(fx.api.requests.every((q) => q.authorization === 'Bearer t0k')).toBe(true);
    expect(r.stdout).toBe(
      [
        'ip-list/office created',
        'service/https created',
        'policy/web-ingress created',
        'workload/web-1 updated',
        '',
      ].join('\n'),
    );
  });

  it('reports unchanged resources without writing, and updated ones', async () => {
    fx.api.store.set('/v1/workloads/web-1', WORKLOAD);
    const src = await writeSources();
    await connected('apply', '-f', src);
    fx.api.requests.length = 0;
    await writeFile(
      join(src, '2-basics.yml'),
      'kind: Service\nname: https\nports: [{protocol: tcp, port: 8443}]\n',
    );

    const r = await connected('apply', '-f', src);

    expect(r.code).toBe(0);
    expect(fx.api.writes()).toEqual([['PUT', '/v1/services/https']]);
    expect(r.stdout).toContain('service/https updated\n');
    expect(r.stdout).toContain('policy/web-ingress unchanged\n');
    expect(r.stdout).toContain('workload/web-1 unchanged\n');
  });

  it('accepts JSON files holding a list of documents', async () => {
    const file = join(fx.dir, 'lists.json');
    await writeFile(
      file,
      JSON.stringify([
        { kind: 'IpList', name: 'a', cidrs: ['10.1.0.0/16'] },
        { kind: 'IpList', name: 'b', cidrs: ['2001:db8::/32'] },
      ]),
    );
    const r = await connected('apply', '-f', file);
    expect(r.code).toBe(0);
    expect(fx.api.writes()).toEqual([
      ['PUT', '/v1/ip-lists/a'],
      ['PUT', '/v1/ip-lists/b'],
    ]);
  });

  it('exits 3 with file:line: path: message and sends nothing when any file is invalid', async () => {
    const src = await writeSources();
    const bad = join(src, '3-bad.yaml');
    await writeFile(
      bad,
      [
        'kind: IpList',
        'name: fine',
        'cidrs: [10.0.0.0/8]',
        '---',
        'kind: Policy',
        'name: db',
        'scope: {}',
        'egress:',
        '  - action: allow',
        '    peers:',
        '      - cidr: 10.0.0.0/33',
        '---',
        'kind: Workload',
        'name: web-1',
        'addresses: [10.0.0.9]',
        '',
      ].join('\n'),
    );

    const r = await connected('apply', '-f', src);

    expect(r.code).toBe(3);
    expect(fx.api.requests).toEqual([]);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines[0]).toMatch(new RegExp(`^${bad}:11: egress\\[0\\]\\.peers\\[0\\]\\.cidr: .+`));
    expect(lines[1]).toBe(`${bad}:15: addresses: a Workload document may set only labels and mode`);
    expect(lines).toHaveLength(3);
    expect(r.stdout).toBe('');
  });

  it('exits 1 with the server message and detail paths when the server refuses', async () => {
    fx.api.override = (r) =>
      r.method === 'PUT' && r.url === '/v1/policies/web-ingress'
        ? {
            status: 400,
            body: {
              error: {
                code: 'VALIDATION_FAILED',
                message: 'policy refers to unknown objects',
                details: [{ path: 'ingress[0].services[0]', message: "unknown service 'https'" }],
              },
            },
          }
        : undefined;
    fx.api.store.set('/v1/workloads/web-1', WORKLOAD);

    const r = await connected('apply', '-f', await writeSources());

    expect(r.code).toBe(1);
    expect(r.stderr).toContain('policy/web-ingress: policy refers to unknown objects');
    expect(r.stderr).toContain("  ingress[0].services[0]: unknown service 'https'\n");
    // Nothing after the failed resource is sent.
    expect(fx.api.writes().at(-1)).toEqual(['PUT', '/v1/policies/web-ingress']);
  });
});

describe('connection settings', () => {
  it('login checks the token, then stores server and token readable only by the owner', async () => {
    const tokenFile = join(fx.dir, 'token');
    await writeFile(tokenFile, 'secret-1\n');

    const r = await cli(['login', '--server', fx.api.url, '--token-file', tokenFile]);

    expect(r.code).toBe(0);
    expect(fx.api.requests).toHaveLength(1);
    expect(fx.api.requests[0]!.authorization).toBe('Bearer secret-1');
    const path = join(fx.dir, 'config', 'bulkhead', 'config.json');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(path, 'utf8'))).toEqual({
      server: fx.api.url,
      token: 'secret-1',
    });

    // The stored settings now serve commands without flags.
    fx.api.requests.length = 0;
    expect((await cli(['get', 'policies'])).code).toBe(0);
    expect(fx.api.requests[0]!.authorization).toBe('Bearer secret-1');
  });

  it('login stores nothing when the server rejects the token', async () => {
    fx.api.override = () => ({
      status: 401,
      body: { error: { code: 'UNAUTHENTICATED', message: 'bad token' } },
    });
    const r = await cli(['login', '--server', fx.api.url, '--token', 'nope']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('bad token');
    await expect(stat(join(fx.dir, 'config', 'bulkhead', 'config.json'))).rejects.toThrow();
  });

  it('prefers flag over environment over config file', async () => {
    await cli(['login', '--server', fx.api.url, '--token', 'from-file']);
    await cli(['get', 'policies'], { BULKHEAD_TOKEN: 'from-env' });
    await cli(['--token', 'from-flag', 'get', 'policies'], { BULKHEAD_TOKEN: 'from-env' });
    await cli(['get', 'policies']);
    expect(fx.api.requests.map((q) => q.authorization)).toEqual([
      'Bearer from-file',
      'Bearer from-env',
      'Bearer from-flag',
      'Bearer from-file',
    ]);
  });

  it('never sends the stored token to a different server', async () => {
    await cli(['login', '--server', fx.api.url, '--token', 'stored']);
    const other = new FakeApi();
    await other.start();
    try {
      expect((await cli(['--server', other.url, 'get', 'policies'])).code).toBe(0);
      expect(other.requests[0]!.authorization).toBeUndefined();
    } finally {
      await other.stop();
    }
  });

  it('exits 2 without a server address', async () => {
    const r = await cli(['get', 'policies']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--server');
  });
});

describe('workload commands', () => {
  it('label merges additions, changes and removals into one PATCH', async () => {
    fx.api.store.set('/v1/workloads/web-1', WORKLOAD);
    const r = await connected('label', 'web-1', 'env=prod', 'tier-', 'team=payments');
    expect(r.code).toBe(0);
    expect(fx.api.writes()).toEqual([['PATCH', '/v1/workloads/web-1']]);
    expect(fx.api.requests.at(-1)!.body).toEqual({
      labels: { app: 'web', env: 'prod', team: 'payments' },
    });
    expect(r.stdout).toBe(
      'workload/web-1 labels: app=web,env=prod,team=payments (draft; `bulkhead provision` applies it)\n',
    );
  });

  it('label exits 2 on a malformed change and sends nothing', async () => {
    fx.api.store.set('/v1/workloads/web-1', WORKLOAD);
    const r = await connected('label', 'web-1', 'justakey');
    expect(r.code).toBe(2);
    expect(fx.api.requests).toEqual([]);
  });

  it('mode patches only the directions given', async () => {
    fx.api.store.set('/v1/workloads/web-1', WORKLOAD);
    const r = await connected('mode', 'web-1', '--ingress', 'enforce');
    expect(r.code).toBe(0);
    expect(fx.api.requests.at(-1)!.body).toEqual({ mode: { ingress: 'enforce' } });
    expect(r.stdout).toBe(
      'workload/web-1 mode: ingress=enforce egress=monitor (draft; `bulkhead provision` applies it)\n',
    );
    expect((await connected('mode', 'web-1', '--ingress', 'block')).code).toBe(2);
  });
});

describe('output', () => {
  beforeEach(() => {
    fx.api.store.set('/v1/workloads/web-1', WORKLOAD);
    fx.api.store.set('/v1/workloads/db-primary', {
      name: 'db-primary',
      addresses: ['10.0.0.7', 'fd00::7'],
      labels: { app: 'db' },
      mode: { ingress: 'enforce', egress: 'monitor' },
    });
  });

  it('json and yaml print what the server answered', async () => {
    const list = [...fx.api.store.values()];
    const json = await connected('get', 'workloads', '-o', 'json');
    expect(JSON.parse(json.stdout)).toEqual(list);
    const yaml = await connected('-o', 'yaml', 'get', 'workload', 'db-primary');
    expect(parseYaml(yaml.stdout)).toEqual(list[1]);
  });

  it('table aligns columns', async () => {
    const r = await connected('workloads');
    expect(r.stdout).toBe(
      [
        'NAME        ADDRESSES         LABELS                      INGRESS  EGRESS',
        'web-1       10.0.0.5          app=web,env=dev,tier=front  monitor  monitor',
        'db-primary  10.0.0.7,fd00::7  app=db                      enforce  monitor',
        '',
      ].join('\n'),
    );
  });

  it('agents table shortens ids and shows sync state', async () => {
    fx.api.override = (q) =>
      q.url === '/v1/agents'
        ? {
            status: 200,
            body: [
              {
                id: '3f2a9c1e-1111-2222-3333-444455556666',
                workload: 'web-1',
                hostname: 'web-1.example',
                connected: true,
                offline: false,
                appliedRevision: 4,
                inSync: false,
                lastSeen: '2026-01-01T00:00:00Z',
                lastError: null,
              },
            ],
          }
        : undefined;
    const r = await connected('agents');
    const [header, row] = r.stdout.split('\n');
    expect(header).toBe(
      'ID        WORKLOAD  CONNECTED  OFFLINE  APPLIED REV  IN SYNC  LAST SEEN             LAST ERROR',
    );
    expect(row).toBe(
      '3f2a9c1e  web-1     true       false    4            false    2026-01-01T00:00:00Z  -',
    );
  });

  it('rejects an unknown output format and an unknown kind with exit 2', async () => {
    expect((await connected('-o', 'xml', 'workloads')).code).toBe(2);
    const r = await connected('get', 'gadgets');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown kind "gadgets"');
    expect(fx.api.requests).toEqual([]);
  });
});

describe('other commands', () => {
  it('provision prints the revision and the changed workloads', async () => {
    fx.api.override = (q) =>
      q.url === '/v1/provision'
        ? { status: 200, body: { revision: 7, changed: ['web-1', 'db-1'], unchanged: 3 } }
        : undefined;
    const r = await connected('provision', '--note', 'open 443');
    expect(r.code).toBe(0);
    expect(fx.api.requests[0]).toMatchObject({ method: 'POST', body: { note: 'open 443' } });
    expect(r.stdout).toBe('revision 7: 2 workload(s) changed, 3 unchanged\n  web-1\n  db-1\n');
  });

  it('enrollment-token create sends labels, mode, ttl in seconds and max uses', async () => {
    fx.api.override = () => ({ status: 201, body: { id: 'et1', token: 'bht_x' } });
    const r = await connected(
      'enrollment-token',
      'create',
      '--label',
      'app=web',
      '--label',
      'env=prod',
      '--ttl',
      '24h',
      '--max-uses',
      '5',
      '--mode-ingress',
      'enforce',
    );
    expect(r.code).toBe(0);
    expect(fx.api.requests[0]!.body).toEqual({
      labels: { app: 'web', env: 'prod' },
      mode: { ingress: 'enforce' },
      ttlSeconds: 86400,
      maxUses: 5,
    });
    expect(r.stdout).toContain('bht_x');
    expect((await connected('enrollment-token', 'create', '--ttl', 'soon')).code).toBe(2);
  });

  it('api sends a raw request with a body from a file and prints the JSON answer', async () => {
    const body = join(fx.dir, 'body.json');
    await writeFile(body, '{"name":"x","cidrs":["10.9.0.0/16"]}');
    const r = await connected('api', 'put', '/v1/ip-lists/x', '--data', `@${body}`);
    expect(r.code).toBe(0);
    expect(fx.api.requests[0]).toMatchObject({ method: 'PUT', url: '/v1/ip-lists/x' });
    expect(JSON.parse(r.stdout)).toEqual({ name: 'x', cidrs: ['10.9.0.0/16'] });
    expect((await connected('api', 'POST', '/v1/provision', '--data', '{bad')).code).toBe(2);
  });

  it('delete refuses kinds the API cannot delete', async () => {
    expect((await connected('delete', 'revisions', '3')).code).toBe(2);
    fx.api.store.set('/v1/policies/old', { name: 'old', scope: {} });
    const r = await connected('delete', 'policy', 'old');
    expect(r.code).toBe(0);
    expect(fx.api.writes()).toEqual([['DELETE', '/v1/policies/old']]);
  });
});

import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FakeApi } from './fake-api.js';
import { unifiedDiff } from './gitops.js';
import { useCliFixture } from './test-util.js';

const fx = useCliFixture({ prefix: 'bulkhead-gitops-' });
const cli = (target: FakeApi, argv: string[]) => fx.connected(argv, target);

const SERVER_TIMES = { createdAt: '2026-01-02T03:04:05Z', updatedAt: '2026-01-03T00:00:00Z' };

/** A server state with fields in odd orders and server-only fields, as a real store may answer. */
function seed(target: FakeApi): void {
  target.store.set('/v1/ip-lists/office', {
    cidrs: ['192.0.2.0/24', '2001:db8:1::/48'],
    name: 'office',
    except: ['192.0.2.128/25'],
    ...SERVER_TIMES,
  });
  target.store.set('/v1/services/https', {
    ports: [{ port: 443, protocol: 'tcp' }],
    name: 'https',
    version: 3,
  });
  target.store.set('/v1/services/dns', {
    name: 'dns',
    description: 'resolvers',
    ports: [
      { protocol: 'udp', port: 53 },
      { protocol: 'tcp', port: 53 },
    ],
  });
  target.store.set('/v1/policies/web-ingress', {
    ingress: [
      {
        services: ['https', { protocol: 'tcp', endPort: 8100, port: 8000 }],
        peers: [{ ipList: 'office' }, { selector: { matchLabels: { role: 'lb', app: 'web' } } }],
        action: 'allow',
      },
    ],
    scope: { matchLabels: { app: 'web' } },
    name: 'web-ingress',
    ...SERVER_TIMES,
  });
  seedWorkloads(target, { app: 'web', name: 'front', env: 'prod' }, 'enforce');
}

function seedWorkloads(target: FakeApi, labels: Record<string, string>, ingress: string): void {
  target.store.set('/v1/workloads/web-1', {
    name: 'web-1',
    addresses: ['10.0.0.5'],
    labels,
    mode: { ingress, egress: 'monitor' },
    ...SERVER_TIMES,
  });
}

async function readDir(path: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(path)).sort())
    out[name] = await readFile(join(path, name), 'utf8');
  return out;
}

describe('export', () => {
  it('writes one file per kind, in name order, without server-only fields', async () => {
    seed(fx.api);
    const out = join(fx.dir, 'state');

    const r = await cli(fx.api, ['export', '-o', out]);

    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const files = await readDir(out);
    expect(Object.keys(files)).toEqual([
      'ip-lists.yaml',
      'policies.yaml',
      'services.yaml',
      'workloads.yaml',
    ]);
    expect(files['services.yaml']).toBe(
      [
        'kind: Service',
        'name: dns',
        'description: resolvers',
        'ports:',
        '  - protocol: udp',
        '    port: 53',
        '  - protocol: tcp',
        '    port: 53',
        '---',
        'kind: Service',
        'name: https',
        'ports:',
        '  - protocol: tcp',
        '    port: 443',
        '',
      ].join('\n'),
    );
    expect(files['workloads.yaml']).toBe(
      [
        'kind: Workload',
        'name: web-1',
        'labels:',
        '  app: web',
        '  env: prod',
        '  name: front',
        'mode:',
        '  ingress: enforce',
        '  egress: monitor',
        '',
      ].join('\n'),
    );
    expect(files['policies.yaml']).toContain(
      [
        'name: web-ingress',
        'scope:',
        '  matchLabels:',
        '    app: web',
        'ingress:',
        '  - action: allow',
      ].join('\n'),
    );
    expect(files['policies.yaml']).toContain(
      'matchLabels:\n            app: web\n            role: lb',
    );
    for (const text of Object.values(files)) {
      expect(text).not.toMatch(/createdAt|updatedAt|version|addresses/);
    }
    expect(fx.api.writes()).toEqual([]);
  });

  it('round-trips: export, apply to a fresh server, export again gives the same bytes', async () => {
    seed(fx.api);
    const first = join(fx.dir, 'first');
    expect((await cli(fx.api, ['export', '--output-dir', first])).code).toBe(0);

    // Against the same server, apply has nothing to do.
    const same = await cli(fx.api, ['apply', '-f', first]);
    expect(same.code).toBe(0);
    expect(same.stdout.trimEnd().split('\n')).toEqual([
      'ip-list/office unchanged',
      'service/dns unchanged',
      'service/https unchanged',
      'policy/web-ingress unchanged',
      'workload/web-1 unchanged',
    ]);
    expect(fx.api.writes()).toEqual([]);

    // A fresh server knows only the enrolled host, with other labels and mode.
    const fresh = new FakeApi();
    await fresh.start();
    try {
      seedWorkloads(fresh, { app: 'unlabelled' }, 'monitor');
      const applied = await cli(fresh, ['apply', '-f', first]);
      expect(applied.stderr).toBe('');
      expect(applied.code).toBe(0);
      expect(fresh.writes()).toHaveLength(5);

      const second = join(fx.dir, 'second');
      expect((await cli(fresh, ['-o', 'yaml', 'export', '-o', second])).code).toBe(0);
      expect(await readDir(second)).toEqual(await readDir(first));
      expect((await cli(fresh, ['diff', '-f', first, '--prune'])).code).toBe(0);
    } finally {
      await fresh.stop();
    }
  });

  it('exits 2 without an output directory', async () => {
    const r = await cli(fx.api, ['export']);
    expect(r.code).toBe(2);
    expect(fx.api.requests).toEqual([]);
  });
});

describe('diff', () => {
  async function exported(): Promise<string> {
    seed(fx.api);
    const out = join(fx.dir, 'state');
    expect((await cli(fx.api, ['export', '-o', out])).code).toBe(0);
    return out;
  }

  it('exits 0 and says so when nothing would change', async () => {
    const files = await exported();
    const r = await cli(fx.api, ['diff', '-f', files, '--prune']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('no changes (5 unchanged)\n');
  });

  it('exits 5 and prints additions, changes with a unified diff, and deletions with --prune', async () => {
    const files = await exported();
    const policies = join(files, 'policies.yaml');
    await writeFile(
      policies,
      (await readFile(policies, 'utf8')).replace('role: lb', 'role: proxy'),
    );
    await writeFile(
      join(files, 'services.yaml'),
      'kind: Service\nname: https\nports: [{protocol: tcp, port: 443}]\n---\n' +
        'kind: Service\nname: ssh\nports: [{protocol: tcp, port: 22}]\n',
    );
    await writeFile(
      join(files, 'workloads.yaml'),
      'kind: Workload\nname: web-1\nmode: {egress: enforce}\n',
    );
    const before = fx.api.requests.length;

    const r = await cli(fx.api, ['diff', '-f', files, '--prune']);

    expect(r.stderr).toBe('');
    expect(r.code).toBe(5);
    expect(r.stdout).toBe(
      [
        '+ service/ssh',
        '~ policy/web-ingress (ingress)',
        '    @@ -11,5 +11,5 @@',
        '               matchLabels:',
        '                 app: web',
        '    -            role: lb',
        '    +            role: proxy',
        '         services:',
        '           - https',
        '~ workload/web-1 (mode)',
        '    @@ -7,3 +7,3 @@',
        '     mode:',
        '       ingress: enforce',
        '    -  egress: monitor',
        '    +  egress: enforce',
        '- service/dns',
        '1 to add, 2 to change, 1 to delete, 2 unchanged',
        '',
      ].join('\n'),
    );
    expect(fx.api.requests.slice(before).every((q) => q.method === 'GET')).toBe(true);

    // Without --prune, objects missing from the files are left alone.
    const kept = await cli(fx.api, ['diff', '-f', files]);
    expect(kept.code).toBe(5);
    expect(kept.stdout).not.toContain('- service/dns');
    expect(kept.stdout).toContain('1 to add, 2 to change, 0 to delete, 2 unchanged\n');
  });

  it('exits 3 on invalid files and 1 when the server fails, sending nothing in the first case', async () => {
    const bad = join(fx.dir, 'bad.yaml');
    await writeFile(bad, 'kind: IpList\nname: x\ncidrs: [10.0.0.0/33]\n');
    const invalid = await cli(fx.api, ['diff', '-f', bad]);
    expect(invalid.code).toBe(3);
    expect(invalid.stderr).toContain('bad.yaml:3: cidrs[0]:');
    expect(fx.api.requests).toEqual([]);

    const good = join(fx.dir, 'good.yaml');
    await writeFile(good, 'kind: IpList\nname: x\ncidrs: [10.0.0.0/8]\n');
    fx.api.override = () => ({
      status: 500,
      body: { error: { code: 'INTERNAL', message: 'boom' } },
    });
    const failed = await cli(fx.api, ['diff', '-f', good]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain('boom');
  });

  it('exits 1 for a workload the server does not know, naming it', async () => {
    const file = join(fx.dir, 'w.yaml');
    await writeFile(file, 'kind: Workload\nname: ghost\nlabels: {app: x}\n');
    const r = await cli(fx.api, ['diff', '-f', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('workload/ghost: no such workload');
  });
});

describe('apply --prune', () => {
  it('deletes policies before services and ip lists, and never workloads', async () => {
    seed(fx.api);
    fx.api.store.set('/v1/workloads/db-1', { name: 'db-1', labels: {}, mode: {} });
    const file = join(fx.dir, 'only.yaml');
    await writeFile(file, 'kind: Service\nname: https\nports: [{protocol: tcp, port: 443}]\n');

    const r = await cli(fx.api, ['apply', '-f', file, '--prune']);

    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(fx.api.writes()).toEqual([
      ['DELETE', '/v1/policies/web-ingress'],
      ['DELETE', '/v1/services/dns'],
      ['DELETE', '/v1/ip-lists/office'],
    ]);
    expect(r.stdout).toBe(
      [
        'service/https unchanged',
        'policy/web-ingress deleted',
        'service/dns deleted',
        'ip-list/office deleted',
        '',
      ].join('\n'),
    );
    expect(fx.api.store.has('/v1/workloads/web-1')).toBe(true);
    expect(fx.api.store.has('/v1/workloads/db-1')).toBe(true);
  });

  it('refuses to prune when the files hold no documents', async () => {
    seed(fx.api);
    const empty = join(fx.dir, 'empty.yaml');
    await writeFile(empty, '# nothing yet\n');
    const r = await cli(fx.api, ['apply', '-f', empty, '--prune']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('refusing');
    expect(fx.api.requests).toEqual([]);
  });

  it('without --prune deletes nothing', async () => {
    seed(fx.api);
    const file = join(fx.dir, 'only.yaml');
    await writeFile(file, 'kind: Service\nname: https\nports: [{protocol: tcp, port: 443}]\n');
    expect((await cli(fx.api, ['apply', '-f', file])).code).toBe(0);
    expect(fx.api.writes()).toEqual([]);
  });
});

describe('revisions and rollback', () => {
  it('revisions prints REV, AUTHOR, CREATED, NOTE', async () => {
    fx.api.override = (q) =>
      q.url === '/v1/revisions'
        ? {
            status: 200,
            body: [
              { revision: 2, author: 'ci', note: 'open https', createdAt: '2026-02-01T10:00:00Z' },
              { revision: 1, author: 'admin', note: '', createdAt: '2026-01-01T09:00:00Z' },
            ],
          }
        : undefined;
    const r = await cli(fx.api, ['revisions']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        'REV  AUTHOR  CREATED               NOTE',
        '2    ci      2026-02-01T10:00:00Z  open https',
        '1    admin   2026-01-01T09:00:00Z  -',
        '',
      ].join('\n'),
    );
  });

  it('rollback posts the note and prints the new revision', async () => {
    fx.api.override = (q) =>
      q.method === 'POST'
        ? { status: 200, body: { revision: 9, changed: ['web-1'], unchanged: 4 } }
        : undefined;
    const r = await cli(fx.api, ['rollback', '3', '--note', 'bad deploy']);
    expect(r.code).toBe(0);
    expect(fx.api.requests.map((q) => [q.method, q.url, q.body])).toEqual([
      ['POST', '/v1/revisions/3/rollback', { note: 'bad deploy' }],
    ]);
    expect(r.stdout).toBe(
      'revision 9 (rollback to 3): 1 workload(s) changed, 4 unchanged\n  web-1\n',
    );
  });

  it('rollback exits 2 on a revision that is not a positive number or without --note, and 1 when it is unknown', async () => {
    expect((await cli(fx.api, ['rollback', 'latest', '--note', 'x'])).code).toBe(2);
    expect((await cli(fx.api, ['rollback', '0', '--note', 'x'])).code).toBe(2);
    const noNote = await cli(fx.api, ['rollback', '3']);
    expect(noNote.code).toBe(2);
    expect(noNote.stderr).toContain('--note');
    expect(fx.api.requests).toEqual([]);
    const unknown = await cli(fx.api, ['rollback', '42', '--note', 'x']);
    expect(unknown.code).toBe(1);
    expect(fx.api.requests.map((q) => q.body)).toEqual([{ note: 'x' }]);
  });
});

describe('unifiedDiff', () => {
  it('keeps context lines around each change and merges close changes', () => {
    const a = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'];
    const b = ['a', 'B', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'J'];
    expect(unifiedDiff(a, b, 1)).toEqual([
      '@@ -1,3 +1,3 @@',
      ' a',
      '-b',
      '+B',
      ' c',
      '@@ -9,2 +9,2 @@',
      ' i',
      '-j',
      '+J',
    ]);
    expect(unifiedDiff(a, b, 4)).toHaveLength(1 + 10 + 2);
    expect(unifiedDiff(a, a, 2)).toEqual([]);
  });

  it('its kept and added lines rebuild the new text, its kept and removed lines the old', () => {
    const a = ['x', 'y', 'z', 'y', 'x'];
    const b = ['y', 'x', 'z', 'z', 'x', 'w'];
    const lines = unifiedDiff(a, b, 100).filter((l) => !l.startsWith('@@'));
    expect(lines.filter((l) => l[0] !== '+').map((l) => l.slice(1))).toEqual(a);
    expect(lines.filter((l) => l[0] !== '-').map((l) => l.slice(1))).toEqual(b);
  });
});

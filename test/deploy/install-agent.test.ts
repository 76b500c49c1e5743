import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEPLOY, REPO, run } from './tools.js';

const INSTALL = join(DEPLOY, 'install-agent.sh');
const tmp = mkdtempSync(join(tmpdir(), 'bulkhead-install-'));
let tarball = '';
const ca = join(tmp, 'ca.crt');
const tokenFile = join(tmp, 'token');

beforeAll(() => {
  const pack = run('bash', [join(REPO, 'scripts', 'pack-agent.sh'), '--out', tmp]);
  expect(pack.code, pack.stderr).toBe(0);
  tarball = pack.stdout.trim();
  const cert = run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    join(tmp, 'ca.key'),
    '-out',
    ca,
    '-days',
    '1',
    '-subj',
    '/CN=test-ca',
  ]);
  expect(cert.code, cert.stderr).toBe(0);
  writeFileSync(tokenFile, 'bhe_0123456789abcdef\n');
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function newRoot(): string {
  const root = mkdtempSync(join(tmp, 'root-'));
  return root;
}

function install(root: string, extra: string[] = [], from = tarball) {
  return run('bash', [
    INSTALL,
    '--server',
    'cp.example.internal:8443',
    '--server-name',
    'cp.example.internal',
    '--ca',
    ca,
    '--token-file',
    tokenFile,
    '--label',
    'app=shop',
    '--label',
    'role=db',
    '--hostname',
    'db-1',
    '--root',
    root,
    '--from',
    from,
    ...extra,
  ]);
}

/** path -> "mode size mtime" for every file under root, to tell whether a run wrote anything. */
function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(root, { recursive: true }) as string[]) {
    const s = statSync(join(root, f), { throwIfNoEntry: false });
    if (s) out[f] = `${s.mode.toString(8)} ${s.size} ${s.mtimeMs} ${s.ino}`;
  }
  return out;
}

const mode = (path: string) => (statSync(path).mode & 0o7777).toString(8);

describe('deploy/install-agent.sh', () => {
  it('installs the agent, its configuration and the unit under --root', () => {
    const root = newRoot();
    const r = install(root);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/6 change\(s\); not started/);
    expect(readFileSync(join(root, 'etc/systemd/system/bulkhead-agent.service'), 'utf8')).toBe(
      readFileSync(join(DEPLOY, 'systemd/bulkhead-agent.service'), 'utf8'),
    );
    expect(mode(join(root, 'etc/systemd/system/bulkhead-agent.service'))).toBe('644');
    expect(
      readFileSync(join(root, 'etc/systemd/system/bulkhead-agent-restore.service'), 'utf8'),
    ).toBe(readFileSync(join(DEPLOY, 'systemd/bulkhead-agent-restore.service'), 'utf8'));
    expect(readFileSync(join(root, 'etc/bulkhead/ca.crt'), 'utf8')).toBe(readFileSync(ca, 'utf8'));
    expect(mode(join(root, 'etc/bulkhead/ca.crt'))).toBe('644');
    expect(readFileSync(join(root, 'etc/bulkhead/bootstrap-token'), 'utf8')).toBe(
      'bhe_0123456789abcdef\n',
    );
    expect(mode(join(root, 'etc/bulkhead/bootstrap-token'))).toBe('600');
    const env = readFileSync(join(root, 'etc/default/bulkhead-agent'), 'utf8');
    expect(env).toContain('BULKHEAD_CONTROL_PLANE=cp.example.internal:8443\n');
    expect(env).toContain(
      'BULKHEAD_AGENT_ARGS="--server-name cp.example.internal --hostname db-1 --label app=shop --label role=db"\n',
    );
    // The installed tree runs on its own: from /, with nothing of this checkout on the path.
    const agent = run(
      '/usr/bin/node',
      [join(root, 'opt/bulkhead-agent/packages/agent/dist/main.js'), '--version'],
      { cwd: '/' },
    );
    expect(agent.code, agent.stderr).toBe(0);
    expect(agent.stdout.trim()).toBe(
      JSON.parse(readFileSync(join(REPO, 'packages/agent/package.json'), 'utf8')).version,
    );
  });

  it('changes nothing on a second run, also from the checkout itself, and says so', () => {
    const root = newRoot();
    expect(install(root).code).toBe(0);
    const before = snapshot(root);
    const again = install(root);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/nothing to change\n$/);
    expect(again.stdout).not.toMatch(/wrote|installed/);
    // A checkout is packed on the fly; the pack is deterministic, so this is no change either.
    const fromCheckout = install(root, [], REPO);
    expect(fromCheckout.code, fromCheckout.stderr).toBe(0);
    expect(fromCheckout.stdout).toMatch(/nothing to change\n$/);
    expect(snapshot(root)).toEqual(before);
  });

  it('rewrites only what a changed input touches, and keeps the token once enrolled', () => {
    const root = newRoot();
    expect(install(root).code).toBe(0);
    mkdirSync(join(root, 'var/lib/bulkhead-agent'), { recursive: true });
    writeFileSync(join(root, 'var/lib/bulkhead-agent/agent-id'), 'a1\n');
    writeFileSync(join(root, 'etc/bulkhead/bootstrap-token'), ''); // retired after enrolment
    const r = install(root, ['--label', 'env=prod']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.match(/^install-agent: (wrote|installed) .*$/gm)).toEqual([
      'install-agent: wrote /etc/default/bulkhead-agent',
    ]);
    expect(r.stdout).toContain('already enrolled');
    expect(readFileSync(join(root, 'etc/bulkhead/bootstrap-token'), 'utf8')).toBe('');
  });

  it.each([
    [['--server', 'cp.example.internal'], /--server: expected HOST:PORT/],
    [['--server', 'cp:99999'], /--server: expected HOST:PORT/],
    [['--server-name', 'cp example'], /--server-name: not a DNS name/],
    [['--label', 'app=a b'], /--label: expected key=value/],
    [['--label', 'app="$(id)"'], /--label: expected key=value/],
    [['--hostname', 'db;1'], /--hostname: not a host name/],
    [['--admin-cidr', '10.0.0.0'], /--admin-cidr: not a CIDR/],
    [['--ca', '/nonexistent/ca.crt'], /--ca: cannot read/],
    [['--ca', tokenFile], /--ca: .* is not a PEM certificate/],
    [['--token-file', '/dev/null'], /--token-file: .* must hold one token/],
    [['--from', tokenFile], /--from: .* is not a bulkhead-agent tarball/],
    [['--bogus'], /unknown argument: --bogus/],
  ])('refuses %j with exit 2, one clear line and nothing written', (extra, message) => {
    const root = newRoot();
    const r = install(root, extra);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(readdirSync(root)).toEqual([]);
  });

  it('refuses a missing required flag', () => {
    const r = run('bash', [INSTALL, '--server', 'cp:8443', '--root', newRoot()]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--server-name is required/);
  });

  it("enrols for real: the unit's own command line against a control plane in a namespace", () => {
    const r = run('unshare', [
      '--net',
      '--',
      'bash',
      join(REPO, 'test/deploy/install-enrol.sh'),
      tarball,
    ]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/enrolled as [0-9a-f-]{36}, table inet bulkhead present/);
  });
});

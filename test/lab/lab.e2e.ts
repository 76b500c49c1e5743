import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupStaleLabs, createLab, type Lab, LabError } from '@bulkhead/lab';
import { useLab } from '@bulkhead/lab/vitest';
import { afterAll, describe, expect, it } from 'vitest';

const netnsList = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
// The namespaces of this process's labs: other e2e files (run in parallel) and other runs on
// the machine create and delete theirs at any moment, so only these can be compared.
const ownNetns = () =>
  netnsList()
    .split('\n')
    .filter((l) => l.startsWith(`bhlab-${process.pid}-`))
    .sort();

// nftables JSON (libnftables-json(5)), never nft syntax strings: the same input form the
// agent uses, so these rules exercise the path the product takes.
const table = { family: 'inet', table: 'labtest' };
const match = (left: unknown, right: unknown, op = '==') => ({ match: { op, left, right } });
const ctNew = match({ ct: { key: 'state' } }, 'new', 'in');

/** The test table with an input chain; `expr` rules appended in the same transaction. */
function nftInput(...rules: unknown[][]) {
  return JSON.stringify({
    nftables: [
      { add: { table: { family: 'inet', name: 'labtest' } } },
      {
        add: {
          chain: {
            ...table,
            name: 'input',
            type: 'filter',
            hook: 'input',
            prio: 0,
            policy: 'accept',
          },
        },
      },
      ...rules.map((expr) => ({ add: { rule: { ...table, chain: 'input', expr } } })),
    ],
  });
}

function dropTcpPort(port: number, { newOnly = false } = {}) {
  return [
    ...(newOnly ? [ctNew] : []),
    match({ payload: { protocol: 'tcp', field: 'dport' } }, port),
    { drop: null },
  ];
}

describe('lab', () => {
  const getLab = useLab({ hosts: ['a', 'b', 'c'] });

  it('builds hosts with addresses only inside lab namespaces', async () => {
    const lab = getLab();
    expect(Object.keys(lab.hosts)).toEqual(['a', 'b', 'c']);
    expect(lab.hosts.b!.ipv4).toBe(`10.231.${lab.index}.11`);
    const addrs = await lab.exec('c', ['ip', '-j', 'addr', 'show', 'dev', 'eth0'], { check: true });
    const local = (
      JSON.parse(addrs.stdout) as { addr_info: { local: string }[] }[]
    )[0]!.addr_info.map((a) => a.local);
    expect(local).toEqual(expect.arrayContaining([lab.hosts.c!.ipv4, lab.hosts.c!.ipv6]));
    const root = execFileSync('ip', ['-o', 'addr'], { encoding: 'utf8' });
    expect(root).not.toContain(lab.hosts.c!.ipv4);
    expect(root).not.toContain(lab.hosts.c!.ipv6);
    expect(netnsList()).toContain(lab.hosts.a!.netns);
  });

  it('exec feeds input, reports exit codes and kills what outlives its timeout', async () => {
    const lab = getLab();
    expect(
      await lab.exec('a', ['sh', '-c', 'cat; echo oops >&2; exit 3'], { input: 'hi' }),
    ).toEqual({ code: 3, stdout: 'hi', stderr: 'oops\n' });
    await expect(lab.exec('a', ['false'], { check: true })).rejects.toMatchObject({
      code: 'LAB_EXEC_FAILED',
    });
    // The shell exits at once, but its background child holds stdout open.
    await expect(
      lab.exec('a', ['sh', '-c', 'sleep 300 & echo started'], { timeoutMs: 300 }),
    ).rejects.toMatchObject({ code: 'LAB_TIMEOUT' });
    // SIGKILL is asynchronous: give the kernel a moment to reap before looking (up to 10 s: a
    // loaded machine, e.g. two e2e files at once on 2 cores, reaps late).
    const pidsInA = () =>
      execFileSync('ip', ['netns', 'pids', lab.hosts.a!.netns], { encoding: 'utf8' });
    for (let i = 0; i < 200 && pidsInA() !== ''; i++) await new Promise((r) => setTimeout(r, 50));
    expect(pidsInA()).toBe('');
  });

  it('carries TCP and UDP round trips between every pair over IPv4 and IPv6', async () => {
    const lab = getLab();
    const names = Object.keys(lab.hosts);
    await Promise.all(
      names.flatMap((h) => [lab.listen(h, 'tcp', 7001), lab.listen(h, 'udp', 7001)]),
    );
    const probes: { label: string; ok: Promise<boolean> }[] = [];
    for (const from of names) {
      for (const to of names.filter((n) => n !== from)) {
        for (const addr of [lab.hosts[to]!.ipv4, lab.hosts[to]!.ipv6!]) {
          for (const proto of ['tcp', 'udp'] as const) {
            probes.push({
              label: `${from}->${addr} ${proto}`,
              ok: lab.connect(from, addr, proto, 7001),
            });
          }
        }
      }
    }
    const results = await Promise.all(probes.map(async (p) => `${p.label} ${await p.ok}`));
    expect(results).toEqual(probes.map((p) => `${p.label} true`));
    // A port nobody listens on must fail, or `true` above would mean nothing.
    expect(await lab.connect('a', lab.hosts.b!.ipv4, 'tcp', 7999)).toBe(false);
    expect(await lab.connect('a', lab.hosts.b!.ipv6!, 'udp', 7999, { timeoutMs: 500 })).toBe(false);
  });

  it('an nft drop rule in one host blocks that port only', async () => {
    const lab = getLab();
    const b = lab.hosts.b!;
    await Promise.all([lab.listen('b', 'tcp', 7101), lab.listen('b', 'tcp', 7102)]);
    expect(await lab.connect('a', b.ipv4, 'tcp', 7101)).toBe(true);
    await lab.exec('b', ['nft', '-j', '-f', '-'], {
      input: nftInput(dropTcpPort(7101)),
      check: true,
    });
    const [v4, v6, other] = await Promise.all([
      lab.connect('a', b.ipv4, 'tcp', 7101, { timeoutMs: 800 }),
      lab.connect('a', b.ipv6!, 'tcp', 7101, { timeoutMs: 800 }),
      lab.connect('a', b.ipv4, 'tcp', 7102),
    ]);
    expect({ v4, v6, other }).toEqual({ v4: false, v6: false, other: true });
    await lab.exec('b', ['nft', 'delete', 'table', 'inet', 'labtest'], { check: true });
    expect(await lab.connect('a', b.ipv4, 'tcp', 7101)).toBe(true);
  });

  it('a held-open connection survives a rule that drops new connections', async () => {
    const lab = getLab();
    const c = lab.hosts.c!;
    await lab.listen('c', 'tcp', 7201);
    // Conntrack must already track the flow when the rule lands, as the agent's table
    // does in production: a flow first seen mid-stream (loose pickup) has ct state new
    // on its first packet, so the held connection would be cut.
    await lab.exec('c', ['nft', '-j', '-f', '-'], {
      input: nftInput([ctNew, { counter: null }]),
      check: true,
    });
    const held = await lab.openTcp('a', c.ipv4, 7201);
    try {
      expect(await held.ping()).toBe(true);
      await lab.exec('c', ['nft', '-j', '-f', '-'], {
        input: nftInput(dropTcpPort(7201, { newOnly: true })),
        check: true,
      });
      expect(await lab.connect('a', c.ipv4, 'tcp', 7201, { timeoutMs: 800 })).toBe(false);
      expect(await held.ping()).toBe(true);
      // Control: without the ct state match the same flow is cut, so the pass above is real.
      await lab.exec('c', ['nft', '-j', '-f', '-'], {
        input: nftInput(dropTcpPort(7201)),
        check: true,
      });
      expect(await held.ping({ timeoutMs: 800 })).toBe(false);
    } finally {
      await held.close();
      await lab.exec('c', ['nft', 'delete', 'table', 'inet', 'labtest']);
    }
  });

  it('nsFetch talks HTTP to a server in another namespace', async () => {
    const lab = getLab();
    const server = lab.spawn('c', [
      process.execPath,
      '-e',
      `require('node:http').createServer((req, res) => {
         let body = '';
         req.on('data', (d) => (body += d));
         req.on('end', () => res.end(JSON.stringify({ method: req.method, url: req.url,
           token: req.headers['x-token'], body: body && JSON.parse(body), from: req.socket.remoteAddress })));
       }).listen(8080, '::', () => console.log('http ready'));`,
    ]);
    await server.waitForLog(/http ready/);
    const http = await lab.nsFetch('a');
    try {
      const c = lab.hosts.c!;
      const [v4, v6] = await Promise.all([
        http.request('POST', `http://${c.ipv4}:8080/things`, {
          headers: { 'x-token': 't1' },
          body: { n: 1 },
        }),
        http.request('GET', `http://[${c.ipv6}]:8080/v6`),
      ]);
      expect(v4.status).toBe(200);
      expect(v4.json).toEqual({
        method: 'POST',
        url: '/things',
        token: 't1',
        body: { n: 1 },
        from: `::ffff:${lab.hosts.a!.ipv4}`,
      });
      expect(v6.json).toMatchObject({ method: 'GET', url: '/v6', from: lab.hosts.a!.ipv6 });
      await expect(http.request('GET', `http://${c.ipv4}:8081/`)).rejects.toMatchObject({
        code: 'LAB_PROCESS_FAILED',
      });
    } finally {
      await http.close();
    }
  });
});

describe('lab lifecycle', () => {
  const labs: Lab[] = [];
  afterAll(async () => {
    await Promise.all(labs.map((l) => l.destroy()));
  });

  it('rejects bad options before touching the system', async () => {
    await expect(createLab({ hosts: ['a', 'a'] })).rejects.toMatchObject({ code: 'LAB_INVALID' });
    await expect(createLab({ hosts: ['Bad Name'] })).rejects.toBeInstanceOf(LabError);
  });

  it('destroy kills processes and deletes every namespace, twice over', async () => {
    const lab = await createLab({ hosts: ['x', 'y'], ipv6: false });
    labs.push(lab);
    expect(lab.hosts.x!.ipv6).toBeUndefined();
    const sleeper = lab.spawn('x', ['sleep', '300']);
    const listener = await lab.listen('y', 'udp', 0);
    expect(listener.port).toBeGreaterThan(0);
    expect(await lab.connect('x', lab.hosts.y!.ipv4, 'udp', listener.port)).toBe(true);
    const ours = () =>
      netnsList()
        .split('\n')
        .filter((l) => l.startsWith(lab.name));
    expect(ours()).toHaveLength(3); // x, y and the switch

    await lab.destroy();
    await lab.destroy();
    expect(ours()).toEqual([]);
    expect((await sleeper.exited).signal).toBe('SIGTERM');
    expect(listener.process.child.exitCode ?? listener.process.child.signalCode).not.toBeNull();
    expect(existsSync(lab.logDir)).toBe(false);
    await expect(lab.exec('x', ['true'])).rejects.toMatchObject({ code: 'LAB_DESTROYED' });
  });

  it('a creation that fails half-way removes what it made', async () => {
    // An `ip` that refuses to create the bridge, after the switch namespace already exists.
    const bin = mkdtempSync(join(tmpdir(), 'bhlab-fake-ip-'));
    const realIp = execFileSync('sh', ['-c', 'command -v ip'], { encoding: 'utf8' }).trim();
    writeFileSync(
      join(bin, 'ip'),
      `#!/bin/sh\ncase "$*" in *"type bridge"*) echo injected >&2; exit 2;; esac\nexec ${realIp} "$@"\n`,
      { mode: 0o755 },
    );
    const before = ownNetns();
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      await expect(createLab({ hosts: ['q'] })).rejects.toMatchObject({
        code: 'LAB_SETUP_FAILED',
        message: expect.stringContaining('injected'),
      });
    } finally {
      process.env.PATH = path;
      rmSync(bin, { recursive: true, force: true });
    }
    expect(ownNetns()).toEqual(before);
  });

  it('cleanupStaleLabs removes namespaces of dead runs and keeps live ones', async () => {
    const live = await createLab({ hosts: ['z'] });
    labs.push(live);
    // A pid that surely belonged to a process that is gone now.
    const deadPid = Number(execFileSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).trim());
    const stale = `bhlab-${deadPid}-250-ghost`;
    try {
      // Any createLab running elsewhere (a parallel e2e file, another run) cleans up stale labs
      // too and may remove the ghost first; this test needs its own call to be the one.
      let removed: string[] = [];
      for (let attempt = 0; attempt < 5 && !removed.includes(stale); attempt++) {
        execFileSync('ip', ['netns', 'add', stale]);
        removed = await cleanupStaleLabs();
      }
      expect(removed).toContain(stale);
      expect(netnsList()).not.toContain(stale);
      expect(netnsList()).toContain(live.hosts.z!.netns);
    } finally {
      if (netnsList().includes(stale)) execFileSync('ip', ['netns', 'del', stale]);
    }
  });
});

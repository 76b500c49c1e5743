// The built `bulkhead-agent` binary against the built control plane (both started as processes;
// run `npm run build` first): a request the control plane refuses ends the agent with status 2
// and the server's message on one line, after one attempt; so does a metrics port in use.
// Nothing reaches nftables: the agent never enrols, so it never applies anything.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const HERE = dirname(fileURLToPath(import.meta.url));
const AGENT_MAIN = join(HERE, '..', 'dist', 'main.js');
const CP_MAIN = join(HERE, '..', '..', 'control-plane', 'dist', 'main.js');

function runAgent(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ status: number | null; stderr: string }> {
  const child = spawn(process.execPath, [AGENT_MAIN, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => {
    stderr += b.toString('utf8');
  });
  // A hung agent (retrying forever) fails through the test timeout; kill it then.
  // Generous: two shared cores under load start node slowly.
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  return new Promise((resolve) =>
    child.once('close', (status) => {
      clearTimeout(killer);
      resolve({ status, stderr });
    }),
  );
}

describe('bulkhead-agent binary against a real control plane', () => {
  let dir: string;
  let cp: ChildProcess;
  let grpcPort: number;
  let token: string;

  beforeAll(async () => {
    expect(existsSync(AGENT_MAIN) && existsSync(CP_MAIN), 'run npm run build first').toBe(true);
    dir = mkdtempSync(join(tmpdir(), 'bh-agent-main-'));
    cp = spawn(
      process.execPath,
      [CP_MAIN, '--data-dir', dir, '--api-listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const listening = await new Promise<{ api: string; grpcPort: number }>((resolve, reject) => {
      cp.once('exit', (code) => reject(new Error(`control plane exited ${code}`)));
      createInterface({ input: cp.stdout! }).on('line', (line) => {
        const msg = JSON.parse(line) as { msg: string; api: string; grpcPort: number };
        if (msg.msg === 'control plane listening') resolve(msg);
      });
    });
    grpcPort = listening.grpcPort;
    const admin = readFileSync(join(dir, 'initial-admin-token'), 'utf8').trim();
    const res = await fetch(`${listening.api}/v1/enrollment-tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ttlSeconds: 600 }),
    });
    expect(res.status).toBe(201);
    token = ((await res.json()) as { token: string }).token;
  }, 30_000);
  afterAll(async () => {
    if (cp?.exitCode === null) {
      const exited = new Promise((r) => cp.once('exit', r));
      cp.kill('SIGTERM');
      await exited;
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const agent = (name: string, ...args: string[]) =>
    runAgent([
      '--control-plane',
      `127.0.0.1:${grpcPort}`,
      '--ca-cert',
      join(dir, 'ca', 'ca.crt'),
      '--state-dir',
      join(dir, `agent-${name}`),
      '--hostname',
      name,
      '--metrics-listen',
      '127.0.0.1:0',
      '--nft-backend',
      'nft',
      ...args,
    ]);

  it.each([
    [
      'a bad label',
      ['--bootstrap-token', 'TOKEN', '--label', 'app=not a value!'],
      'INVALID_ARGUMENT',
      'labels',
    ],
    [
      'a bad hostname',
      ['--bootstrap-token', 'TOKEN', '--hostname', 'bad host!'],
      'INVALID_ARGUMENT',
      'name: must be', // the control plane calls the hostname the workload name
    ],
    ['a bad token', ['--bootstrap-token', 'bh_not-a-token'], 'UNAUTHENTICATED', 'token'],
  ])(
    'exits 2 with the server message for %s',
    async (_, args, code, field) => {
      const r = await agent(
        `h${Math.random().toString(36).slice(2, 8)}`,
        ...args.map((a) => (a === 'TOKEN' ? token : a)),
      );
      expect(r.status).toBe(2);
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines).toHaveLength(1); // one clear line, no stack trace
      expect(lines[0]).toMatch(/^bulkhead-agent: the control plane refused the enrolment/);
      expect(lines[0]).toContain(code);
      expect(lines[0]).toContain(field);
    },
    30_000,
  );

  it('exits 2 naming --metrics-listen when the metrics port is taken', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const { port } = taken.address() as AddressInfo;
    try {
      const r = await agent(
        'metrics-clash',
        '--bootstrap-token',
        token,
        '--metrics-listen',
        `127.0.0.1:${port}`,
      );
      expect(r.status).toBe(2);
      expect(r.stderr.trimEnd().split('\n')).toEqual([
        `bulkhead-agent: --metrics-listen 127.0.0.1:${port}: address already in use`,
      ]);
    } finally {
      taken.close();
    }
  }, 30_000);
});

describe('bulkhead-agent settings from flags, environment and --config', {
  timeout: 30_000,
}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'bh-agent-conf-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, value: object) => {
    writeFileSync(join(dir, name), JSON.stringify(value));
    return join(dir, name);
  };

  it.each([
    [
      'an unknown key',
      { 'control-plane': ['cp:8443'], 'ca-cert': '/x', lables: [] },
      {},
      'unknown key "lables"',
    ],
    [
      'a bad value',
      { 'control-plane': ['cp:8443'], 'ca-cert': '/x', 'admin-port': 0 },
      {},
      '"admin-port": --admin-port must be',
    ],
    ['a missing required setting', { 'control-plane': ['cp:8443'] }, {}, '--ca-cert is required'],
    [
      'a bad value in the environment',
      { 'control-plane': ['cp:8443'], 'ca-cert': '/x' },
      { BULKHEAD_AGENT_LABEL: 'no-equals' },
      '--label (environment BULKHEAD_AGENT_LABEL): expected key=value',
    ],
  ])('exits 2 naming the key and its source for %s', async (_, file, env, message) => {
    const path = write(`${Math.random().toString(36).slice(2)}.json`, file);
    const r = await runAgent(['--config', path], env);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(message);
    if (Object.keys(env).length === 0) expect(r.stderr).toContain(path);
  });
});

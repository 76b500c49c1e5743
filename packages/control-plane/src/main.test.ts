import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';

// The process-level contract of the `bulkhead-control-plane` binary (run `npm run build` first).
const MAIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'main.js');
/** What it runs (launcher.mjs): the bundle, with its code cache beside it. */
const BUNDLE = join(dirname(MAIN), 'main.cjs');

const run = (...args: string[]) => runWith({}, ...args);
/** The binary with `env` added to a environment cleared of the control plane's own variables. */
const runWith = (env: Record<string, string>, ...args: string[]) => {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('BULKHEAD_CONTROL_PLANE_')),
  );
  return spawnSync(process.execPath, [MAIN, ...args], {
    encoding: 'utf8',
    env: { ...base, ...env },
  });
};

describe('bulkhead-control-plane binary', () => {
  let dir: string | undefined;
  let child: ChildProcess | undefined;
  afterEach(() => {
    if (child?.exitCode === null) child.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('is built, and bundled from the current build', () => {
    expect(existsSync(MAIN), `${MAIN} missing: run npm run build`).toBe(true);
    // `tsc --build` alone leaves the bundle behind what it compiled: the binary would be older.
    const dist = dirname(MAIN);
    const newest = readdirSync(dist, { recursive: true, encoding: 'utf8' })
      // What the program is made of: not the tests and their helpers, which tsc builds too.
      .filter((f) => f.endsWith('.js') && f !== 'main.js' && !/\.test|test-support/.test(f))
      .map((f) => statSync(join(dist, f)).mtimeMs)
      .reduce((a, b) => Math.max(a, b), 0);
    expect(
      statSync(BUNDLE).mtimeMs,
      'dist/main.cjs is older than what tsc built: npm run build',
    ).toBeGreaterThanOrEqual(newest);
  });

  it("starts from the code cache its build made, which this Node's V8 takes", () => {
    // As launcher.mjs compiles the bundle: V8 takes a cache made for the same text only.
    const source = readFileSync(BUNDLE, 'utf8').replace(/^#!.*/, '');
    const script = new Script(
      `(function (exports, require, module, __filename, __dirname) {${source}\n})`,
      { filename: BUNDLE, cachedData: readFileSync(`${BUNDLE}.cache`) },
    );
    expect(script.cachedDataRejected).toBe(false);
  });

  it('prints its version with --version', () => {
    const r = run('--version');
    expect(r.status).toBe(0);
    const pkg = JSON.parse(readFileSync(join(dirname(MAIN), '..', 'package.json'), 'utf8'));
    expect(r.stdout.trim()).toBe(pkg.version);
  });

  it.each([
    [['--api-listen', 'nope'], '--api-listen'],
    [['--grpc-listen', '127.0.0.1:99999'], '--grpc-listen'],
    [['--log-level', 'loud'], '--log-level'],
    [['--no-such-flag'], '--no-such-flag'],
    [['--siem', 'syslog+udp://siem.example:99999'], '--siem'],
    [['--siem', 'file:///tmp/x.jsonl', '--siem', 'gopher://x'], '--siem'],
    [['--flow-retention-days', '0'], '--flow-retention-days'],
    [['--max-flow-rows', 'many'], '--max-flow-rows'],
    [['--grpc-max-connections-per-source', '0'], '--grpc-max-connections-per-source'],
  ])('exits 2 naming the flag for %j', (args, flag) => {
    const r = run(...args);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(flag);
  });

  describe('settings from flags, environment and --config', { timeout: 30_000 }, () => {
    const conf = mkdtempSync(join(tmpdir(), 'bh-conf-'));
    const file = join(conf, 'control-plane.json');
    writeFileSync(file, JSON.stringify({ 'api-listen': 'nope', 'max-flow-rows': 10 }));
    const unknown = join(conf, 'unknown.json');
    writeFileSync(unknown, JSON.stringify({ 'max-flow-row': 10 }));
    const E = 'BULKHEAD_CONTROL_PLANE_';
    // Each case ends at the first bad value (listen addresses are checked before numbers), so
    // the message shows which source won.
    it.each([
      ['the file over the default', {}, ['--config', file], `"api-listen" in ${file}`],
      [
        'the file named in the environment',
        { [`${E}CONFIG`]: file },
        [],
        `"api-listen" in ${file}`,
      ],
      [
        'a flag over the file',
        {},
        ['--config', file, '--api-listen', '127.0.0.1:0', '--max-flow-rows', 'many'],
        '--max-flow-rows must be',
      ],
      [
        'the environment over the file',
        { [`${E}API_LISTEN`]: '127.0.0.1:0', [`${E}MAX_FLOW_ROWS`]: 'many' },
        ['--config', file],
        `--max-flow-rows (environment ${E}MAX_FLOW_ROWS) must be`,
      ],
      ['an unknown file key', {}, ['--config', unknown], `${unknown}: unknown key "max-flow-row"`],
      ['an unknown variable', { [`${E}MAX_FLOW_ROW`]: '1' }, [], `${E}MAX_FLOW_ROW`],
      ['a bad choice in the environment', { [`${E}LOG_LEVEL`]: 'loud' }, [], `${E}LOG_LEVEL`],
    ])('exits 2 naming where the value came from: %s', (_, env, args, message) => {
      const r = runWith(env, ...args);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(message);
    });
  });

  /** Starts the binary on a fresh data dir under `umask`; resolves once it listens. */
  async function start(umask = '022') {
    const home = mkdtempSync(join(tmpdir(), 'bh-main-'));
    dir = home;
    const args = [
      MAIN,
      '--data-dir',
      home,
      '--api-listen',
      '127.0.0.1:0',
      '--grpc-listen',
      '127.0.0.1:0',
    ];
    child = spawn(
      '/bin/sh',
      ['-c', `umask ${umask} && exec "$0" "$@"`, process.execPath, ...args],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const lines: string[] = [];
    const listening = await new Promise<{ api: string; grpcPort: number }>((resolve, reject) => {
      child!.once('exit', (code) => reject(new Error(`exited ${code}: ${lines.join('\n')}`)));
      createInterface({ input: child!.stdout! }).on('line', (line) => {
        lines.push(line);
        const msg = JSON.parse(line) as { msg: string; api: string; grpcPort: number };
        if (msg.msg === 'control plane listening') resolve(msg);
      });
    });
    return { ...listening, lines, dir: home };
  }

  it('creates the admin token file on first start without logging the token, stops on SIGTERM', async () => {
    const { lines, dir, ...listening } = await start();
    expect((await fetch(`${listening.api}/healthz`)).status).toBe(200);
    const tokenFile = join(dir, 'initial-admin-token');
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    const token = readFileSync(tokenFile, 'utf8').trim();
    expect(token).toMatch(/^bh_/);
    const res = await fetch(`${listening.api}/v1/tokens`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(res.status).toBe(200);
    expect(lines.join('\n')).not.toContain(token);
    expect(lines.join('\n')).toContain(tokenFile);
    // What the bundled binary reads from files beside it or in a dependency's own folder.
    for (const path of ['/docs/', '/docs/static/swagger-ui.css', '/ui/']) {
      const res = await fetch(`${listening.api}${path}`);
      // Read whole: a response left half-sent holds its connection, and so the stop below.
      expect([path, res.status, (await res.arrayBuffer()).byteLength > 0]).toEqual([
        path,
        200,
        true,
      ]);
    }

    // A client that stops reading a response does not hold the stop (cut after a grace period).
    const stalled = await fetch(`${listening.api}/docs/static/swagger-ui-bundle.js`);
    expect(stalled.status).toBe(200);
    const exited = new Promise<number | null>((resolve) => child!.once('exit', resolve));
    child!.kill('SIGTERM');
    expect(await exited).toBe(0);
    await stalled.arrayBuffer().catch(() => undefined);
    // better-sqlite3 checkpoints and removes the WAL when the database is closed cleanly.
    expect(existsSync(join(dir, 'bulkhead.db-wal'))).toBe(false);
  });

  it.each(['022', '000'])(
    'keeps the data dir 0700 and its data files 0600 under umask %s',
    async (umask) => {
      const { dir } = await start(umask);
      const mode = (f: string) => (statSync(join(dir, f)).mode & 0o777).toString(8);
      expect(mode('.')).toBe('700');
      for (const f of [
        'bulkhead.db',
        'bulkhead.db-wal',
        'bulkhead.db-shm',
        'initial-admin-token',
      ]) {
        expect([f, mode(f)]).toEqual([f, '600']);
      }
      expect(mode('ca')).toBe('700');
      for (const f of ['ca.key', 'server.key'])
        expect([f, mode(join('ca', f))]).toEqual([f, '600']);
    },
    // A process start on a loaded CI machine; not a timing assertion.
    20_000,
  );
});

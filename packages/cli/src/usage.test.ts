import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram, CLI_VERSION } from './run.js';
import { useCliFixture } from './test-util.js';

// What a new operator meets first: --help, --version, login's messages, and the command
// names they guess (`enrollment-token list`).

const fx = useCliFixture({ prefix: 'bulkhead-usage-' });
const { cli } = fx;

/** Every command path in the tree, e.g. ['enrollment-token', 'list']. */
function commandPaths(): string[][] {
  const paths: string[][] = [];
  const walk = (cmd: Command, path: string[]) => {
    for (const sub of cmd.commands) {
      paths.push([...path, sub.name()]);
      walk(sub, [...path, sub.name()]);
    }
  };
  walk(
    buildProgram({ stdout: () => {}, stderr: () => {} }, () => {}),
    [],
  );
  return paths;
}

function findCommand(path: string[]): Command {
  let cmd = buildProgram({ stdout: () => {}, stderr: () => {} }, () => {});
  for (const word of path) cmd = cmd.commands.find((c) => c.name() === word)!;
  return cmd;
}

describe('help', () => {
  const paths = commandPaths();

  it('walks the whole tree, nested commands included', () => {
    expect(paths.length).toBeGreaterThan(25);
    expect(paths).toContainEqual(['enrollment-token', 'list']);
    expect(paths).toContainEqual(['draft', 'discard']);
  });

  it.each([[[] as string[]], ...paths.map((p) => [p])])(
    '`bulkhead %s --help` shows an example and describes every flag and argument',
    async (path) => {
      const r = await cli([...path, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/\nExamples:\n {2}\$ bulkhead \S/);
      // Every example is of this command (or, for the program, of some command).
      const shown = r.stdout.split('Examples:\n')[1]!.match(/^ {2}\$ .*$/gm)!;
      for (const line of shown) expect(line).toContain(['bulkhead', ...path].join(' '));
      const cmd = findCommand(path);
      const undescribed = [
        ...cmd.options.filter((o) => !o.description).map((o) => o.flags),
        ...cmd.registeredArguments.filter((a) => !a.description).map((a) => a.name()),
      ];
      expect(undescribed).toEqual([]);
    },
  );

  it('login --help shows --server, --token and --token-file', async () => {
    const r = await cli(['login', '--help']);
    expect(r.stdout).toMatch(/--server <url> +control plane REST URL/);
    expect(r.stdout).toMatch(/--token <token> +API token/);
    expect(r.stdout).toMatch(/--token-file <file> +read the token from this file/);
  });

  it('--version prints the package version', async () => {
    const { version } = JSON.parse(
      await readFile(new URL('../package.json', import.meta.url), 'utf8'),
    ) as { version: string };
    expect(CLI_VERSION).toBe(version);
    for (const flag of ['--version', '-V']) {
      const r = await cli([flag]);
      expect(r).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
    }
  });
});

describe('login', () => {
  it('exits 2 on a server without a scheme, saying what is expected, and sends nothing', async () => {
    const address = fx.api.url.replace('http://', '');
    const r = await cli(['login', '--server', address, '--token', 't0k']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      `error: --server must be a URL with its scheme, such as http://127.0.0.1:8080 (got "${address}")\n`,
    );
    expect(fx.api.requests).toEqual([]);
  });

  it.each([['localhost:8080'], ['ftp://127.0.0.1:8080']])(
    'refuses %s, which parses as a URL of another scheme',
    async (server) => {
      const r = await cli(['login', '--server', server, '--token', 't0k']);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('--server must be a URL with its scheme');
    },
  );

  it('names BULKHEAD_SERVER when that is where the bad address came from, for any command', async () => {
    const r = await cli(['workloads'], { BULKHEAD_SERVER: '127.0.0.1:8080', BULKHEAD_TOKEN: 't' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('BULKHEAD_SERVER must be a URL with its scheme');
  });

  it('without a token exits 2 and points to --token-file', async () => {
    const r = await cli(['login', '--server', fx.api.url]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('login needs a token: --token-file FILE (a file of mode 0600');
    expect(r.stderr).toContain('--token TOKEN or BULKHEAD_TOKEN');
    expect(fx.api.requests).toEqual([]);
  });

  it('without a server exits 2 and shows the form of the URL', async () => {
    const tokenFile = join(fx.dir, 'token');
    await writeFile(tokenFile, 'secret\n', { mode: 0o600 });
    const r = await cli(['login', '--token-file', tokenFile]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'login needs --server URL (or BULKHEAD_SERVER), such as --server http://',
    );
  });
});

describe('the names people guess', () => {
  const TOKENS = [{ id: 'et-1', expiresAt: '2026-12-01T00:00:00Z', uses: 0 }];

  it.each([
    [['enrollment-token', 'list'], '/v1/enrollment-tokens', ['get', 'enrollment-tokens']],
    [['enrollment-tokens', 'list'], '/v1/enrollment-tokens', ['get', 'enrollment-tokens']],
    [['token', 'list'], '/v1/tokens', ['get', 'tokens']],
    [['tokens', 'list'], '/v1/tokens', ['get', 'tokens']],
  ])('`%s` lists like `get` does', async (argv, path, same) => {
    fx.api.store.set(`${path}/et-1`, TOKENS[0]!);
    for (const format of ['table', 'json']) {
      fx.api.requests.length = 0;
      const r = await fx.connected([...argv, '-o', format]);
      expect(r.code).toBe(0);
      expect(fx.api.requests.map((q) => [q.method, q.url])).toEqual([['GET', path]]);
      expect(r.stdout).toContain('et-1');
      expect(r.stdout).toBe((await fx.connected([...same, '-o', format])).stdout);
    }
  });

  it('enrollment-tokens create is enrollment-token create', async () => {
    fx.api.override = (q) =>
      q.method === 'POST' ? { status: 201, body: { id: 'et-2', token: 'bhe_x' } } : undefined;
    const r = await fx.connected(['enrollment-tokens', 'create', '--label', 'app=shop']);
    expect(r.code).toBe(0);
    expect(fx.api.requests.map((q) => [q.method, q.url, q.body])).toEqual([
      ['POST', '/v1/enrollment-tokens', { labels: { app: 'shop' } }],
    ]);
  });
});

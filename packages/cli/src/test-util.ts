import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import type { Io } from './commands/shared.js';
import { FakeApi } from './fake-api.js';
import { run } from './run.js';

// Shared set-up of this package's command tests; not part of the public API.

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliFixture {
  /** A fresh fake control plane per test. */
  readonly api: FakeApi;
  /** A fresh temporary directory per test; the CLI keeps its config under `config/`. */
  readonly dir: string;
  /** Runs the CLI in-process with a private config directory and no BULKHEAD_* variables. */
  cli(argv: string[], env?: Record<string, string>): Promise<CliResult>;
  /** As `cli`, with the server (default: `api`) and a token on the command line. */
  connected(argv: string[], target?: FakeApi): Promise<CliResult>;
}

/** Registers hooks that start a FakeApi and make a temporary directory before each test, and remove both after it. */
export function useCliFixture(options: { prefix: string; now?: Date }): CliFixture {
  let api: FakeApi | undefined;
  let dir: string | undefined;
  const { now } = options;

  beforeEach(async () => {
    api = new FakeApi();
    await api.start();
    dir = await mkdtemp(join(tmpdir(), options.prefix));
  });

  afterEach(async () => {
    await api?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    api = undefined;
    dir = undefined;
  });

  const fixture: CliFixture = {
    get api() {
      if (api === undefined) throw new Error('the fixture is only set up inside a test');
      return api;
    },
    get dir() {
      if (dir === undefined) throw new Error('the fixture is only set up inside a test');
      return dir;
    },
    async cli(argv, env = {}) {
      let stdout = '';
      let stderr = '';
      const io: Io = {
        stdout: (t) => {
          stdout += t;
        },
        stderr: (t) => {
          stderr += t;
        },
        env: { XDG_CONFIG_HOME: join(fixture.dir, 'config'), ...env },
        now: now && (() => now),
      };
      const code = await run(argv, io);
      return { code, stdout, stderr };
    },
    connected: (argv, target = fixture.api) =>
      fixture.cli(['--server', target.url, '--token', 't0k', ...argv]),
  };
  return fixture;
}

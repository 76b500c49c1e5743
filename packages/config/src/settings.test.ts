import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, parseSettings, settingSource } from './settings.js';

const dir = mkdtempSync(join(tmpdir(), 'bh-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const file = (value: unknown) => {
  const path = join(dir, `c${++n}.json`);
  writeFileSync(path, typeof value === 'string' ? value : JSON.stringify(value));
  return path;
};
const port = (v: string) => {
  if (!/^\d+$/.test(v) || Number(v) > 65535) throw new InvalidArgumentError('must be a port');
  return Number(v);
};

/** A command like the real ones: a default, a parser, choices, a repeatable and a required flag. */
function command() {
  return new Command('demo')
    .exitOverride()
    .configureOutput({ writeErr: () => {} })
    .requiredOption('--server <host>', 'server')
    .option('--data-dir <dir>', 'state', '/var/lib/demo')
    .option('--port <n>', 'port', port, 22)
    .option('--label <k=v>', 'repeatable', (v: string, acc: string[]) => [...acc, v], [])
    .option('--verbose', 'a boolean flag')
    .addOption(new Option('--log-level <level>').choices(['info', 'debug']).default('info'));
}

function settings(args: string[], env: Record<string, string> = {}) {
  const program = command();
  parseSettings(program, ['node', 'demo', ...args], {
    envPrefix: 'DEMO_',
    env,
    reservedEnv: ['ARGS'],
  });
  return { program, opts: program.opts() };
}

describe('parseSettings', () => {
  it('takes flags over the environment over the file over defaults', () => {
    const path = file({ server: 'file', 'data-dir': '/file', port: 2022, 'log-level': 'debug' });
    const { program, opts } = settings(['--config', path, '--port', '23'], {
      DEMO_DATA_DIR: '/env',
      DEMO_PORT: '24',
    });
    expect(opts).toMatchObject({ server: 'file', dataDir: '/env', port: 23, logLevel: 'debug' });
    expect(settingSource(program, 'port')).toBe('--port');
    expect(settingSource(program, 'dataDir')).toBe('--data-dir (environment DEMO_DATA_DIR)');
    expect(settingSource(program, 'server')).toBe(`"server" in ${path}`);
    // Untouched by all three: the default.
    expect(settings(['--server', 's']).opts).toMatchObject({ dataDir: '/var/lib/demo', port: 22 });
  });

  it('reads the file named by the environment, repeatables as lists, booleans as booleans', () => {
    const path = file({ server: 's', label: ['a=1', 'b=2'], verbose: true, port: '80' });
    expect(settings([], { DEMO_CONFIG: path }).opts).toMatchObject({
      label: ['a=1', 'b=2'],
      verbose: true,
      port: 80,
    });
    // A flag replaces the file's list rather than adding to it.
    expect(settings(['--config', path, '--label', 'c=3']).opts.label).toEqual(['c=3']);
  });

  it.each([
    [{ server: 's', color: 'red' }, /unknown key "color"/],
    [{ server: 's', port: 70000 }, /"port": must be a port/],
    [{ server: 's', 'log-level': 'loud' }, /"log-level": must be one of info, debug, got "loud"/],
    [{ server: 's', verbose: 'yes' }, /"verbose": must be true or false/],
    [{ server: { host: 'x' } }, /"server": must be a string or a number/],
    [['server'], /must hold a JSON object/],
    ['{"server": ', /not valid JSON/],
  ])('refuses %j naming the key and the file', (value, message) => {
    const path = file(value);
    const err = (() => {
      try {
        settings(['--config', path]);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).toContain(path);
  });

  it('refuses an unknown variable under the prefix, but not the reserved ones', () => {
    expect(() => settings(['--server', 's'], { DEMO_PROT: '1' })).toThrow(
      /unknown environment variable DEMO_PROT/,
    );
    expect(() => settings(['--server', 's'], { DEMO_ARGS: '--x', OTHER_PORT: 'x' })).not.toThrow();
  });

  it.each([
    [{ DEMO_PORT: 'x' }, 'environment DEMO_PORT: must be a port'],
    [{ DEMO_LOG_LEVEL: 'loud' }, 'environment DEMO_LOG_LEVEL: must be one of info, debug'],
    [{ DEMO_VERBOSE: 'yes' }, 'environment DEMO_VERBOSE: must be true or false'],
  ])('refuses a bad environment value %j naming the variable', (env, message) => {
    expect(() => settings(['--server', 's'], env)).toThrow(message);
  });

  it('reads booleans and lists from the environment', () => {
    const { opts } = settings(['--server', 's'], { DEMO_VERBOSE: 'true', DEMO_LABEL: 'a=1' });
    expect(opts).toMatchObject({ verbose: true, label: ['a=1'] });
    // A bad flag is still commander's usage error.
    expect(() => settings(['--port', 'x'])).toThrow(CommanderError);
  });

  it('asks for a required setting after all three sources had their say', () => {
    expect(() => settings([])).toThrow(/--server is required \(flag, environment DEMO_SERVER/);
    expect(settings([], { DEMO_SERVER: 'e' }).opts.server).toBe('e');
    expect(() => settings(['--config', join(dir, 'missing.json')])).toThrow(/cannot read/);
  });
});

// A command's settings from its flags, the environment and a JSON file, in one precedence:
// flags > environment > file > defaults. The names follow the flags: `--log-level` is
// `<PREFIX>LOG_LEVEL` in the environment and `"log-level"` in the file (`--config FILE`, or
// `<PREFIX>CONFIG`). Every value goes through the flag's own parser and choices, whatever its
// source; unknown keys and bad values are refused naming the key and where it came from. This
// module owns only that resolution: what a value means stays with the command.
import { readFileSync } from 'node:fs';
import { type Command, CommanderError, type Option } from 'commander';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'CONFIG_INVALID';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

export interface ConfigSources {
  /** `BULKHEAD_AGENT_`: one prefix per command, so that commands on one host never share a name. */
  envPrefix: string;
  env?: NodeJS.ProcessEnv;
  /** Names under the prefix that are not settings (a systemd unit's `<PREFIX>ARGS`). */
  reservedEnv?: readonly string[];
  /** Keys (file) and names (environment) the command does not know are left to another reader. */
  ignoreUnknown?: boolean;
}

const CONFIG_FLAG = '--config';
const CONFIG_ATTRIBUTE = 'config';
const keyOf = (o: Option) => o.long!.slice(2);
const envName = (prefix: string, o: Option) => prefix + keyOf(o).toUpperCase().replace(/-/g, '_');

/** Where a setting's value came from, in words an error message can name. */
export function settingSource(program: Command, attribute: string): string {
  const o = program.options.find((x) => x.attributeName() === attribute);
  if (o === undefined) return attribute;
  switch (program.getOptionValueSource(attribute)) {
    case 'env':
      return `${o.long} (environment ${o.envVar})`;
    case 'config':
      return `"${keyOf(o)}" in ${program.opts()[CONFIG_ATTRIBUTE]}`;
    default:
      return o.long!;
  }
}

/**
 * Adds `--config` and an environment name to every flag of `program`, parses `argv`, then fills
 * what neither set from the file. Throws ConfigError (and commander's own CommanderError for a
 * bad flag or environment value, already printed by commander).
 */
export function parseSettings(program: Command, argv: readonly string[], sources: ConfigSources) {
  const env = sources.env ?? process.env;
  const settings = program.options.filter((o) => o.long && o.long !== '--version');
  program.option(`${CONFIG_FLAG} <file>`, 'settings file (JSON; keys are flag names)');
  const all = [...settings, program.options.at(-1)!];
  // Required flags are checked after the file had its say, not by commander during the parse.
  const required = settings.filter((o) => o.mandatory);
  for (const o of all) {
    o.env(envName(sources.envPrefix, o));
    o.makeOptionMandatory(false);
  }
  const known = new Set([
    ...all.map((o) => o.envVar),
    ...(sources.reservedEnv ?? []).map((n) => sources.envPrefix + n),
  ]);
  const unknownEnv = Object.keys(env).filter(
    (n) => n.startsWith(sources.envPrefix) && !known.has(n),
  );
  if (unknownEnv.length > 0 && !sources.ignoreUnknown) {
    throw new ConfigError(
      `unknown environment variable ${unknownEnv.sort().join(', ')}: not a setting of ${program.name()}`,
    );
  }
  program.parse(argv as string[]);
  // Commander binds `.env()` only to options added after it, so the environment is read here,
  // through the same parsers as the file.
  for (const o of all) {
    const text = env[o.envVar!];
    if (text === undefined || program.getOptionValueSource(o.attributeName()) === 'cli') continue;
    const value = o.isBoolean() ? ENV_BOOLEANS[text.toLowerCase()] : text;
    const where = `environment ${o.envVar}`;
    program.setOptionValueWithSource(o.attributeName(), settingValue(o, where, value), 'env');
  }
  const file = program.opts()[CONFIG_ATTRIBUTE] as string | undefined;
  if (file !== undefined) applyFile(program, settings, file, sources.ignoreUnknown === true);
  for (const o of required) {
    if (program.getOptionValue(o.attributeName()) === undefined) {
      throw new ConfigError(
        `${o.long} is required (flag, environment ${o.envVar} or "${keyOf(o)}" in ${file ?? CONFIG_FLAG})`,
      );
    }
  }
}

function readJsonObject(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (cause) {
    throw new ConfigError(`${CONFIG_FLAG}: cannot read ${file}: ${(cause as Error).message}`, {
      cause,
    });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new ConfigError(`${file}: not valid JSON: ${(cause as Error).message}`, { cause });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(`${file}: must hold a JSON object of settings`);
  }
  return value as Record<string, unknown>;
}

function applyFile(program: Command, settings: Option[], file: string, ignoreUnknown: boolean) {
  const values = readJsonObject(file);
  const byKey = new Map(settings.map((o) => [keyOf(o), o]));
  for (const [key, value] of Object.entries(values)) {
    const o = byKey.get(key);
    if (o === undefined) {
      if (ignoreUnknown) continue;
      throw new ConfigError(`${file}: unknown key "${key}": not a setting of ${program.name()}`);
    }
    const attribute = o.attributeName();
    const source = program.getOptionValueSource(attribute);
    // A flag or the environment said it already: they come first.
    if (source === 'cli' || source === 'env') continue;
    program.setOptionValueWithSource(
      attribute,
      settingValue(o, `${file}: "${key}"`, value),
      'config',
    );
  }
}

const ENV_BOOLEANS: Record<string, boolean | undefined> = {
  true: true,
  false: false,
  1: true,
  0: false,
};

/** The value as the flag would have taken it: through its parser and choices, repeatables in turn. */
function settingValue(o: Option, where: string, value: unknown): unknown {
  const bad = (why: string) => new ConfigError(`${where}: ${why}`);
  if (o.isBoolean()) {
    if (typeof value !== 'boolean') throw bad('must be true or false');
    return o.negate ? !value : value;
  }
  const repeatable = Array.isArray(o.defaultValue) || o.variadic;
  const items = Array.isArray(value) && repeatable ? value : [value];
  let result: unknown = o.defaultValue;
  for (const item of items) {
    if (typeof item !== 'string' && typeof item !== 'number') {
      throw bad(
        repeatable
          ? 'must be a string, a number or a list of them'
          : 'must be a string or a number',
      );
    }
    const text = String(item);
    if (o.argChoices && !o.argChoices.includes(text)) {
      throw bad(`must be one of ${o.argChoices.join(', ')}, got "${text}"`);
    }
    try {
      result = o.parseArg ? o.parseArg(text, result) : text;
    } catch (err) {
      if (err instanceof CommanderError) throw bad(err.message.replace(/^error: /, ''));
      throw err;
    }
  }
  return result;
}

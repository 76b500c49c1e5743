// Parsers of command-line values shared by the command modules: each either returns the
// value or throws commander's InvalidArgumentError / a USAGE CliError (exit 2). Pure: no I/O
// except reading a file the user named.
import { readFile } from 'node:fs/promises';
import { InvalidArgumentError, Option } from 'commander';
import { CliError } from '../errors.js';

/** For repeatable options: `-f a -f b` -> `['a', 'b']`. */
export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function parseCount(text: string): number {
  if (!/^\d+$/.test(text)) throw new InvalidArgumentError('use a whole number');
  return Number(text);
}

export function parsePositiveInt(text: string): number {
  const n = parseCount(text);
  if (n === 0) throw new InvalidArgumentError('use a positive whole number');
  return n;
}

export function parsePort(text: string): number {
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= 0 && n <= 65535)) throw new InvalidArgumentError('use a port number 0..65535');
  return n;
}

export function parseProtocol(text: string): string {
  const p = text.toLowerCase();
  if (!/^[a-z][a-z0-9-]*$/.test(p))
    throw new InvalidArgumentError('use tcp, udp, sctp, icmp, icmpv6');
  return p;
}

export function parseKeys(text: string): string[] {
  const keys = text.split(',').map((k) => k.trim());
  if (keys.some((k) => k === '')) throw new InvalidArgumentError('use label keys such as app,role');
  return keys;
}

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** `90s`, `30m`, `24h`, `7d` (a bare number is seconds) -> seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!m || Number(m[1]) === 0) {
    throw new InvalidArgumentError('use a positive duration such as 90s, 30m, 24h or 7d');
  }
  return Number(m[1]) * UNIT_SECONDS[m[2] || 's']!;
}

/** `k=v` sets a label, `k-` removes it. */
export function parseLabelChange(arg: string): { key: string; value?: string } {
  const eq = arg.indexOf('=');
  if (eq > 0) return { key: arg.slice(0, eq), value: arg.slice(eq + 1) };
  if (eq < 0 && arg.length > 1 && arg.endsWith('-')) return { key: arg.slice(0, -1) };
  throw new CliError('USAGE', `bad label change ${JSON.stringify(arg)}: use key=value or key-`);
}

/** `--ingress <mode>` and the like: monitor or enforce. */
export function modeOption(flag: string): Option {
  return new Option(flag, 'monitor or enforce').choices(['monitor', 'enforce']);
}

export function checkWindow(since: string | undefined, until: string | undefined): void {
  if (since && until && since > until) {
    throw new CliError('USAGE', `--since (${since}) is after --until (${until})`);
  }
}

export function withQuery(path: string, query: URLSearchParams): string {
  return query.size > 0 ? `${path}?${query}` : path;
}

export async function readFileOrUsage(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (cause) {
    throw new CliError('USAGE', `cannot read ${path}: ${(cause as Error).message}`, { cause });
  }
}

// Where the agent finds the control plane: the `--control-plane` entries (names or IPs, each
// with a port), resolved again for every round of connection attempts. Owns the order of the
// attempts; it opens no connection and decides no delay (sync and enrol do, with the backoff).
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { AgentError } from './errors.js';
import { describeError } from './retry.js';

/** Every address a name resolves to now; throws when it resolves to none. */
export type Lookup = (host: string) => Promise<string[]>;

export const systemLookup: Lookup = async (host) =>
  (await dnsLookup(host, { all: true })).map((a) => a.address);

export interface Endpoint {
  /** The entry as given (`cp.example:8443`). */
  entry: string;
  address: string;
  port: number;
  /** gRPC target for the address (`10.0.0.1:8443`, `[fd00::1]:8443`). */
  target: string;
}

/**
 * Connection attempts go through the addresses of all entries in turn. A round is built by
 * resolving every entry afresh (a name that moved is found on the next round), and starts
 * again after every stream that was up, with the entry that worked last, so a control plane
 * that restarts or moves is found on the first attempt.
 */
export interface Endpoints {
  /** The next address to try. Throws AgentError RESOLVE_FAILED when no entry resolves. */
  next(): Promise<Endpoint>;
  /** A stream to `e` was up: the next attempt resolves again, starting with e's entry. */
  connected(e: Endpoint): void;
  /** Every address of every entry now (failsafe rules); entries that do not resolve are left out. */
  resolveAll(): Promise<Endpoint[]>;
}

/** Splits HOST:PORT (`[v6]:port` for IPv6 literals); throws CONFIG_INVALID. */
export function parseHostPort(
  value: string,
  what: string,
  { allowZero = false } = {},
): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!host || !Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw new AgentError(
      'CONFIG_INVALID',
      `${what}: expected HOST:PORT, got ${JSON.stringify(value)}`,
    );
  }
  return { host, port };
}

/** Splits `a:1,b:2` and repeated flags into entries; throws CONFIG_INVALID naming the bad one. */
export function parseControlPlanes(values: string[]): { host: string; port: number }[] {
  const entries = values.flatMap((v) => v.split(',')).map((v) => v.trim());
  if (entries.length === 0 || entries.some((e) => e === '')) {
    throw new AgentError('CONFIG_INVALID', '--control-plane: expected HOST:PORT[,HOST:PORT...]');
  }
  return entries.map((e) => parseHostPort(e, '--control-plane'));
}

export interface EndpointsOptions {
  lookup?: Lookup;
  logger?: Logger;
  /**
   * After every resolution (a round, resolveAll): every address found, by entry; entries
   * that did not resolve are absent (the failsafe rule follows this, agent.ts).
   */
  onResolved?: (endpoints: Endpoint[]) => void;
}

export function createEndpoints(values: string[], options: EndpointsOptions = {}): Endpoints {
  const entries = parseControlPlanes(values);
  const labels = entries.map(
    ({ host, port }) => `${host.includes(':') ? `[${host}]` : host}:${port}`,
  );
  const lookup = options.lookup ?? systemLookup;
  let round: Array<Endpoint & { index: number }> = [];
  let start = 0;

  async function resolve(from: number): Promise<Array<Endpoint & { index: number }>> {
    const out: Array<Endpoint & { index: number }> = [];
    for (let k = 0; k < entries.length; k++) {
      const index = (from + k) % entries.length;
      const { host, port } = entries[index]!;
      const entry = labels[index]!;
      try {
        const addresses = isIP(host) ? [host] : await lookup(host);
        for (const address of addresses) {
          const target = `${isIP(address) === 6 ? `[${address}]` : address}:${port}`;
          out.push({ entry, address, port, target, index });
        }
      } catch (err) {
        options.logger?.warn({ host, ...describeError(err) }, 'cannot resolve the control plane');
      }
    }
    options.onResolved?.(out.map(({ index: _, ...e }) => e));
    return out;
  }

  return {
    async next() {
      if (round.length === 0) round = await resolve(start);
      const e = round.shift();
      if (!e) {
        throw new AgentError(
          'RESOLVE_FAILED',
          `no address for the control plane (${values.join(',')})`,
        );
      }
      start = (e.index + 1) % entries.length;
      const { index: _, ...endpoint } = e;
      return endpoint;
    },
    connected(e) {
      round = [];
      start = Math.max(0, labels.indexOf(e.entry));
    },
    async resolveAll() {
      return (await resolve(0)).map(({ index: _, ...e }) => e);
    },
  };
}

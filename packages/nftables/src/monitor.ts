// `nft -j monitor ruleset` as a child process: libnftables has no monitor API. Owns the
// process and the parsing of its JSON lines; must not interpret the events (callers decide
// which tables matter and which changes were their own).
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { NftObject } from './driver.js';
import { NftError } from './errors.js';

/** One change as the monitor prints it, e.g. `{verb: 'delete', kind: 'chain', body: {...}}`. */
export interface NftEvent {
  verb: string;
  kind: string;
  body: Record<string, unknown>;
  /** The table the change belongs to ({family, name}); undefined if the line did not say. */
  table: { family: string; name: string } | undefined;
}

export interface NftMonitorOptions {
  /** The nft binary; default `nft` from PATH. */
  nftPath?: string;
  /** Every change, in kernel commit order. */
  onEvent: (event: NftEvent) => void;
  /** The process ended or could not start (not called after close()). */
  onExit?: (error: NftError) => void;
}

export interface NftMonitor {
  /** Resolves once nft is running (its netlink socket may need a few ms more). */
  readonly started: Promise<void>;
  close(): void;
}

/** Parses one monitor line; undefined for lines that are not a change (or not JSON). */
export function parseMonitorLine(line: string): NftEvent | undefined {
  let obj: NftObject;
  try {
    obj = JSON.parse(line) as NftObject;
  } catch {
    return undefined;
  }
  const [verb, inner] = Object.entries(obj)[0] ?? [];
  if (verb === undefined || typeof inner !== 'object' || inner === null) return undefined;
  const [kind, body] = Object.entries(inner as NftObject)[0] ?? [];
  if (kind === undefined || typeof body !== 'object' || body === null) return undefined;
  const b = body as Record<string, unknown>;
  const name = kind === 'table' ? b.name : b.table;
  const table =
    typeof b.family === 'string' && typeof name === 'string'
      ? { family: b.family, name }
      : undefined;
  return { verb, kind, body: b, table };
}

export function createNftMonitor(options: NftMonitorOptions): NftMonitor {
  const child = spawn(options.nftPath ?? 'nft', ['-j', 'monitor', 'ruleset'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let closed = false;
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => {
    stderr = (stderr + b.toString('utf8')).slice(-2000);
  });
  createInterface({ input: child.stdout }).on('line', (line) => {
    const event = parseMonitorLine(line);
    if (event && !closed) options.onEvent(event);
  });
  const started = new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  started.catch(() => undefined);
  child.on('error', (cause) => {
    if (!closed)
      options.onExit?.(new NftError('NFT_UNAVAILABLE', 'cannot run nft monitor', { cause }));
  });
  child.on('exit', (code, signal) => {
    if (closed) return;
    options.onExit?.(
      new NftError('NFT_UNAVAILABLE', `nft monitor ended (${signal ?? code})`, { cause: stderr }),
    );
  });
  return {
    started,
    close() {
      if (closed) return;
      closed = true;
      child.kill();
    },
  };
}

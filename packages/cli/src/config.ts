import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { CliError } from './errors.js';

export interface StoredConfig {
  server?: string;
  token?: string;
}

export type Env = Record<string, string | undefined>;

export function configPath(env: Env): string {
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(base, 'bulkhead', 'config.json');
}

export async function loadConfig(env: Env): Promise<StoredConfig> {
  const path = configPath(env);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new CliError('USAGE', `cannot read ${path}`, { cause });
  }
  try {
    const value = JSON.parse(text) as StoredConfig;
    return {
      server: typeof value.server === 'string' ? value.server : undefined,
      token: typeof value.token === 'string' ? value.token : undefined,
    };
  } catch (cause) {
    throw new CliError('USAGE', `${path} is not valid JSON`, { cause });
  }
}

/** Writes the config readable by the owner only: it holds a bearer token. */
export async function saveConfig(env: Env, config: StoredConfig): Promise<string> {
  const path = configPath(env);
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeFile(path, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  // `mode` applies only when the file is created; tighten a file an older version left open.
  await chmod(path, 0o600);
  return path;
}

/**
 * The server as a base URL, or a USAGE error naming where the value came from. The scheme is
 * required rather than guessed: the REST API is plain `http://` unless a TLS proxy fronts it,
 * and only the operator knows which.
 */
export function checkServer(server: string, source: string): string {
  let url: URL | undefined;
  try {
    url = new URL(server);
  } catch {}
  if (url?.protocol !== 'http:' && url?.protocol !== 'https:') {
    throw new CliError(
      'USAGE',
      `${source} must be a URL with its scheme, such as http://127.0.0.1:8080 (got ${JSON.stringify(server)})`,
    );
  }
  return server;
}

/** Flag beats environment beats config file. */
export async function resolveConnection(
  flags: { server?: string; token?: string },
  env: Env,
): Promise<{ server: string; token: string | undefined }> {
  let server = flags.server || env.BULKHEAD_SERVER;
  let source = flags.server ? '--server' : 'BULKHEAD_SERVER';
  let token = flags.token || env.BULKHEAD_TOKEN;
  if (!server || !token) {
    const stored = await loadConfig(env);
    // The stored token belongs to the stored server: never send it to another address.
    if (!server || sameServer(server, stored.server)) token ||= stored.token;
    if (!server) source = `the server in ${configPath(env)}`;
    server ||= stored.server;
  }
  if (!server) {
    throw new CliError(
      'USAGE',
      'no control plane address: pass --server, set BULKHEAD_SERVER or run `bulkhead login`',
    );
  }
  return { server: checkServer(server, source), token };
}

function sameServer(a: string, b: string | undefined): boolean {
  return b !== undefined && a.replace(/\/+$/, '') === b.replace(/\/+$/, '');
}

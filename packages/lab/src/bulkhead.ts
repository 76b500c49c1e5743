// Runs a real Bulkhead inside a lab: the control plane in one namespace host, an agent process
// in each other host, and the CLI and REST calls made from the control plane's host.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Lab, LabProcess, NsFetch } from './types.js';

export const REPO_ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const CP_MAIN = join(REPO_ROOT, 'packages/control-plane/dist/main.js');
const AGENT_MAIN = join(REPO_ROOT, 'packages/agent/dist/main.js');
const CLI_MAIN = join(REPO_ROOT, 'packages/cli/dist/main.js');
export const EXAMPLES = join(REPO_ROOT, 'examples');

export interface AgentSpec {
  labels: Record<string, string>;
}

export interface Bulkhead {
  cpHost: string;
  dataDir: string;
  adminToken: string;
  /** `timeoutMs` bounds the request (default 10 s, the lab's). */
  api<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    opts?: { timeoutMs?: number },
  ): Promise<T>;
  apiRaw(
    method: string,
    path: string,
    body?: unknown,
    opts?: { timeoutMs?: number },
  ): Promise<{ status: number; json: unknown }>;
  cli(
    args: string[],
    opts?: { input?: string },
  ): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** The control plane's `GET /metrics`: each sample's value by `name{labels}`. */
  controlPlaneMetrics(): Promise<Map<string, number>>;
  /** Starts the control plane on `dataDir` (again, after a stop or kill). */
  startControlPlane(): Promise<void>;
  /** SIGTERM (a graceful stop), SIGKILL after 2 s. */
  stopControlPlane(): Promise<void>;
  /** Sends `signal` (default SIGKILL: no shutdown at all) and waits for the exit. */
  killControlPlane(signal?: NodeJS.Signals): Promise<void>;
  /** `args` are appended to the agent's command line, `env` to its environment. */
  startAgent(host: string, opts?: { args?: string[]; env?: Record<string, string> }): LabProcess;
  stopAgent(host: string): Promise<void>;
  /** Resolves when every agent applied the workload's current RuleSet. */
  waitInSync(opts?: { timeoutMs?: number; revision?: number }): Promise<AgentView[]>;
  close(): Promise<void>;
}

export interface AgentView {
  id: string;
  workload: string;
  connected: boolean;
  appliedRevision: number;
  appliedHash: string;
  desiredHash: string;
  inSync: boolean;
  lastError: string;
}

export async function until<T>(
  what: string | (() => string),
  probe: () => Promise<T | undefined | false>,
  { timeoutMs = 20_000, intervalMs = 200 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${typeof what === 'string' ? what : what()}${last ? `: ${last}` : ''}`,
      );
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export async function startBulkhead(
  lab: Lab,
  cpHost: string,
  agents: Record<string, AgentSpec>,
  opts: { controlPlaneArgs?: string[] } = {},
): Promise<Bulkhead> {
  const dataDir = mkdtempSync(join(tmpdir(), 'bulkhead-e2e-'));
  const cpAddr = lab.hosts[cpHost]!.ipv4;
  const apiUrl = 'http://127.0.0.1:8080';
  let cp: LabProcess | undefined;
  const agentProcs = new Map<string, LabProcess>();
  let fetcher: NsFetch | undefined;
  let adminToken = '';
  let bootstrapToken = '';

  const apiRaw = async (
    method: string,
    path: string,
    body?: unknown,
    opts: { timeoutMs?: number } = {},
  ) => {
    fetcher ??= await lab.nsFetch(cpHost);
    const headers: Record<string, string> = { authorization: `Bearer ${adminToken}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const r = await fetcher.request(method, `${apiUrl}${path}`, { headers, body, ...opts });
    return { status: r.status, json: r.json };
  };
  const api = async <T>(
    method: string,
    path: string,
    body?: unknown,
    opts?: { timeoutMs?: number },
  ): Promise<T> => {
    const r = await apiRaw(method, path, body, opts);
    if (r.status >= 300)
      throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.json)}`);
    return r.json as T;
  };

  const bh: Bulkhead = {
    cpHost,
    dataDir,
    get adminToken() {
      return adminToken;
    },
    api,
    apiRaw,
    cli: (args, opts = {}) =>
      lab.exec(
        cpHost,
        [process.execPath, CLI_MAIN, '--server', apiUrl, '--token', adminToken, ...args],
        {
          input: opts.input,
          env: { HOME: dataDir },
        },
      ),
    async controlPlaneMetrics() {
      fetcher ??= await lab.nsFetch(cpHost);
      const { text } = await fetcher.request('GET', `${apiUrl}/metrics`);
      return new Map(
        [...text.matchAll(/^(bulkhead_[^ ]+) (\S+)$/gm)].map((m) => [m[1]!, Number(m[2])]),
      );
    },
    async startControlPlane() {
      cp = lab.spawn(cpHost, [
        process.execPath,
        CP_MAIN,
        '--data-dir',
        dataDir,
        '--api-listen',
        '127.0.0.1:8080',
        '--grpc-listen',
        '0.0.0.0:8443',
        '--tls-san',
        cpAddr,
        '--log-level',
        'debug',
        ...(opts.controlPlaneArgs ?? []),
      ]);
      await until('control plane health', async () => {
        fetcher ??= await lab.nsFetch(cpHost);
        const r = await fetcher.request('GET', `${apiUrl}/healthz`, { timeoutMs: 1000 });
        return r.status === 200;
      });
      if (!adminToken)
        adminToken = readFileSync(join(dataDir, 'initial-admin-token'), 'utf8').trim();
    },
    async stopControlPlane() {
      await fetcher?.close();
      fetcher = undefined;
      await cp?.stop();
      cp = undefined;
    },
    async killControlPlane(signal = 'SIGKILL') {
      await fetcher?.close();
      fetcher = undefined;
      if (cp) process.kill(-cp.pid, signal);
      await cp?.exited;
      cp = undefined;
    },
    startAgent(host, { args: extraArgs = [], env } = {}) {
      const spec = agents[host]!;
      const args = [
        process.execPath,
        AGENT_MAIN,
        '--control-plane',
        `${cpAddr}:8443`,
        '--ca-cert',
        join(dataDir, 'ca', 'ca.crt'),
        '--bootstrap-token',
        bootstrapToken,
        '--state-dir',
        join(dataDir, `agent-${host}`),
        '--hostname',
        host,
        '--telemetry-interval',
        '1',
        // A lab restarts its control plane on purpose; agents should not wait a minute for it.
        '--backoff-max',
        '3',
        '--metrics-listen',
        '127.0.0.1:9101',
        '--log-level',
        'debug',
      ];
      for (const [k, v] of Object.entries(spec.labels)) args.push('--label', `${k}=${v}`);
      const p = lab.spawn(host, [...args, ...extraArgs], { env });
      agentProcs.set(host, p);
      return p;
    },
    async stopAgent(host) {
      await agentProcs.get(host)?.stop();
      agentProcs.delete(host);
    },
    async waitInSync({ timeoutMs = 30_000, revision } = {}) {
      const n = Object.keys(agents).length;
      let list: AgentView[] = [];
      return until(
        () =>
          `${n} agents in sync${revision ? ` at revision ${revision}` : ''}: ${JSON.stringify(list)}`,
        async () => {
          list = await api<AgentView[]>('GET', '/v1/agents');
          const ok = list.filter(
            (a) =>
              a.connected &&
              a.inSync &&
              a.appliedHash !== '' &&
              (revision === undefined || a.appliedRevision === revision),
          );
          return ok.length === n ? list : undefined;
        },
        { timeoutMs },
      );
    },
    async close() {
      for (const host of [...agentProcs.keys()]) await bh.stopAgent(host);
      await bh.stopControlPlane();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };

  try {
    await start();
  } catch (err) {
    await bh.close();
    throw err;
  }
  return bh;

  async function start() {
    await bh.startControlPlane();
    const created = await api<{ token: string }>('POST', '/v1/enrollment-tokens', {
      ttlSeconds: 3600,
    });
    bootstrapToken = created.token;
    for (const host of Object.keys(agents)) bh.startAgent(host);
    await until(
      'agents enrolled and connected',
      async () => {
        const list = await api<AgentView[]>('GET', '/v1/agents');
        return list.filter((a) => a.connected).length === Object.keys(agents).length;
      },
      { timeoutMs: 30_000 },
    );
  }
}

// The control plane under test, as the built binary in a child process of the fleet bench, so
// that its CPU and memory (read from /proc) are its own and not the simulated agents'. Owns
// start, SIGTERM, restart on the same data dir, the admin REST calls and the /proc readings;
// it must not know anything about agents.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

/** `BENCH_CP_MAIN` runs another build (a baseline checkout's `main.js`) under the same load. */
const CP_MAIN =
  process.env.BENCH_CP_MAIN ??
  fileURLToPath(new URL('../../packages/control-plane/dist/main.js', import.meta.url));
/** Clock ticks per second of utime/stime in /proc/<pid>/stat (USER_HZ, 100 on Linux). */
const CLK_TCK = 100;

export interface BenchControlPlane {
  readonly apiUrl: string;
  readonly grpcTarget: string;
  readonly caPem: string;
  readonly dbPath: string;
  api<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
  /** A sample of `GET /metrics` (`name{labels}` as exported); undefined if not exported. */
  metric(sample: string): Promise<number | undefined>;
  /** User + system CPU of the current process since it started, ms. */
  cpuMs(): number;
  /**
   * The same for its main thread (the event loop: JavaScript, TLS, HTTP/2, SQLite), without
   * V8's helper threads. What serialises a storm: with the agents' CPU elsewhere, as a real
   * fleet's is, the storm cannot end before this much main-thread time has passed.
   */
  mainThreadCpuMs(): number;
  /** Resident set size of the current process, MiB. */
  rssMiB(): number;
  /** SIGTERM, wait for the exit; returns how long the exit took, ms. */
  stop(): Promise<number>;
  /**
   * Starts the binary again on the same data dir and ports; resolves once /healthz answered
   * (seen from a worker thread): when (`performance.now()` of this thread) and its CPU then.
   */
  start(): Promise<{ healthyAt: number; cpuMs: number }>;
  /** Stops the process and deletes the data dir. */
  close(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  return port;
}

/**
 * User + system CPU of process `pid` since it started, ms (utime, stime of /proc/<pid>/stat);
 * with `thread`, of that thread alone (/proc/<pid>/task/<tid>/stat).
 */
export function cpuMsOf(pid: number, thread?: number): number {
  const text = readFileSync(
    thread === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${thread}/stat`,
    'utf8',
  );
  // The command name (field 2) may hold spaces; fields after its closing paren are plain:
  // fields 14 and 15 (utime, stime) are the 12th and 13th of those.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
}

export async function createBenchControlPlane(
  extraArgs: string[] = [],
): Promise<BenchControlPlane> {
  const dataDir = mkdtempSync(join(tmpdir(), 'bulkhead-fleet-'));
  const [apiPort, grpcPort] = [await freePort(), await freePort()];
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  let child: ChildProcess | undefined;
  let adminToken = '';
  let stderr = '';

  const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const headers: Record<string, string> = { authorization: `Bearer ${adminToken}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const r = await fetch(`${apiUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  };

  const pid = () => {
    if (child?.pid === undefined) throw new Error('control plane not running');
    return child.pid;
  };

  const cp: BenchControlPlane = {
    apiUrl,
    grpcTarget: `127.0.0.1:${grpcPort}`,
    get caPem() {
      return readFileSync(join(dataDir, 'ca', 'ca.crt'), 'utf8');
    },
    dbPath: join(dataDir, 'bulkhead.db'),
    api,
    async metric(sample) {
      const text = await (await fetch(`${apiUrl}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
      return line === undefined ? undefined : Number(line.slice(sample.length + 1));
    },
    cpuMs: () => cpuMsOf(pid()),
    mainThreadCpuMs: () => cpuMsOf(pid(), pid()),
    rssMiB() {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid()}/status`, 'utf8'));
      return m ? Math.round(Number(m[1]) / 1024) : 0;
    },
    async start() {
      stderr = '';
      const proc = spawn(
        process.execPath,
        [
          // e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile the control plane under load.
          ...(process.env.BENCH_CP_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
          CP_MAIN,
          '--data-dir',
          dataDir,
          '--api-listen',
          `127.0.0.1:${apiPort}`,
          '--grpc-listen',
          `127.0.0.1:${grpcPort}`,
          '--log-level',
          'warn',
          // The whole simulated fleet connects from 127.0.0.1: one source, unlike a real fleet.
          '--grpc-max-connections-per-source',
          '1000000',
          ...extraArgs,
          // e.g. `--grpc-max-handshakes 1000000` to compare with no handshake queue.
          ...(process.env.BENCH_CP_ARGS?.split(' ').filter(Boolean) ?? []),
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      proc.stderr?.on('data', (b: Buffer) => {
        stderr = (stderr + b.toString()).slice(-4000);
      });
      child = proc;
      const ready = new Worker(new URL('./fleet-ready.js', import.meta.url), {
        workerData: { url: `${apiUrl}/healthz`, pid: proc.pid },
      });
      const healthy = await new Promise<{ at: number; cpuMs: number }>((resolve, reject) => {
        const exited = () => reject(new Error(`control plane exited: ${stderr}`));
        proc.once('exit', exited);
        ready.once('error', reject);
        ready.once('message', (m) => {
          proc.off('exit', exited);
          resolve(m);
        });
      }).finally(() => ready.terminate());
      adminToken ||= readFileSync(join(dataDir, 'initial-admin-token'), 'utf8').trim();
      return { healthyAt: healthy.at - performance.timeOrigin, cpuMs: healthy.cpuMs };
    },
    async stop() {
      const proc = child;
      if (!proc || proc.exitCode !== null) return 0;
      const t0 = performance.now();
      const exited = once(proc, 'exit');
      proc.kill('SIGTERM');
      await exited;
      child = undefined;
      return performance.now() - t0;
    },
    async close() {
      await cp.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  await cp.start();
  return cp;
}

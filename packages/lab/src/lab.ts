// The e2e lab: Linux network namespaces as hosts on one machine, joined by a bridge that lives
// in its own "switch" namespace. Nothing is ever created in the root namespace (no address,
// no route, no interface), so lab traffic cannot leave the lab. See test/README.md.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export type LabErrorCode =
  | 'LAB_PREREQUISITE' // not root, or `ip` / `nft` missing
  | 'LAB_INVALID' // bad createLab options or unknown host
  | 'LAB_SETUP_FAILED' // a command building the topology failed
  | 'LAB_EXEC_FAILED' // exec with check: true exited non-zero
  | 'LAB_TIMEOUT' // a process did not answer in time
  | 'LAB_PROCESS_FAILED' // a helper process (listener, client, fetch) failed or died
  | 'LAB_DESTROYED'; // the lab was used after destroy()

export class LabError extends Error {
  override readonly name = 'LabError';
  constructor(
    readonly code: LabErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface LabOptions {
  hosts: string[];
  /** Give every host an IPv6 address too (default true). */
  ipv6?: boolean;
}

export interface LabHost {
  name: string;
  netns: string;
  ipv4: string;
  /** Undefined when the lab was created with ipv6: false. */
  ipv6: string | undefined;
}

export interface ExecOptions {
  /** Written to the process's stdin, which is then closed. */
  input?: string;
  env?: Record<string, string>;
  /** Kill the process (group) and reject with LAB_TIMEOUT after this long. Default 30 s. */
  timeoutMs?: number;
  /** Reject with LAB_EXEC_FAILED (stderr in the message) when the exit code is not 0. */
  check?: boolean;
}

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LabProcess {
  host: string;
  pid: number;
  /** stdout and stderr of the process. */
  logFile: string;
  child: ChildProcess;
  exited: Promise<ExitInfo>;
  /** The log so far. */
  log(): string;
  /** Resolve with the first match of pattern in the log; reject if the process exits first. */
  waitForLog(pattern: RegExp, opts?: { timeoutMs?: number }): Promise<RegExpMatchArray>;
  /** SIGTERM the process group, SIGKILL after graceMs (default 2000). */
  stop(graceMs?: number): Promise<ExitInfo>;
}

export type L4 = 'tcp' | 'udp';

export interface Listener {
  host: string;
  proto: L4;
  /** The bound port (useful with port 0). */
  port: number;
  address: string;
  process: LabProcess;
  close(): Promise<void>;
}

export interface HeldConnection {
  /** Send a line over the open connection; true iff it is echoed back within timeoutMs. */
  ping(opts?: { timeoutMs?: number }): Promise<boolean>;
  close(): Promise<void>;
}

export interface FetchResponse {
  status: number;
  headers: Record<string, string>;
  text: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: unknown;
}

export interface NsFetch {
  request(
    method: string,
    url: string,
    opts?: { headers?: Record<string, string>; body?: unknown; timeoutMs?: number },
  ): Promise<FetchResponse>;
  close(): Promise<void>;
}

export interface Lab {
  /** Namespace prefix of this lab, e.g. `bhlab-4242-0`. */
  name: string;
  index: number;
  hosts: Record<string, LabHost>;
  /** The lab subnets, e.g. 10.231.0.0/24 and fd00:b1c::/64. */
  cidr4: string;
  cidr6: string | undefined;
  /** Directory with one log file per spawned process. */
  logDir: string;
  exec(host: string, argv: string[], opts?: ExecOptions): Promise<ExecResult>;
  spawn(
    host: string,
    argv: string[],
    opts?: { env?: Record<string, string>; logFile?: string },
  ): LabProcess;
  listen(host: string, proto: L4, port: number, opts?: { address?: string }): Promise<Listener>;
  connect(
    from: string,
    toAddr: string,
    proto: L4,
    port: number,
    opts?: { timeoutMs?: number },
  ): Promise<boolean>;
  openTcp(
    from: string,
    toAddr: string,
    port: number,
    opts?: { timeoutMs?: number },
  ): Promise<HeldConnection>;
  nsFetch(host: string, opts?: { env?: Record<string, string> }): Promise<NsFetch>;
  /** Kill every process, delete every namespace; idempotent. Logs are removed unless keepLogs. */
  destroy(opts?: { keepLogs?: boolean }): Promise<void>;
}

// Namespace names carry the creating pid, so a later run can tell a crashed lab (pid gone)
// from one that a concurrent run is still using. Interface names never need to be unique
// machine-wide: every interface lives in a lab namespace (`eth0` in each host, `p<i>` + `br0`
// in the switch), which keeps them far below the 15-character limit.
const PREFIX = 'bhlab-';
const NAME_RE = /^bhlab-(\d+)-(\d+)[-_]/;
const HOST_RE = /^[a-z][a-z0-9-]{0,30}$/;
const MAX_HOSTS = 240;
// The helper scripts run as plain node processes inside the namespaces, so they stay JavaScript.
export const LAB_SCRIPTS = fileURLToPath(new URL('../scripts/', import.meta.url));

/** A command in the root namespace (only `ip`/`nft` administration, never traffic). */
function run(argv: string[]): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    execFile(argv[0]!, argv.slice(1), (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') reject(err);
      else resolve({ code: typeof err?.code === 'number' ? err.code : 0, stdout, stderr });
    });
  });
}

async function must(argv: string[]): Promise<string> {
  const r = await run(argv).catch((cause) => {
    throw new LabError('LAB_SETUP_FAILED', `${argv.join(' ')}: ${cause}`, { cause });
  });
  if (r.code !== 0) {
    throw new LabError(
      'LAB_SETUP_FAILED',
      `${argv.join(' ')} exited ${r.code}: ${r.stderr.trim()}`,
    );
  }
  return r.stdout;
}

function listNetns(): string[] {
  try {
    return readdirSync('/run/netns');
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function killNetnsPids(netns: string): Promise<void> {
  const r = await run(['ip', 'netns', 'pids', netns]).catch(() => undefined);
  for (const pid of (r?.stdout ?? '').split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

async function deleteNetns(names: string[]): Promise<void> {
  // A namespace outlives its name while a process is still inside, so empty it first.
  await Promise.all(names.map(killNetnsPids));
  await Promise.all(names.map((n) => run(['ip', 'netns', 'del', n]).catch(() => undefined)));
}

/** Delete the namespaces of labs whose creating process no longer exists. */
export async function cleanupStaleLabs(): Promise<string[]> {
  const stale = listNetns().filter((n) => {
    const m = NAME_RE.exec(n);
    return m !== null && !alive(Number(m[1]));
  });
  await deleteNetns(stale);
  return stale;
}

async function checkPrerequisites(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new LabError('LAB_PREREQUISITE', 'the e2e lab needs root (network namespaces)');
  }
  for (const tool of [
    ['ip', '-V'],
    ['nft', '--version'],
  ]) {
    const ok = await run(tool).then(
      (r) => r.code === 0,
      () => false,
    );
    if (!ok) {
      throw new LabError(
        'LAB_PREREQUISITE',
        `\`${tool[0]}\` is missing: apt-get install -y iproute2 nftables`,
      );
    }
  }
}

function freeIndex(): number {
  const used = new Set(
    listNetns()
      .map((n) => NAME_RE.exec(n))
      .filter((m) => m !== null)
      .map((m) => Number(m[2])),
  );
  for (let i = 0; i < 256; i++) if (!used.has(i)) return i;
  throw new LabError('LAB_SETUP_FAILED', 'all 256 lab indexes are in use; run cleanupStaleLabs()');
}

function v6Prefix(index: number): string {
  return index === 0 ? 'fd00:b1c:' : `fd00:b1c:${index}:`;
}

export async function createLab(options: LabOptions): Promise<Lab> {
  const names = options.hosts;
  const ipv6 = options.ipv6 ?? true;
  if (names.length === 0 || names.length > MAX_HOSTS) {
    throw new LabError('LAB_INVALID', `a lab has 1..${MAX_HOSTS} hosts, got ${names.length}`);
  }
  for (const n of names) {
    if (!HOST_RE.test(n)) throw new LabError('LAB_INVALID', `bad host name ${JSON.stringify(n)}`);
  }
  if (new Set(names).size !== names.length) {
    throw new LabError('LAB_INVALID', `duplicate host names in ${names.join(', ')}`);
  }
  await checkPrerequisites();
  await cleanupStaleLabs();

  const index = freeIndex();
  const name = `${PREFIX}${process.pid}-${index}`;
  const switchNs = `${name}_sw`;
  const hosts: Record<string, LabHost> = {};
  names.forEach((n, i) => {
    hosts[n] = {
      name: n,
      netns: `${name}-${n}`,
      ipv4: `10.231.${index}.${i + 10}`,
      ipv6: ipv6 ? `${v6Prefix(index)}:${i + 10}` : undefined,
    };
  });
  const lab = new LabImpl(name, index, hosts, switchNs, ipv6);
  try {
    await lab.build();
  } catch (err) {
    await lab.destroy();
    throw err;
  }
  return lab;
}

interface Tracked {
  child: ChildProcess;
  exited: Promise<ExitInfo>;
}

class LabImpl implements Lab {
  readonly logDir: string;
  readonly cidr4: string;
  readonly cidr6: string | undefined;
  private readonly procs = new Set<Tracked>();
  private readonly createdNetns: string[] = [];
  private destroyed = false;
  private seq = 0;

  constructor(
    readonly name: string,
    readonly index: number,
    readonly hosts: Record<string, LabHost>,
    private readonly switchNs: string,
    ipv6: boolean,
  ) {
    this.logDir = mkdtempSync(join(tmpdir(), `${name}-`));
    this.cidr4 = `10.231.${index}.0/24`;
    this.cidr6 = ipv6 ? `${v6Prefix(index)}:/64` : undefined;
  }

  async build(): Promise<void> {
    const sw = this.switchNs;
    await this.addNetns(sw);
    await must(['ip', '-n', sw, 'link', 'set', 'lo', 'up']);
    await must(['ip', '-n', sw, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0']);
    await must(['ip', '-n', sw, 'link', 'set', 'br0', 'up']);
    await Promise.all(
      Object.values(this.hosts).map(async (h, i) => {
        await this.addNetns(h.netns);
        // Created inside the switch namespace with its peer born in the host namespace:
        // the root namespace never sees either end, not even for a moment.
        await must([
          'ip',
          '-n',
          sw,
          'link',
          'add',
          `p${i}`,
          'type',
          'veth',
          'peer',
          'name',
          'eth0',
          'netns',
          h.netns,
        ]);
        await must(['ip', '-n', sw, 'link', 'set', `p${i}`, 'master', 'br0', 'up']);
        await must(['ip', '-n', h.netns, 'link', 'set', 'lo', 'up']);
        await must(['ip', '-n', h.netns, 'addr', 'add', `${h.ipv4}/24`, 'dev', 'eth0']);
        if (h.ipv6) {
          // nodad: the address is usable at once instead of "tentative" for ~1-2 s.
          await must(['ip', '-n', h.netns, 'addr', 'add', `${h.ipv6}/64`, 'dev', 'eth0', 'nodad']);
        }
        await must(['ip', '-n', h.netns, 'link', 'set', 'eth0', 'up']);
      }),
    );
  }

  private async addNetns(netns: string): Promise<void> {
    // Recorded before the command so that destroy() after a half-way failure still tries it.
    this.createdNetns.push(netns);
    await must(['ip', 'netns', 'add', netns]);
  }

  private host(name: string): LabHost {
    if (this.destroyed) throw new LabError('LAB_DESTROYED', 'the lab was destroyed');
    const h = this.hosts[name];
    if (!h)
      throw new LabError('LAB_INVALID', `no host ${JSON.stringify(name)} in lab ${this.name}`);
    return h;
  }

  // Every process is its own process group (detached), so destroy() also reaches whatever
  // it forks. `ip netns exec` execs the command, so the pid is the command itself.
  // `log` sends that stream to io.logFile; stdin from a file, because Node's stdio pipes are
  // sockets and tools that open /dev/stdin by name (`nft -f -`) cannot open a socket.
  private launch(
    host: string,
    argv: string[],
    io: {
      stdin: 'pipe' | 'ignore' | { file: string };
      stdout: 'pipe' | 'log';
      stderr: 'pipe' | 'log';
      logFile?: string;
      env?: Record<string, string> | undefined;
    },
  ): Tracked {
    const h = this.host(host);
    const fds: number[] = [];
    const open = (path: string, flags: string) => {
      fds.push(openSync(path, flags));
      return fds[fds.length - 1]!;
    };
    let child: ChildProcess;
    try {
      const log = io.stdout === 'log' || io.stderr === 'log' ? open(io.logFile!, 'a') : -1;
      child = spawn('ip', ['netns', 'exec', h.netns, ...argv], {
        detached: true,
        stdio: [
          typeof io.stdin === 'object' ? open(io.stdin.file, 'r') : io.stdin,
          io.stdout === 'log' ? log : 'pipe',
          io.stderr === 'log' ? log : 'pipe',
        ],
        env: { ...process.env, ...io.env },
      });
    } finally {
      for (const fd of fds) closeSync(fd);
    }
    // Writes to a process that already exited must not crash the test run.
    child.stdin?.on('error', () => {});
    const exited = new Promise<ExitInfo>((resolve) => {
      child.once('error', () => resolve({ code: null, signal: null }));
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    const tracked = { child, exited };
    this.procs.add(tracked);
    void exited.then(() => this.procs.delete(tracked));
    return tracked;
  }

  private logPath(host: string, label: string): string {
    this.seq += 1;
    return join(
      this.logDir,
      `${String(this.seq).padStart(3, '0')}-${host}-${label.replace(/[^\w.-]/g, '_')}.log`,
    );
  }

  async exec(host: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    let stdin: 'ignore' | { file: string } = 'ignore';
    if (opts.input !== undefined) {
      stdin = { file: this.logPath(host, 'exec-input') };
      writeFileSync(stdin.file, opts.input);
    }
    const t = this.launch(host, argv, { stdin, stdout: 'pipe', stderr: 'pipe', env: opts.env });
    let stdout = '';
    let stderr = '';
    t.child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    t.child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timeoutMs = opts.timeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    // 'close' (all stdio closed), not 'exit': output is complete, and a background child that
    // keeps the pipes open counts against the timeout instead of hanging the test.
    const closed = new Promise<ExitInfo>((resolve) => {
      t.child.once('close', (code, signal) => resolve({ code, signal }));
      t.child.once('error', () => resolve({ code: null, signal: null }));
    });
    const outcome = await Promise.race([closed, timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      await stopGroup(t, 0);
      throw new LabError('LAB_TIMEOUT', `${argv.join(' ')} on ${host} ran over ${timeoutMs} ms`);
    }
    const result = { code: outcome.code, stdout, stderr };
    if (opts.check && result.code !== 0) {
      throw new LabError(
        'LAB_EXEC_FAILED',
        `${argv.join(' ')} on ${host} exited ${result.code}: ${stderr.trim()}`,
      );
    }
    return result;
  }

  spawn(
    host: string,
    argv: string[],
    opts: { env?: Record<string, string>; logFile?: string } = {},
  ): LabProcess {
    const logFile =
      opts.logFile ??
      this.logPath(
        host,
        argv
          .map((a) => a.split('/').pop())
          .join(' ')
          .slice(0, 40),
      );
    const t = this.launch(host, argv, {
      stdin: 'ignore',
      stdout: 'log',
      stderr: 'log',
      logFile,
      env: opts.env,
    });
    return this.wrap(host, t, logFile);
  }

  private wrap(host: string, t: Tracked, logFile: string): LabProcess {
    const log = () => {
      try {
        return readFileSync(logFile, 'utf8');
      } catch {
        return '';
      }
    };
    let exitInfo: ExitInfo | undefined;
    void t.exited.then((e) => {
      exitInfo = e;
    });
    return {
      host,
      pid: t.child.pid ?? -1,
      logFile,
      child: t.child,
      exited: t.exited,
      log,
      waitForLog: async (pattern, { timeoutMs = 15_000 } = {}) => {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const m = log().match(pattern);
          if (m) return m;
          if (exitInfo) {
            throw new LabError(
              'LAB_PROCESS_FAILED',
              `process on ${host} exited (${exitInfo.code ?? exitInfo.signal}) before logging ${pattern}; log ${logFile}:\n${tail(log())}`,
            );
          }
          if (Date.now() > deadline) {
            throw new LabError(
              'LAB_TIMEOUT',
              `no ${pattern} in ${logFile} after ${timeoutMs} ms:\n${tail(log())}`,
            );
          }
          await sleep(50);
        }
      },
      stop: (graceMs = 2000) => stopGroup(t, graceMs),
    };
  }

  async listen(
    host: string,
    proto: L4,
    port: number,
    opts: { address?: string } = {},
  ): Promise<Listener> {
    const address = opts.address ?? '::';
    const logFile = this.logPath(host, `echo-${proto}-${port}`);
    const t = this.launch(
      host,
      [process.execPath, join(LAB_SCRIPTS, 'echo-server.mjs'), proto, String(port), address],
      {
        stdin: 'ignore',
        stdout: 'pipe',
        stderr: 'log',
        logFile,
      },
    );
    const first = await firstLine(t, 10_000);
    const msg = parse(first) as { listening?: number; error?: string } | undefined;
    if (msg?.listening === undefined) {
      await stopGroup(t, 0);
      throw new LabError(
        'LAB_PROCESS_FAILED',
        `echo server ${proto}/${port} on ${host} did not start: ${first ?? 'no output'}; log ${logFile}`,
      );
    }
    const proc = this.wrap(host, t, logFile);
    return {
      host,
      proto,
      port: msg.listening,
      address,
      process: proc,
      close: async () => {
        await proc.stop(500);
      },
    };
  }

  async connect(
    from: string,
    toAddr: string,
    proto: L4,
    port: number,
    opts: { timeoutMs?: number } = {},
  ): Promise<boolean> {
    const timeoutMs = opts.timeoutMs ?? 1500;
    const args = JSON.stringify({ mode: 'once', proto, host: toAddr, port, timeoutMs });
    // The outer timeout only guards against a hung node start; the client times itself.
    const r = await this.exec(
      from,
      [process.execPath, join(LAB_SCRIPTS, 'echo-client.mjs'), args],
      {
        timeoutMs: timeoutMs + 10_000,
      },
    );
    const msg = parse(r.stdout.trim()) as { ok?: boolean } | undefined;
    if (typeof msg?.ok !== 'boolean') {
      throw new LabError(
        'LAB_PROCESS_FAILED',
        `echo client on ${from} failed: ${r.stderr.trim() || r.stdout}`,
      );
    }
    return msg.ok;
  }

  async openTcp(
    from: string,
    toAddr: string,
    port: number,
    opts: { timeoutMs?: number } = {},
  ): Promise<HeldConnection> {
    const timeoutMs = opts.timeoutMs ?? 1500;
    const args = JSON.stringify({ mode: 'hold', proto: 'tcp', host: toAddr, port, timeoutMs });
    const logFile = this.logPath(from, `hold-${toAddr}-${port}`);
    const t = this.launch(from, [process.execPath, join(LAB_SCRIPTS, 'echo-client.mjs'), args], {
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: 'log',
      logFile,
    });
    const lines = new LineWaiter(t.child);
    const first = parse((await lines.next(timeoutMs + 10_000)) ?? '') as
      | { connected?: boolean; error?: string }
      | undefined;
    if (first?.connected !== true) {
      await stopGroup(t, 0);
      throw new LabError(
        'LAB_PROCESS_FAILED',
        `openTcp ${from} -> ${toAddr}:${port} failed: ${first?.error ?? 'no answer'}`,
      );
    }
    return {
      ping: async ({ timeoutMs: pingMs = 1500 } = {}) => {
        if (t.child.exitCode !== null || t.child.signalCode !== null) return false;
        const token = randomBytes(8).toString('hex');
        const waiting = lines.waitFor(
          (l) => (parse(l) as { pong?: string } | undefined)?.pong === token,
          pingMs,
        );
        t.child.stdin?.write(`${token}\n`);
        return (await waiting) !== undefined;
      },
      close: async () => {
        t.child.stdin?.end();
        await stopGroup(t, 500);
      },
    };
  }

  async nsFetch(host: string, opts: { env?: Record<string, string> } = {}): Promise<NsFetch> {
    const logFile = this.logPath(host, 'fetch-helper');
    const t = this.launch(host, [process.execPath, join(LAB_SCRIPTS, 'fetch-helper.mjs')], {
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: 'log',
      logFile,
      env: opts.env,
    });
    const lines = new LineWaiter(t.child);
    let nextId = 0;
    return {
      request: async (method, url, { headers = {}, body, timeoutMs = 10_000 } = {}) => {
        const id = ++nextId;
        let payload: string | undefined;
        const hdrs = { ...headers };
        if (typeof body === 'string') payload = body;
        else if (body !== undefined) {
          payload = JSON.stringify(body);
          if (!Object.keys(hdrs).some((k) => k.toLowerCase() === 'content-type')) {
            hdrs['content-type'] = 'application/json';
          }
        }
        const waiting = lines.waitFor(
          (l) => (parse(l) as { id?: number } | undefined)?.id === id,
          timeoutMs + 5000,
        );
        t.child.stdin?.write(
          `${JSON.stringify({ id, method, url, headers: hdrs, body: payload, timeoutMs })}\n`,
        );
        const line = await waiting;
        if (line === undefined) {
          const dead = t.child.exitCode !== null || t.child.signalCode !== null;
          throw new LabError(
            dead ? 'LAB_PROCESS_FAILED' : 'LAB_TIMEOUT',
            `${method} ${url} from ${host}: no answer from the fetch helper (log ${logFile})`,
          );
        }
        const res = parse(line) as {
          status?: number;
          headers?: Record<string, string>;
          text?: string;
          error?: string;
        };
        if (res.status === undefined) {
          throw new LabError(
            'LAB_PROCESS_FAILED',
            `${method} ${url} from ${host} failed: ${res.error}`,
          );
        }
        const text = res.text ?? '';
        return { status: res.status, headers: res.headers ?? {}, text, json: parse(text) };
      },
      close: async () => {
        t.child.stdin?.end();
        await stopGroup(t, 500);
      },
    };
  }

  async destroy(opts: { keepLogs?: boolean } = {}): Promise<void> {
    this.destroyed = true;
    await Promise.all([...this.procs].map((t) => stopGroup(t, 2000)));
    await deleteNetns(this.createdNetns.splice(0));
    if (!opts.keepLogs) rmSync(this.logDir, { recursive: true, force: true });
  }
}

async function stopGroup(t: Tracked, graceMs: number): Promise<ExitInfo> {
  const pid = t.child.pid;
  const signal = (sig: NodeJS.Signals) => {
    if (pid === undefined) return;
    try {
      process.kill(-pid, sig);
    } catch {
      // group already gone
    }
  };
  if (t.child.exitCode === null && t.child.signalCode === null) {
    signal(graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
    if (graceMs > 0) {
      const timer = setTimeout(() => signal('SIGKILL'), graceMs);
      await t.exited;
      clearTimeout(timer);
    }
  }
  // The leader may be gone while children it forked linger in the group.
  signal('SIGKILL');
  return t.exited;
}

/** Reads a child's stdout as lines; waitFor() resolves with the first matching line. */
class LineWaiter {
  private readonly buffered: string[] = [];
  private readonly waiters = new Set<{
    match: (l: string) => boolean;
    resolve: (l: string | undefined) => void;
  }>();
  private closed = false;

  constructor(child: ChildProcess) {
    if (!child.stdout) throw new LabError('LAB_PROCESS_FAILED', 'child has no stdout pipe');
    const rl = createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      for (const w of this.waiters) {
        if (w.match(line)) {
          this.waiters.delete(w);
          w.resolve(line);
          return;
        }
      }
      this.buffered.push(line);
    });
    rl.on('close', () => {
      this.closed = true;
      for (const w of this.waiters) w.resolve(undefined);
      this.waiters.clear();
    });
  }

  next(timeoutMs: number): Promise<string | undefined> {
    return this.waitFor(() => true, timeoutMs);
  }

  /** The matching line, or undefined on timeout or when stdout closes. */
  waitFor(match: (l: string) => boolean, timeoutMs: number): Promise<string | undefined> {
    const i = this.buffered.findIndex(match);
    if (i >= 0) return Promise.resolve(this.buffered.splice(i, 1)[0]);
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const w = {
        match,
        resolve: (l: string | undefined) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        resolve(undefined);
      }, timeoutMs);
      this.waiters.add(w);
    });
  }
}

function firstLine(t: Tracked, timeoutMs: number): Promise<string | undefined> {
  return new LineWaiter(t.child).next(timeoutMs);
}

function parse(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function tail(text: string, lines = 30): string {
  return text.split('\n').slice(-lines).join('\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

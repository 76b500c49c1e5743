// The e2e lab: Linux network namespaces as hosts on one machine, joined by a bridge that lives
// in its own "switch" namespace. Nothing is ever created in the root namespace (no address,
// no route, no interface), so lab traffic cannot leave the lab. See test/README.md. Namespace
// administration is in netns.ts, child processes in process.ts, the types in types.ts.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  checkPrerequisites,
  cleanupStaleLabs,
  deleteNetns,
  freeIndex,
  must,
  PREFIX,
} from './netns.js';
import { firstLine, LineWaiter, parse, sleep, stopGroup, type Tracked, tail } from './process.js';
import {
  type ExecOptions,
  type ExecResult,
  type ExitInfo,
  type HeldConnection,
  type L4,
  type Lab,
  LabError,
  type LabHost,
  type LabOptions,
  type LabProcess,
  type Listener,
  type NsFetch,
} from './types.js';

const HOST_RE = /^[a-z][a-z0-9-]{0,30}$/;
const MAX_HOSTS = 240;
// The helper scripts run as plain node processes inside the namespaces, so they stay JavaScript.
export const LAB_SCRIPTS = fileURLToPath(new URL('../scripts/', import.meta.url));

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

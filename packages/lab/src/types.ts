// The lab's types and its error (lab.ts makes labs, netns.ts manages namespaces).
import type { ChildProcess } from 'node:child_process';

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

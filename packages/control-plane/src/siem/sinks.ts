import { createSocket } from 'node:dgram';
import { createWriteStream } from 'node:fs';
import { isIP, isIPv6, connect as netConnect } from 'node:net';
import type { Writable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import type { SiemLogger } from './types.js';

/**
 * Where framed messages go. `push` never blocks and never throws: a dead SIEM must not slow
 * down the control plane, so a sink queues, drops and counts instead.
 */
export interface Sink {
  push(data: Buffer): void;
  /** False while the sink waits to reconnect; reports are held back until it is up. */
  readonly down: boolean;
  readonly connected: boolean;
  readonly queued: number;
  readonly sent: number;
  readonly errors: number;
  readonly dropped: number;
  /** Resolves once everything queued was handed over, or at once while the sink is down. */
  drain(): Promise<void>;
  close(): Promise<void>;
}

export interface SinkOptions {
  label: string;
  queueSize: number;
  logger: SiemLogger;
}

const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 30_000;
const CONNECT_TIMEOUT_MS = 5_000;
const CLOSE_TIMEOUT_MS = 2_000;

type Opener = () => { stream: Writable; readyEvent: string };

/** TCP, TLS and file: one writable at a time, a bounded queue, reconnect with backoff. */
class StreamSink implements Sink {
  private queue: Buffer[] = [];
  private stream: Writable | undefined;
  private state: 'idle' | 'connecting' | 'open' | 'backoff' | 'closed' = 'idle';
  private blocked = false;
  private inflight = 0;
  private backoffMs = MIN_BACKOFF_MS;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private waiters: Array<() => void> = [];
  sent = 0;
  errors = 0;
  dropped = 0;

  constructor(
    private readonly open: Opener,
    private readonly opts: SinkOptions,
  ) {}

  get down(): boolean {
    return this.state === 'backoff';
  }
  get connected(): boolean {
    return this.state === 'open';
  }
  get queued(): number {
    return this.queue.length;
  }

  push(data: Buffer): void {
    if (this.state === 'closed') return;
    if (this.queue.length >= this.opts.queueSize) {
      this.queue.shift();
      this.dropped++;
    }
    this.queue.push(data);
    this.pump();
  }

  drain(): Promise<void> {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.settle();
    });
  }

  async close(): Promise<void> {
    await this.drain();
    this.state = 'closed';
    clearTimeout(this.timer);
    this.dropped += this.queue.length;
    this.queue = [];
    const stream = this.stream;
    this.stream = undefined;
    if (stream && !stream.destroyed) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => stream.destroy(), CLOSE_TIMEOUT_MS);
        stream.once('close', () => {
          clearTimeout(t);
          resolve();
        });
        stream.end();
      });
    }
    this.settle();
  }

  private pump(): void {
    if (this.state === 'idle') this.connect();
    const stream = this.stream;
    if (this.state === 'open' && stream) {
      while (this.queue.length > 0 && !this.blocked) {
        this.inflight++;
        const ok = stream.write(this.queue.shift()!, (err) => {
          this.inflight--;
          if (err) this.errors++;
          else this.sent++;
          this.settle();
        });
        if (!ok) {
          this.blocked = true;
          stream.once('drain', () => {
            this.blocked = false;
            this.pump();
          });
        }
      }
    }
    this.settle();
  }

  private connect(): void {
    this.state = 'connecting';
    let opened: ReturnType<Opener>;
    try {
      opened = this.open();
    } catch (err) {
      this.fail(err);
      return;
    }
    const { stream, readyEvent } = opened;
    this.stream = stream;
    let lastError: unknown;
    const timeout = setTimeout(
      () => stream.destroy(new Error(`no connection within ${CONNECT_TIMEOUT_MS} ms`)),
      CONNECT_TIMEOUT_MS,
    );
    timeout.unref();
    stream.once(readyEvent, () => {
      clearTimeout(timeout);
      if (this.failures > 0) {
        this.opts.logger.info({ target: this.opts.label }, 'SIEM target reachable again');
      }
      this.failures = 0;
      this.backoffMs = MIN_BACKOFF_MS;
      this.state = 'open';
      this.pump();
    });
    stream.on('error', (err) => {
      lastError = err;
    });
    stream.once('close', () => {
      clearTimeout(timeout);
      if (this.stream !== stream) return;
      this.stream = undefined;
      this.blocked = false;
      if (this.state === 'closed') return;
      this.fail(lastError ?? new Error('connection closed by peer'));
    });
  }

  private fail(err: unknown): void {
    this.errors++;
    // Log the first failure of an outage only: a SIEM down for an hour is one warning.
    if (this.failures++ === 0) {
      this.opts.logger.warn({ target: this.opts.label, err }, 'SIEM target unreachable');
    }
    this.state = 'backoff';
    const delay = this.backoffMs * (0.8 + Math.random() * 0.4);
    this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
    this.timer = setTimeout(() => {
      if (this.state !== 'backoff') return;
      this.state = 'idle';
      if (this.queue.length > 0) this.pump();
    }, delay);
    this.timer.unref();
    this.settle();
  }

  private settle(): void {
    const idle = this.queue.length === 0 && this.inflight === 0;
    if (!idle && this.state !== 'backoff' && this.state !== 'closed') return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

/** RFC 5426: one message per datagram, nothing to reconnect. */
class UdpSink implements Sink {
  private socket;
  private inflight = 0;
  private closed = false;
  private waiters: Array<() => void> = [];
  readonly down = false;
  readonly connected = true;
  sent = 0;
  errors = 0;
  dropped = 0;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly opts: SinkOptions,
  ) {
    this.socket = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
    this.socket.on('error', (err) => {
      this.errors++;
      this.opts.logger.warn({ target: opts.label, err }, 'SIEM UDP socket error');
    });
    this.socket.unref();
  }

  get queued(): number {
    return this.inflight;
  }

  push(data: Buffer): void {
    if (this.closed) return;
    // A datagram cannot be taken back once handed to the socket, so the newest is dropped.
    if (this.inflight >= this.opts.queueSize) {
      this.dropped++;
      return;
    }
    this.inflight++;
    this.socket.send(data, this.port, this.host, (err) => {
      this.inflight--;
      if (err) this.errors++;
      else this.sent++;
      if (this.inflight === 0) {
        const waiters = this.waiters;
        this.waiters = [];
        for (const w of waiters) w();
      }
    });
  }

  drain(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async close(): Promise<void> {
    await this.drain();
    this.closed = true;
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
  }
}

export function createUdpSink(host: string, port: number, opts: SinkOptions): Sink {
  return new UdpSink(host, port, opts);
}

export function createTcpSink(host: string, port: number, opts: SinkOptions): Sink {
  return new StreamSink(() => {
    const socket = netConnect({ host, port });
    socket.setKeepAlive(true, 30_000);
    // A syslog server sends nothing; reading keeps 'end' (the server hanging up) observable.
    socket.resume();
    return { stream: socket, readyEvent: 'connect' };
  }, opts);
}

export function createTlsSink(
  host: string,
  port: number,
  ca: string | undefined,
  opts: SinkOptions,
): Sink {
  return new StreamSink(() => {
    const socket = tlsConnect({
      host,
      port,
      ...(ca ? { ca } : {}),
      // SNI takes names only; an IP address is still verified against the certificate's SANs.
      ...(isIP(host) ? {} : { servername: host }),
      minVersion: 'TLSv1.2',
    });
    socket.setKeepAlive(true, 30_000);
    socket.resume();
    return { stream: socket, readyEvent: 'secureConnect' };
  }, opts);
}

export function createFileSink(path: string, opts: SinkOptions): Sink {
  return new StreamSink(
    () => ({ stream: createWriteStream(path, { flags: 'a', mode: 0o640 }), readyEvent: 'open' }),
    opts,
  );
}

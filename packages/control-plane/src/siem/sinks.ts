import { createSocket } from 'node:dgram';
import { createWriteStream, fstatSync, type Stats, statSync } from 'node:fs';
import { isIP, isIPv6, connect as netConnect } from 'node:net';
import type { Writable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import type { MessageQueue } from './queue.js';
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
  /** Messages sent again after their connection died before they were confirmed. */
  readonly resent: number;
  /** Bytes in the on-disk spool (0 without one). */
  readonly spoolBytes: number;
  /** Resolves once everything queued was handed over, or at once while the sink is down. */
  drain(): Promise<void>;
  /** File targets: close and open the path again (log rotation); no-op elsewhere. */
  reopen(): void;
  close(): Promise<void>;
}

export interface SinkOptions {
  label: string;
  logger: SiemLogger;
}

export interface StreamSinkOptions extends SinkOptions {
  /** Holds what waits for delivery; the sink owns it from here on. */
  queue: MessageQueue;
  /**
   * A message written to a connection that stays open this long after counts as delivered;
   * one whose connection dies sooner is sent again. Default 10 s (syslog has no acks).
   */
  confirmMs?: number;
  /** How often a file target checks that its path still names the file it writes. Default 1 s. */
  rotateCheckMs?: number;
}

const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 30_000;
const CONNECT_TIMEOUT_MS = 5_000;
const CLOSE_TIMEOUT_MS = 2_000;
export const DEFAULT_CONFIRM_MS = 10_000;
const DEFAULT_ROTATE_CHECK_MS = 1_000;

type Opener = () => {
  stream: Writable;
  readyEvent: string;
  /** True when the stream no longer writes where it should (file rotated away). */
  stale?: () => boolean;
};

/**
 * TCP, TLS and file: one writable at a time, a bounded queue, reconnect with backoff. A
 * message leaves the queue only once confirmed (see confirmMs); a connection that dies
 * rewinds the queue, so delivery is at least once: the SIEM may see a message twice.
 */
class StreamSink implements Sink {
  private readonly queue: MessageQueue;
  private stream: Writable | undefined;
  private state: 'idle' | 'connecting' | 'open' | 'backoff' | 'closed' = 'idle';
  private blocked = false;
  private inflight = 0;
  private backoffMs = MIN_BACKOFF_MS;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private stale: (() => boolean) | undefined;
  /** Written on the current stream, not yet confirmed: id and when the write completed. */
  private written: Array<{ id: number; at: number }> = [];
  private waiters: Array<() => void> = [];
  private readonly confirmMs: number;
  sent = 0;
  errors = 0;
  resent = 0;

  constructor(
    private readonly open: Opener,
    private readonly opts: StreamSinkOptions,
  ) {
    this.queue = opts.queue;
    this.confirmMs = opts.confirmMs ?? DEFAULT_CONFIRM_MS;
    // Messages left in a spool by an earlier run go out without waiting for a new one.
    if (this.queue.pending > 0) this.pump();
  }

  get down(): boolean {
    return this.state === 'backoff';
  }
  get connected(): boolean {
    return this.state === 'open';
  }
  get queued(): number {
    return this.queue.pending;
  }
  get dropped(): number {
    return this.queue.dropped;
  }
  get spoolBytes(): number {
    return this.queue.bytes;
  }

  push(data: Buffer): void {
    if (this.state === 'closed') return;
    this.queue.push(data);
    this.pump();
  }

  drain(): Promise<void> {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.settle();
    });
  }

  reopen(): void {
    const stream = this.stream;
    if (this.state !== 'open' || !stream) return;
    // Detach first: the old stream's close is then no failure; what it took is confirmed.
    this.detach();
    this.state = 'idle';
    this.opts.logger.info({ target: this.opts.label }, 'SIEM file reopened');
    stream.end();
    this.pump();
  }

  async close(): Promise<void> {
    await this.drain();
    this.state = 'closed';
    clearTimeout(this.timer);
    const stream = this.stream;
    this.detach();
    if (stream && !stream.destroyed) {
      const ended = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => {
          stream.destroy();
          resolve(false);
        }, CLOSE_TIMEOUT_MS);
        stream.once('close', () => {
          clearTimeout(t);
          resolve(true);
        });
        stream.end();
      });
      // A clean close means the peer took everything; otherwise a spool keeps it for the next run.
      if (ended) this.queue.ack(Number.MAX_SAFE_INTEGER);
    }
    this.settle();
  }

  /** Forgets the current stream; everything it took counts as delivered. */
  private detach(): void {
    clearInterval(this.ticker);
    const last = this.written.at(-1);
    if (last) this.queue.ack(last.id + 1);
    this.written = [];
    this.stream = undefined;
    this.stale = undefined;
    this.blocked = false;
  }

  private pump(): void {
    if (this.state === 'idle') this.connect();
    const stream = this.stream;
    if (this.state === 'open' && stream) {
      while (!this.blocked) {
        const next = this.queue.next();
        if (!next) break;
        this.inflight++;
        const ok = stream.write(next.frame, (err) => {
          this.inflight--;
          if (err) this.errors++;
          else {
            this.sent++;
            this.written.push({ id: next.id, at: Date.now() });
            if (this.confirmMs === 0) this.confirm();
          }
          this.settle();
        });
        if (!ok) {
          this.blocked = true;
          stream.once('drain', () => {
            if (this.stream !== stream) return;
            this.blocked = false;
            this.pump();
          });
        }
      }
    }
    this.settle();
  }

  private confirm(): void {
    const before = Date.now() - this.confirmMs;
    let upTo = -1;
    while (this.written.length > 0 && this.written[0]!.at <= before)
      upTo = this.written.shift()!.id;
    if (upTo >= 0) this.queue.ack(upTo + 1);
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
      if (this.stream !== stream) return;
      if (this.failures > 0) {
        this.opts.logger.info({ target: this.opts.label }, 'SIEM target reachable again');
      }
      this.failures = 0;
      this.backoffMs = MIN_BACKOFF_MS;
      this.state = 'open';
      this.stale = opened.stale;
      this.ticker = setInterval(
        () => (this.stale?.() ? this.reopen() : this.confirm()),
        Math.min(this.confirmMs || Infinity, this.opts.rotateCheckMs ?? DEFAULT_ROTATE_CHECK_MS),
      );
      this.ticker.unref();
      this.pump();
    });
    stream.on('error', (err) => {
      lastError = err;
    });
    stream.once('close', () => {
      clearTimeout(timeout);
      if (this.stream !== stream) return;
      clearInterval(this.ticker);
      this.stream = undefined;
      this.stale = undefined;
      this.blocked = false;
      this.written = [];
      if (this.state === 'closed') return;
      // Whatever this connection took but did not confirm goes out again on the next one.
      this.resent += this.queue.rewind();
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
      if (this.queue.unsent > 0) this.pump();
    }, delay);
    this.timer.unref();
    this.settle();
  }

  private settle(): void {
    const idle = this.queue.unsent === 0 && this.inflight === 0;
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
  readonly resent = 0;
  readonly spoolBytes = 0;
  sent = 0;
  errors = 0;
  dropped = 0;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly opts: SinkOptions & { queueSize: number },
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

  reopen(): void {}

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

export function createUdpSink(
  host: string,
  port: number,
  opts: SinkOptions & { queueSize: number },
): Sink {
  return new UdpSink(host, port, opts);
}

export function createTcpSink(host: string, port: number, opts: StreamSinkOptions): Sink {
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
  opts: StreamSinkOptions,
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

/** Appends to `path`; reopens it when the path names another file (rotated) or is gone. */
export function createFileSink(path: string, opts: StreamSinkOptions): Sink {
  return new StreamSink(
    () => {
      const stream = createWriteStream(path, { flags: 'a', mode: 0o640 });
      let opened: string | undefined;
      stream.once('open', (fd: number) => {
        opened = fileId(fstatSync(fd));
      });
      const stale = () => {
        if (opened === undefined) return false;
        try {
          return fileId(statSync(path)) !== opened;
        } catch {
          return true;
        }
      };
      return { stream, readyEvent: 'open', stale };
    },
    { ...opts, confirmMs: 0 },
  );
}

const fileId = (s: Stats): string => `${s.dev}:${s.ino}`;

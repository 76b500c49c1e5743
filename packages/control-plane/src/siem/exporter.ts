import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { VERSION } from '../version.js';
import { SiemError } from './errors.js';
import { formatJson, formatSyslog, type Identity, octetFrame } from './format.js';
import { FlowAggregator, TokenBucket } from './limiter.js';
import { createMemoryQueue, createSpoolQueue } from './queue.js';
import {
  createFileSink,
  createTcpSink,
  createTlsSink,
  createUdpSink,
  type Sink,
  type SinkOptions,
} from './sinks.js';
import { parseTarget } from './target-url.js';
import type {
  AggregatedFlow,
  ExporterStats,
  ExportRecord,
  FlowEvent,
  SecurityEvent,
  SiemLogger,
  TargetConfig,
} from './types.js';

export interface EventExporter {
  /** Synchronous and cheap; never throws, never waits for a target. */
  emit(e: SecurityEvent): void;
  /** Sends pending aggregates and suppression reports; resolves when targets took them or are down. */
  flush(): Promise<void>;
  /** flush(), then closes every connection. Later emits are counted as rejected. */
  close(): Promise<void>;
  /** Reopens file targets (SIGHUP after log rotation; a rotated path is also noticed alone). */
  reopen(): void;
  stats(): ExporterStats;
}

export interface EventExporterOptions {
  /** HOSTNAME in the syslog header and `host` in JSON; os.hostname() by default. */
  hostname?: string;
  logger?: SiemLogger;
  /** Per target; `false` disables. Default 50 events/s, burst 200. */
  rateLimit?: { perSecond?: number; burst?: number } | false;
  /** Flow aggregation window and suppression report interval; 0 sends every flow alone. Default 10 s. */
  aggregateWindowMs?: number;
  /** Messages queued per target while it is slow or down; the oldest go first. Default 1000. */
  queueSize?: number;
  /**
   * TCP/TLS targets spool to `<spoolDir>/<target>/` on disk instead of memory (survives a
   * restart, bounded by spoolMaxBytes, oldest dropped first). Unset: memory, queueSize.
   */
  spoolDir?: string;
  /** Bytes per target spool. Default 64 MiB. */
  spoolMaxBytes?: number;
  /** A syslog message counts as delivered once its connection stayed up this long. Default 10 s. */
  confirmMs?: number;
  /** Distinct (verdict, src, dst, workload) keys held per window before an early flush. Default 1000. */
  maxAggregateKeys?: number;
}

export const DEFAULT_RATE_PER_SECOND = 50;
export const DEFAULT_BURST = 200;
export const DEFAULT_AGGREGATE_WINDOW_MS = 10_000;
export const DEFAULT_SPOOL_MAX_BYTES = 64 * 1024 * 1024;

const silent: SiemLogger = { warn() {}, info() {} };

interface Pipeline {
  config: TargetConfig;
  sink: Sink;
  bucket: TokenBucket | undefined;
  rateLimited: number;
  reportedRateLimited: number;
  reportedDropped: number;
  lastReport: number;
}

/**
 * Exports flow and audit events to SIEM targets (`--siem` URLs, see parseTarget). Flows are
 * aggregated per window, every target has its own token bucket and queue, and whatever is
 * held back is reported in the stream as a RATE_LIMITED event.
 */
export function createEventExporter(
  targets: string[],
  opts: EventExporterOptions = {},
): EventExporter {
  const logger = opts.logger ?? silent;
  const id: Identity = {
    hostname: opts.hostname ?? osHostname(),
    procId: String(process.pid),
    version: VERSION,
  };
  const windowMs = opts.aggregateWindowMs ?? DEFAULT_AGGREGATE_WINDOW_MS;
  const reportEveryMs = windowMs > 0 ? windowMs : DEFAULT_AGGREGATE_WINDOW_MS;
  const queueSize = opts.queueSize ?? 1000;
  const rate = opts.rateLimit === false ? undefined : (opts.rateLimit ?? {});

  // Parse everything before opening anything, so a bad URL leaves no socket behind.
  const configs = targets.map(parseTarget);
  const cas = configs.map((c) => (c.kind === 'syslog' && c.ca ? readCa(c.ca, c.url) : undefined));
  const pipelines: Pipeline[] = configs.map((config, i) => ({
    config,
    sink: openSink(config, cas[i], {
      label: config.url,
      logger,
      queueSize,
      confirmMs: opts.confirmMs,
      spool: opts.spoolDir
        ? { dir: opts.spoolDir, maxBytes: opts.spoolMaxBytes ?? DEFAULT_SPOOL_MAX_BYTES }
        : undefined,
    }),
    bucket: rate
      ? new TokenBucket(
          rate.perSecond ?? DEFAULT_RATE_PER_SECOND,
          rate.burst ?? DEFAULT_BURST,
          Date.now,
        )
      : undefined,
    rateLimited: 0,
    reportedRateLimited: 0,
    reportedDropped: 0,
    lastReport: Date.now(),
  }));

  const aggregator = new FlowAggregator(opts.maxAggregateKeys ?? 1000);
  let received = 0;
  let aggregated = 0;
  let rejected = 0;
  let closed = false;

  const encode = (c: TargetConfig, r: ExportRecord): Buffer => {
    if (c.kind === 'file') return Buffer.from(`${formatJson(r, id.hostname)}\n`);
    const msg = formatSyslog(r, c.facility, c.format, id);
    return c.transport === 'udp' ? Buffer.from(msg) : octetFrame(msg);
  };

  const dispatch = (r: ExportRecord): void => {
    for (const p of pipelines) {
      if (p.bucket && !p.bucket.take()) {
        p.rateLimited++;
        continue;
      }
      p.sink.push(encode(p.config, r));
    }
  };

  // Reports bypass the bucket (they are what makes suppression visible) but wait for a live
  // target, so the counts accumulate across an outage instead of being dropped with it.
  const report = (p: Pipeline): void => {
    const rateLimited = p.rateLimited - p.reportedRateLimited;
    const queueDropped = p.sink.dropped - p.reportedDropped;
    if (rateLimited + queueDropped === 0 || p.sink.down) return;
    const now = Date.now();
    p.reportedRateLimited += rateLimited;
    p.reportedDropped += queueDropped;
    p.sink.push(
      encode(p.config, {
        kind: 'suppressed',
        at: new Date(now),
        rateLimited,
        queueDropped,
        windowMs: now - p.lastReport,
      }),
    );
    p.lastReport = now;
  };

  const tick = (): void => {
    for (const flow of aggregator.drain()) dispatch(flow);
    for (const p of pipelines) report(p);
  };
  const timer = setInterval(tick, reportEveryMs);
  timer.unref();

  return {
    emit(e) {
      try {
        if (closed || !isEvent(e)) {
          rejected++;
          return;
        }
        received++;
        if (e.kind === 'audit' || e.kind === 'agent-event') {
          dispatch(e);
        } else if (windowMs <= 0) {
          dispatch(single(e));
        } else {
          if (aggregator.add(e)) aggregated++;
          if (aggregator.full()) for (const flow of aggregator.drain()) dispatch(flow);
        }
      } catch (err) {
        rejected++;
        logger.warn({ err }, 'SIEM exporter refused an event');
      }
    },

    async flush() {
      tick();
      await Promise.all(pipelines.map((p) => p.sink.drain()));
    },

    async close() {
      if (closed) return;
      tick();
      closed = true;
      clearInterval(timer);
      await Promise.all(pipelines.map((p) => p.sink.close()));
    },

    reopen() {
      for (const p of pipelines) p.sink.reopen();
    },

    stats() {
      return {
        received,
        aggregated,
        rejected,
        targets: pipelines.map((p) => ({
          target: p.config.url,
          sent: p.sink.sent,
          rateLimited: p.rateLimited,
          queueDropped: p.sink.dropped,
          errors: p.sink.errors,
          queued: p.sink.queued,
          connected: p.sink.connected,
          resent: p.sink.resent,
          spoolBytes: p.sink.spoolBytes,
        })),
      };
    },
  };
}

interface OpenOptions extends SinkOptions {
  queueSize: number;
  confirmMs: number | undefined;
  spool: { dir: string; maxBytes: number } | undefined;
}

function openSink(c: TargetConfig, ca: string | undefined, o: OpenOptions): Sink {
  if (c.kind === 'syslog' && c.transport === 'udp') return createUdpSink(c.host, c.port, o);
  const base = { label: o.label, logger: o.logger, confirmMs: o.confirmMs };
  if (c.kind === 'file')
    return createFileSink(c.path, { ...base, queue: createMemoryQueue(o.queueSize) });
  const queue = o.spool
    ? createSpoolQueue(join(o.spool.dir, spoolName(c)), o.spool.maxBytes)
    : createMemoryQueue(o.queueSize);
  const so = { ...base, queue };
  return c.transport === 'tcp'
    ? createTcpSink(c.host, c.port, so)
    : createTlsSink(c.host, c.port, ca, so);
}

/** One spool per target URL: readable, and distinct for URLs that differ only in parameters. */
function spoolName(c: TargetConfig & { kind: 'syslog' }): string {
  const hash = createHash('sha256').update(c.url).digest('hex').slice(0, 12);
  return `${c.transport}-${c.host.replace(/[^A-Za-z0-9.-]/g, '_')}-${c.port}-${hash}`;
}

function readCa(path: string, url: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (cause) {
    throw new SiemError(
      'SIEM_CONFIG_INVALID',
      `invalid SIEM target ${JSON.stringify(url)}: ca ${path} is not readable`,
      { cause },
    );
  }
}

function isEvent(e: SecurityEvent): boolean {
  if (!e || !(e.at instanceof Date) || Number.isNaN(e.at.getTime())) return false;
  return e.kind === 'audit' || e.kind === 'flow' || e.kind === 'agent-event';
}

function single(e: FlowEvent): AggregatedFlow {
  return {
    ...e,
    firstAt: e.at,
    events: 1,
    ports: [e.port & 0xffff],
    portCount: 1,
    ruleIds: [e.ruleId],
  };
}

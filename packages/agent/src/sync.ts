import {
  type AgentEvent,
  AgentServiceClient,
  createResumingCredentials,
  type FlowRecord,
  type PolicyUpdate,
  type RuleCounter,
  type SyncRequest,
  type SyncResponse,
  type Telemetry,
} from '@bulkhead/proto';
import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { createApplyRetry } from './apply-retry.js';
import { mergeCounters } from './counters.js';
import type { ApplyResult, Dataplane } from './dataplane.js';
import type { Endpoint, Endpoints } from './endpoints.js';
import type { Identity } from './enroll.js';
import { AgentError } from './errors.js';
import { type BackoffOptions, createBackoff, describeError, isPermanent } from './retry.js';
import { readFileIfExists, statePath, writeFileAtomic } from './state.js';
import { mergeChunks } from './update.js';

/**
 * gRPC keepalive on the Sync stream: a ping every timeMs, and a link that does not answer
 * one within timeoutMs is closed, so a black-holed connection is noticed within
 * timeMs + timeoutMs. grpc-js servers (the control plane) accept pings at any rate while a
 * call is open, and the Sync stream always is; a proxy in between may need its own setting.
 */
export interface KeepaliveOptions {
  timeMs: number;
  timeoutMs: number;
}

export const DEFAULT_KEEPALIVE: KeepaliveOptions = { timeMs: 10_000, timeoutMs: 10_000 };

export interface SyncOptions {
  /** Where the control plane is; asked once per connection attempt. */
  endpoints: Endpoints;
  keepalive?: KeepaliveOptions;
  serverName: string;
  identity: Identity;
  dataplane: Dataplane;
  stateDir: string;
  hostname: string;
  addresses: string[];
  agentVersion: string;
  telemetryIntervalMs: number;
  logger: Logger;
  /** Called with true once the control plane has answered a Hello, false when that stream ends. */
  onConnectedChange?: (connected: boolean) => void;
  backoff?: BackoffOptions;
}

/**
 * The agent's one Sync stream, reconnected with backoff (full jitter) for as long as it runs,
 * each attempt on a fresh channel to the next address from `endpoints`.
 * The stream counts as connected only once the control plane answered the Hello (a Welcome
 * or an update); only then is the backoff reset and telemetry sent. Policy arrives as
 * PolicyUpdates (wiring contract): chunks are buffered until the `last` one, the update is
 * applied in one transaction and acked once with its hash; a delta on another base, or one
 * the agent refuses, brings a new Hello with the agent's hash (the control plane answers
 * with a full sync). An update nftables refused (APPLY_FAILED) is acked ok=false and applied
 * again with backoff until it applies (then acked ok=true on the stream up at that time) or a
 * newer update replaces it. A stream refused for the agent's identity (UNAUTHENTICATED,
 * PERMISSION_DENIED: revoked or unknown certificate) or its Hello is retried at the backoff
 * cap only: an operator has to act, and until then the kernel keeps the last rule set.
 */
export interface SyncClient {
  start(): Promise<void>;
  stop(): Promise<void>;
}

type State = 'connecting' | 'connected' | 'backoff' | 'stopped';
type SyncStream = ClientDuplexStream<SyncRequest, SyncResponse>;

/** A numbered telemetry batch and the stream that last took it, when. */
interface Sealed {
  telemetry: Telemetry;
  stream?: SyncStream;
  sentAt?: number;
}

/**
 * Options of every Sync channel besides the target name and keepalive. No channelz: grpc-js's
 * introspection (unused here) books each channel, and every attempt opens a fresh one.
 */
export const SYNC_CHANNEL_OPTIONS = { 'grpc.enable_channelz': 0 } as const;

/** Flows per Telemetry message: keeps a full buffer (50k flows) well under gRPC's 4 MB limit. */
export const MAX_FLOWS_PER_BATCH = 10_000;

export function createSyncClient(options: SyncOptions): SyncClient {
  const { logger, dataplane } = options;
  const backoff = createBackoff(options.backoff);
  const seqFile = statePath(options.stateDir, 'telemetrySeq');

  const keepalive = options.keepalive ?? DEFAULT_KEEPALIVE;
  const tls = createResumingCredentials(options.identity, options.serverName);
  // Without acks (a control plane that does not send them), a batch counts as delivered once
  // the stream it went out on answered a keepalive ping sent after it, which a stream still up
  // this long after the write must have done.
  const confirmMs = keepalive.timeMs + keepalive.timeoutMs;

  let state: State = 'stopped';
  let client: AgentServiceClient | undefined;
  let endpoint: Endpoint | undefined;
  let call: SyncStream | undefined;
  // Batches sealed with a seq and not yet confirmed: a stream that dies sends them again, with
  // the same seq, on the next one; the control plane counts a seq once.
  let outbox: Sealed[] = [];
  const closed = new WeakMap<SyncStream, Promise<false>>();
  // Streams whose Welcome said the control plane acks each batch once stored.
  const acking = new WeakSet<SyncStream>();
  // The batch sent and not yet acked (at most one, as sends go one at a time): its seq, and what
  // the ack calls.
  let awaitedAck: { seq: number; stored(): void } | undefined;
  let reconnectTimer: NodeJS.Timeout | undefined;
  let telemetryTimer: NodeJS.Timeout | undefined;
  let lastSeq = 0;
  // Deltas read from the kernel but not yet handed to a live stream.
  let unsent: RuleCounter[] = [];
  // Updates are applied and acked one after another, in arrival order.
  let applying: Promise<void> = Promise.resolve();
  let telemetryRunning: Promise<void> = Promise.resolve();
  const applyRetry = createApplyRetry({
    backoff: options.backoff,
    attempt: reapply,
    onScheduled: (u, retryInMs) =>
      logger.warn(
        { revision: u.revision, hash: u.hash, retryInMs },
        'update not applied; retrying',
      ),
  });
  // A send whose write may wait long: a busy control plane stops reading the stream and HTTP/2
  // flow control holds the write. Meanwhile ticks only collect, into the bounded buffer.
  let sending: Promise<void> | undefined;

  function setState(
    next: State,
    detail: Record<string, unknown> = {},
    level: 'info' | 'error' = 'info',
  ): void {
    if (state === next) return;
    const was = state;
    state = next;
    logger[level]({ from: was, to: next, target: endpoint?.target, ...detail }, 'sync state');
    if (was === 'connected' || next === 'connected') {
      options.onConnectedChange?.(next === 'connected');
    }
  }

  // A function, so that TypeScript does not narrow `state` across an await.
  const stopped = () => state === 'stopped';

  function retry(reason: string, err?: unknown): void {
    const refused = isPermanent(err);
    if (refused) backoff.toCap();
    const retryInMs = backoff.next();
    setState(
      'backoff',
      {
        reason: refused ? 'refused by the control plane; keeping the last rule set' : reason,
        ...(err !== undefined && describeError(err)),
        retryInMs,
      },
      refused ? 'error' : 'info',
    );
    reconnectTimer = setTimeout(() => void connect(), retryInMs);
  }

  async function connect(): Promise<void> {
    if (state === 'stopped') return;
    setState('connecting');
    client?.close();
    client = undefined;
    try {
      endpoint = await options.endpoints.next();
    } catch (err) {
      if (!stopped()) retry('no address', err);
      return;
    }
    if (stopped()) return;
    const at = endpoint;
    client = new AgentServiceClient(at.target, tls, {
      ...SYNC_CHANNEL_OPTIONS,
      'grpc.ssl_target_name_override': options.serverName,
      'grpc.keepalive_time_ms': keepalive.timeMs,
      'grpc.keepalive_timeout_ms': keepalive.timeoutMs,
    });
    const stream = client.sync();
    call = stream;
    let ended = false;
    let gone!: (sent: false) => void;
    closed.set(stream, new Promise<false>((resolve) => (gone = resolve)));
    const onEnd = (reason: string, err?: Error) => {
      if (ended) return;
      ended = true;
      gone(false);
      if (call === stream) call = undefined;
      if (state === 'stopped') return;
      // A control plane that answered a moment ago is most likely restarting: come back soon.
      if (state === 'connected') backoff.lost();
      retry(reason, err);
    };
    const markConnected = (detail: Record<string, unknown>) => {
      if (state === 'connecting' && !ended) {
        backoff.reset();
        options.endpoints.connected(at);
        setState('connected', detail);
      }
    };
    // Chunks of the update in flight on this stream.
    let chunks: PolicyUpdate[] = [];
    stream.on('data', (msg: SyncResponse) => {
      if (msg.welcome) {
        if (msg.welcome.telemetryAcks) acking.add(stream);
        markConnected({ ...msg.welcome });
      }
      if (msg.telemetryAck && awaitedAck?.seq === msg.telemetryAck.seq) {
        awaitedAck.stored();
      }
      if (msg.update) {
        markConnected({ answer: 'update' });
        chunks.push(msg.update);
        if (!msg.update.last) return;
        const parts = chunks;
        chunks = [];
        // Whatever this update is, it replaces one still waiting to be applied again.
        applyRetry.cancel();
        applying = applying.then(() => applyAndAck(stream, parts));
      }
    });
    stream.on('error', (err: Error) => onEnd('error', err));
    stream.on('end', () => onEnd('end'));
    stream.on('close', () => onEnd('close'));
    // grpc-js buffers this write even while no connection exists, so its success says
    // nothing about the control plane: only its answer does (markConnected above).
    hello(stream);
  }

  /** What the agent holds; on an open stream it asks for a full sync when that is stale. */
  function hello(stream: SyncStream): void {
    const applied = dataplane.applied;
    stream.write({
      hello: {
        appliedRevision: applied?.revision ?? 0,
        appliedHash: applied?.hash ?? '',
        hostname: options.hostname,
        addresses: options.addresses,
        agentVersion: options.agentVersion,
        packedRanges: true,
        telemetryAcks: true,
      },
    });
  }

  async function applyAndAck(stream: SyncStream, chunks: PolicyUpdate[]): Promise<void> {
    // After a reconnect the Hello already tells the control plane what the kernel holds.
    const live = () => call === stream;
    const first = chunks[0]!;
    const holds = dataplane.applied?.hash ?? '';
    if (!first.full && first.baseHash !== holds) {
      logger.warn(
        { base: first.baseHash, hash: first.hash, holds },
        'delta on another state dropped; asking for a full sync',
      );
      if (live()) hello(stream);
      return;
    }
    logger.info(
      { revision: first.revision, hash: first.hash, full: first.full, chunks: chunks.length },
      'policy update received',
    );
    let result: ApplyResult;
    try {
      const update = mergeChunks(chunks);
      result = await dataplane.apply(update);
      if (result.error?.code === 'APPLY_FAILED') applyRetry.failed(update);
    } catch (err) {
      // mergeChunks: the chunks disagree.
      const error = err instanceof AgentError ? err : new AgentError('UPDATE_REFUSED', String(err));
      logger.error({ err: error }, 'update refused');
      result = { ok: false, micros: 0, error };
    }
    if (live()) ack(stream, first, result);
  }

  function ack(stream: SyncStream, update: PolicyUpdate, result: ApplyResult): void {
    stream.write({
      ack: {
        revision: update.revision,
        hash: update.hash,
        ok: result.ok,
        error: result.error?.message ?? '',
        applyMicros: result.micros,
      },
    });
    if (result.error?.code === 'UPDATE_REFUSED') hello(stream);
  }

  /**
   * Applies again an update nftables refused, in turn with arriving updates; true when it is
   * done with (applied, replaced, or refused for another reason: a new Hello asks for a full
   * sync). Acked on the stream up now; without one, the next Hello tells what is applied.
   */
  function reapply(update: PolicyUpdate): Promise<boolean> {
    const run = applying.then(async () => {
      if (!applyRetry.wants(update) || stopped()) return true;
      const result = await dataplane.apply(update);
      if (result.error?.code === 'APPLY_FAILED') return false;
      if (result.ok) logger.info({ revision: update.revision }, 'update applied on retry');
      if (call && state === 'connected') ack(call, update, result);
      return true;
    });
    applying = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  async function collectAndSend(): Promise<void> {
    unsent = mergeCounters(unsent, await dataplane.collect());
    sending ??= sendTelemetry()
      .catch((err) => logger.warn({ err }, 'telemetry failed'))
      .finally(() => {
        sending = undefined;
      });
  }

  async function sendTelemetry(): Promise<void> {
    const stream = call;
    if (!stream || state !== 'connected') return;
    const now = Date.now();
    outbox = outbox.filter((b) => !(b.stream === stream && b.sentAt! <= now - confirmMs));
    // What an earlier stream took without confirming goes first, in seq order.
    for (const b of outbox) {
      if (b.stream !== stream && !(await send(stream, b))) return;
    }
    // Flows stay in the dataplane's bounded buffer until there is a stream to take them.
    const { flows, events } = dataplane.flows.take(now);
    const counters = unsent;
    unsent = [];
    let first = true;
    do {
      const batch = {
        counters: first ? counters : [],
        flows: flows.splice(0, MAX_FLOWS_PER_BATCH),
        events: first ? events : [],
      };
      first = false;
      const sealed = await seal(batch);
      if (!sealed) {
        // Not numbered: counters are summed into the next batch, flows and events go back
        // into the bounded buffer.
        unsent = mergeCounters(batch.counters, unsent);
        dataplane.flows.putBack({ flows: [...batch.flows, ...flows], events: batch.events });
        return;
      }
      outbox.push(sealed);
      if (!(await send(stream, sealed))) {
        dataplane.flows.putBack({ flows, events: [] });
        return;
      }
    } while (flows.length > 0);
  }

  /** Numbers a batch; the seq is persisted first, so a restart never reuses one. */
  async function seal(batch: {
    counters: RuleCounter[];
    flows: FlowRecord[];
    events: AgentEvent[];
  }): Promise<Sealed | undefined> {
    const seq = lastSeq + 1;
    try {
      await writeFileAtomic(seqFile, `${seq}\n`);
    } catch (err) {
      logger.warn({ err, seq }, 'cannot persist the telemetry seq; batch kept for the next one');
      return undefined;
    }
    lastSeq = seq;
    const telemetry: Telemetry = {
      seq,
      timeUnixMs: Date.now(),
      appliedHash: dataplane.applied?.hash ?? '',
      ...batch,
    };
    return { telemetry };
  }

  async function send(stream: SyncStream, b: Sealed): Promise<boolean> {
    const written = new Promise<boolean>((resolve) => {
      try {
        stream.write({ telemetry: b.telemetry }, (err: unknown) => resolve(!err));
      } catch {
        resolve(false);
      }
    });
    // A write stuck in a dead connection never calls back: the stream's end settles it.
    const sent = await Promise.race([written, closed.get(stream) ?? false]);
    if (!sent) {
      logger.warn({ seq: b.telemetry.seq }, 'telemetry batch not sent; kept for the next stream');
      return false;
    }
    b.stream = stream;
    b.sentAt = Date.now();
    if (!acking.has(stream)) return true;
    // Nothing more is sent until this batch is stored: a control plane slow to ingest slows
    // this agent to its pace, and ticks meanwhile aggregate into the bounded flow buffer.
    const seq = b.telemetry.seq;
    const stored = await Promise.race([
      new Promise<true>((resolve) => {
        awaitedAck = { seq, stored: () => resolve(true) };
      }),
      closed.get(stream) ?? false,
    ]);
    awaitedAck = undefined;
    if (!stored) {
      logger.warn({ seq }, 'telemetry batch not acked; kept for the next stream');
      return false;
    }
    outbox = outbox.filter((x) => x !== b);
    return true;
  }

  function scheduleTelemetry(): void {
    telemetryTimer = setTimeout(() => {
      telemetryRunning = collectAndSend()
        .catch((err) => logger.warn({ err }, 'telemetry failed'))
        .finally(() => {
          if (state !== 'stopped') scheduleTelemetry();
        });
    }, options.telemetryIntervalMs);
  }

  return {
    async start() {
      if (state !== 'stopped') return;
      const text = await readFileIfExists(seqFile);
      lastSeq = text ? Number(text.toString('utf8').trim()) || 0 : 0;
      state = 'connecting';
      logger.info({ lastSeq }, 'sync starting');
      void connect();
      scheduleTelemetry();
    },
    async stop() {
      if (state === 'stopped') return;
      const wasConnected = state === 'connected';
      state = 'stopped';
      clearTimeout(reconnectTimer);
      clearTimeout(telemetryTimer);
      applyRetry.cancel();
      const stream = call;
      call = undefined;
      stream?.end();
      stream?.cancel();
      await Promise.allSettled([applying, telemetryRunning, sending]);
      client?.close();
      if (wasConnected) options.onConnectedChange?.(false);
      logger.info('sync stopped');
    },
  };
}

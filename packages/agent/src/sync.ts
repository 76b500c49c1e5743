import {
  type AgentEvent,
  AgentServiceClient,
  type FlowRecord,
  type PolicyUpdate,
  type RuleCounter,
  type SyncRequest,
  type SyncResponse,
} from '@bulkhead/proto';
import { type ClientDuplexStream, credentials } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { mergeCounters } from './counters.js';
import type { ApplyResult, Dataplane } from './dataplane.js';
import type { Identity } from './enroll.js';
import { AgentError } from './errors.js';
import { type BackoffOptions, createBackoff, describeError, isPermanent } from './retry.js';
import { readFileIfExists, statePath, writeFileAtomic } from './state.js';
import { mergeChunks } from './update.js';

export interface SyncOptions {
  /** host:port of the control plane. */
  target: string;
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
 * The agent's one Sync stream, reconnected with backoff (full jitter) for as long as it runs.
 * The stream counts as connected only once the control plane answered the Hello (a Welcome
 * or an update); only then is the backoff reset and telemetry sent. Policy arrives as
 * PolicyUpdates (wiring contract): chunks are buffered until the `last` one, the update is
 * applied in one transaction and acked once with its hash; a delta on another base, or one
 * the agent refuses, brings a new Hello with the agent's hash (the control plane answers
 * with a full sync). A stream refused for the agent's identity (UNAUTHENTICATED,
 * PERMISSION_DENIED: revoked or unknown certificate) or its Hello is retried at the backoff
 * cap only: an operator has to act, and until then the kernel keeps the last rule set.
 */
export interface SyncClient {
  start(): Promise<void>;
  stop(): Promise<void>;
}

type State = 'connecting' | 'connected' | 'backoff' | 'stopped';

/** Flows per Telemetry message: keeps a full buffer (50k flows) well under gRPC's 4 MB limit. */
export const MAX_FLOWS_PER_BATCH = 10_000;

export function createSyncClient(options: SyncOptions): SyncClient {
  const { logger, dataplane } = options;
  const backoff = createBackoff(options.backoff);
  const seqFile = statePath(options.stateDir, 'telemetrySeq');

  const client = new AgentServiceClient(
    options.target,
    credentials.createSsl(
      Buffer.from(options.identity.caPem),
      Buffer.from(options.identity.keyPem),
      Buffer.from(options.identity.certPem),
    ),
    { 'grpc.ssl_target_name_override': options.serverName },
  );

  let state: State = 'stopped';
  let call: ClientDuplexStream<SyncRequest, SyncResponse> | undefined;
  let reconnectTimer: NodeJS.Timeout | undefined;
  let telemetryTimer: NodeJS.Timeout | undefined;
  let lastSeq = 0;
  // Deltas read from the kernel but not yet handed to a live stream.
  let unsent: RuleCounter[] = [];
  // Updates are applied and acked one after another, in arrival order.
  let applying: Promise<void> = Promise.resolve();
  let telemetryRunning: Promise<void> = Promise.resolve();

  function setState(
    next: State,
    detail: Record<string, unknown> = {},
    level: 'info' | 'error' = 'info',
  ): void {
    if (state === next) return;
    const was = state;
    state = next;
    logger[level]({ from: was, to: next, target: options.target, ...detail }, 'sync state');
    if (was === 'connected' || next === 'connected') {
      options.onConnectedChange?.(next === 'connected');
    }
  }

  function connect(): void {
    if (state === 'stopped') return;
    setState('connecting');
    const stream = client.sync();
    call = stream;
    let ended = false;
    const onEnd = (reason: string, err?: Error) => {
      if (ended) return;
      ended = true;
      if (call === stream) call = undefined;
      if (state === 'stopped') return;
      const refused = isPermanent(err);
      if (refused) backoff.toCap();
      const retryInMs = backoff.next();
      setState(
        'backoff',
        {
          reason: refused ? 'refused by the control plane; keeping the last rule set' : reason,
          ...(err && describeError(err)),
          retryInMs,
        },
        refused ? 'error' : 'info',
      );
      reconnectTimer = setTimeout(connect, retryInMs);
    };
    const markConnected = (detail: Record<string, unknown>) => {
      if (state === 'connecting' && !ended) {
        backoff.reset();
        setState('connected', detail);
      }
    };
    // Chunks of the update in flight on this stream.
    let chunks: PolicyUpdate[] = [];
    stream.on('data', (msg: SyncResponse) => {
      if (msg.welcome) markConnected({ ...msg.welcome });
      if (msg.update) {
        markConnected({ answer: 'update' });
        chunks.push(msg.update);
        if (!msg.update.last) return;
        const parts = chunks;
        chunks = [];
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
  function hello(stream: ClientDuplexStream<SyncRequest, SyncResponse>): void {
    const applied = dataplane.applied;
    stream.write({
      hello: {
        appliedRevision: applied?.revision ?? 0,
        appliedHash: applied?.hash ?? '',
        hostname: options.hostname,
        addresses: options.addresses,
        agentVersion: options.agentVersion,
      },
    });
  }

  async function applyAndAck(
    stream: ClientDuplexStream<SyncRequest, SyncResponse>,
    chunks: PolicyUpdate[],
  ): Promise<void> {
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
      result = await dataplane.apply(mergeChunks(chunks));
    } catch (err) {
      // mergeChunks: the chunks disagree.
      const error = err instanceof AgentError ? err : new AgentError('UPDATE_REFUSED', String(err));
      logger.error({ err: error }, 'update refused');
      result = { ok: false, micros: 0, error };
    }
    if (!live()) return;
    stream.write({
      ack: {
        revision: first.revision,
        hash: first.hash,
        ok: result.ok,
        error: result.error?.message ?? '',
        applyMicros: result.micros,
      },
    });
    if (result.error?.code === 'UPDATE_REFUSED') hello(stream);
  }

  async function sendTelemetry(): Promise<void> {
    unsent = mergeCounters(unsent, await dataplane.collect());
    const stream = call;
    if (!stream || state !== 'connected') return;
    // Flows stay in the dataplane's bounded buffer until there is a stream to take them.
    const { flows, events } = dataplane.flows.take(Date.now());
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
      if (!(await sendBatch(stream, batch))) {
        // Keep the batch: counters are summed into the next one, flows and events go back
        // into the bounded buffer; all go out again with the next seq.
        unsent = mergeCounters(batch.counters, unsent);
        dataplane.flows.putBack({ flows: [...batch.flows, ...flows], events: batch.events });
        return;
      }
    } while (flows.length > 0);
  }

  async function sendBatch(
    stream: ClientDuplexStream<SyncRequest, SyncResponse>,
    batch: { counters: RuleCounter[]; flows: FlowRecord[]; events: AgentEvent[] },
  ): Promise<boolean> {
    const seq = lastSeq + 1;
    try {
      // Persist first: a restart must never reuse a seq the control plane may have counted.
      await writeFileAtomic(seqFile, `${seq}\n`);
    } catch (err) {
      logger.warn({ err, seq }, 'cannot persist the telemetry seq; batch kept for the next one');
      return false;
    }
    lastSeq = seq;
    const sent = await new Promise<boolean>((resolve) => {
      try {
        stream.write(
          {
            telemetry: {
              seq,
              timeUnixMs: Date.now(),
              appliedHash: dataplane.applied?.hash ?? '',
              ...batch,
            },
          },
          (err: unknown) => resolve(!err),
        );
      } catch {
        resolve(false);
      }
    });
    if (!sent) logger.warn({ seq }, 'telemetry batch not sent; kept for the next one');
    return sent;
  }

  function scheduleTelemetry(): void {
    telemetryTimer = setTimeout(() => {
      telemetryRunning = sendTelemetry()
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
      logger.info({ target: options.target, lastSeq }, 'sync starting');
      connect();
      scheduleTelemetry();
    },
    async stop() {
      if (state === 'stopped') return;
      const wasConnected = state === 'connected';
      state = 'stopped';
      clearTimeout(reconnectTimer);
      clearTimeout(telemetryTimer);
      const stream = call;
      call = undefined;
      stream?.end();
      stream?.cancel();
      await Promise.allSettled([applying, telemetryRunning]);
      client.close();
      if (wasConnected) options.onConnectedChange?.(false);
      logger.info('sync stopped');
    },
  };
}

import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import {
  AgentServiceService,
  EnrollRequest,
  EnrollRequest_LabelsEntry,
  type EnrollResponse,
  type SyncRequest,
  type SyncResponse,
} from '@bulkhead/proto';
import {
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { agentOfCertificate, readPeerOnce } from './client-identity.js';
import { ControlPlaneError, type ControlPlaneErrorCode, invalid } from './errors.js';
import type { FleetService } from './fleet/service.js';
import type { AgentStream, StreamRegistry } from './fleet/streams.js';
import { forbiddenKeyPath } from './forbidden-keys.js';
import {
  type ConnectionLimits,
  DEFAULT_CONNECTION_LIMITS,
  listenTls,
  type TlsListener,
} from './grpc-listener.js';
import type { Metrics } from './metrics.js';
import type { Pki } from './pki.js';
import { serializeSyncResponse, writePreFramed } from './sync-write.js';

const GRPC_STATUS: Record<ControlPlaneErrorCode, status> = {
  VALIDATION_FAILED: status.INVALID_ARGUMENT,
  NOT_FOUND: status.NOT_FOUND,
  CONFLICT: status.ALREADY_EXISTS,
  IMPACT_CONFIRMATION_REQUIRED: status.FAILED_PRECONDITION,
  UNAUTHENTICATED: status.UNAUTHENTICATED,
  FORBIDDEN: status.PERMISSION_DENIED,
  METHOD_NOT_ALLOWED: status.UNIMPLEMENTED,
  PAYLOAD_TOO_LARGE: status.RESOURCE_EXHAUSTED,
  URI_TOO_LONG: status.INVALID_ARGUMENT,
  UNSUPPORTED_MEDIA_TYPE: status.INVALID_ARGUMENT,
  INTERNAL: status.INTERNAL,
};

/** The one place errors become gRPC statuses; unknown errors are logged, not shown. */
function toStatus(err: unknown, log: Logger): { code: status; details: string } {
  if (err instanceof ControlPlaneError && err.code !== 'INTERNAL') {
    const detail = err.details.map((d) => `${d.path}: ${d.message}`).join('; ');
    return {
      code: GRPC_STATUS[err.code],
      details: detail ? `${err.message} (${detail})` : err.message,
    };
  }
  log.error({ err }, 'internal error in gRPC handler');
  return { code: status.INTERNAL, details: 'internal error' };
}

/** Field 4 of EnrollRequest, length-delimited: one entry of the `labels` map. */
const ENROLL_LABELS_TAG = (4 << 3) | WireType.LengthDelimited;

/**
 * EnrollRequest with `labels` rebuilt from the wire entries into a null-prototype object:
 * ts-proto's decode assigns map keys onto a plain object, where `__proto__` vanishes silently
 * instead of being refused, as REST refuses it.
 */
export function decodeEnrollRequest(buf: Uint8Array): EnrollRequest {
  const req = EnrollRequest.decode(buf);
  const labels: Record<string, string> = Object.create(null);
  const reader = new BinaryReader(buf);
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag === ENROLL_LABELS_TAG) {
      const e = EnrollRequest_LabelsEntry.decode(reader, reader.uint32());
      labels[e.key] = e.value;
    } else {
      reader.skip(tag & 7, tag >>> 3);
    }
  }
  return { ...req, labels };
}

/**
 * The agent service with Enroll's request decoded by decodeEnrollRequest, and Sync responses
 * that may come pre-encoded: the publisher encodes a group update once for every agent that
 * gets it, so those bytes go out as they are.
 */
const AgentService = {
  ...AgentServiceService,
  enroll: { ...AgentServiceService.enroll, requestDeserialize: decodeEnrollRequest },
  sync: { ...AgentServiceService.sync, responseSerialize: serializeSyncResponse },
};

/**
 * A paused grpc-js stream still decodes messages up to its readable high-water mark: 16 per
 * stream, 160k flows of a real agent. At 0 a stream paused by the telemetry ingest holds only
 * the message it is paused for; the rest waits in the agent behind HTTP/2 flow control. Node has
 * no public setter for an existing stream's mark: this is Node 20's Readable state.
 */
function noReadAhead(call: ServerDuplexStream<SyncRequest, SyncResponse>): void {
  const state = (call as unknown as { _readableState?: { highWaterMark: number } })._readableState;
  if (state) state.highWaterMark = 0;
}

export interface GrpcServerOptions {
  fleet: FleetService;
  streams: StreamRegistry;
  log: Logger;
  /** Where refused enrolments and failed streams are counted. */
  metrics: Pick<Metrics, 'enrolmentErrors' | 'syncErrors' | 'grpcHandshakes'>;
  limits?: Partial<GrpcLimits>;
  /** The agents' port (bindAgentPort), served from now on; closed by close(). */
  listener: TlsListener;
}

const errorCode = (err: unknown): string =>
  err instanceof ControlPlaneError ? err.code : 'INTERNAL';

/** What one connection may hold; see docs/SECURITY.md "Network exposure (gRPC limits)". */
export interface GrpcLimits extends ConnectionLimits {
  /** A connection with no open stream for this long is closed (GOAWAY). */
  idleTimeoutMs: number;
  /** The server pings a connection this often... */
  keepaliveTimeMs: number;
  /** ...and closes it when the ping is not answered within this. */
  keepaliveTimeoutMs: number;
  /**
   * A connection this old (+-10%, grpc-js's jitter) gets GOAWAY, and its streams end after
   * `maxConnectionAgeGraceMs`; the agent reconnects at once (resuming its TLS session). An
   * agent's session ticket expires a week after its last full handshake, and a connection that
   * lived longer would keep the expired one until the next restart: renewed daily, a ticket is
   * out of date for a day of every ~8 (grpc-listener.ts). Spreads agents over control-plane
   * addresses again, too.
   */
  maxConnectionAgeMs: number;
  maxConnectionAgeGraceMs: number;
}

export const DEFAULT_GRPC_LIMITS: GrpcLimits = {
  ...DEFAULT_CONNECTION_LIMITS,
  idleTimeoutMs: 5 * 60_000,
  keepaliveTimeMs: 60_000,
  keepaliveTimeoutMs: 20_000,
  maxConnectionAgeMs: 24 * 3600_000,
  maxConnectionAgeGraceMs: 60_000,
};

/**
 * Opens the agents' port (port 0: any free one) with the control plane's TLS identity. Its
 * connections wait, accepted and unread, until a gRPC server serves it (createGrpcServer).
 */
export function bindAgentPort(options: {
  host: string;
  port: number;
  pki: Pki;
  limits?: Partial<GrpcLimits>;
  /** Where connections closed before they were served are counted. */
  metrics?: Pick<Metrics, 'grpcConnectionsShed'>;
  log: Logger;
}): Promise<TlsListener> {
  const { pki, metrics } = options;
  return listenTls({
    host: options.host,
    port: options.port,
    identity: {
      caPem: pki.caPem,
      certPem: pki.serverCertPem,
      keyPem: pki.serverKeyPem,
      sessionTicketKey: pki.sessionTicketKey,
    },
    limits: { ...DEFAULT_GRPC_LIMITS, ...options.limits },
    onShed: (reason) => metrics?.grpcConnectionsShed.inc({ reason }),
    log: options.log,
  });
}

export interface AgentGrpcServer {
  /**
   * Ends every stream and closes every connection. `leaveConnections` (the process exits next):
   * stops accepting and stops serving, but leaves the open connections for the kernel to close
   * at exit; nothing an agent sends after this reaches the fleet or the store.
   */
  close(options?: { leaveConnections?: boolean }): Promise<void>;
}

const SHUTTING_DOWN = 'control plane shutting down';

export function createGrpcServer(options: GrpcServerOptions): AgentGrpcServer {
  const { fleet, streams, log, metrics } = options;
  const limits = { ...DEFAULT_GRPC_LIMITS, ...options.limits };
  const server = new Server({
    // channelz (grpc-js's introspection, unused here) books every connection and call: a
    // share of each reconnect's CPU in a storm.
    'grpc.enable_channelz': 0,
    'grpc.max_connection_idle_ms': limits.idleTimeoutMs,
    'grpc.keepalive_time_ms': limits.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': limits.keepaliveTimeoutMs,
    'grpc.max_connection_age_ms': limits.maxConnectionAgeMs,
    'grpc.max_connection_age_grace_ms': limits.maxConnectionAgeGraceMs,
  });
  /** Set by close(): no call is served any more, on a connection left open or a new one. */
  let closing = false;

  server.addService(AgentService, {
    enroll(
      call: ServerUnaryCall<EnrollRequest, EnrollResponse>,
      done: sendUnaryData<EnrollResponse>,
    ) {
      if (closing) {
        done({ code: status.UNAVAILABLE, details: SHUTTING_DOWN });
        return;
      }
      const path = forbiddenKeyPath({ labels: call.request.labels });
      if (path !== undefined) {
        metrics.enrolmentErrors.inc({ code: 'VALIDATION_FAILED' });
        done(
          toStatus(
            invalid('invalid enrollment request', [{ path, message: 'is not allowed as a key' }]),
            log,
          ),
        );
        return;
      }
      fleet.enroll(call.request).then(
        (res) => done(null, res),
        (err: unknown) => {
          metrics.enrolmentErrors.inc({ code: errorCode(err) });
          done(toStatus(err, log));
        },
      );
    },

    sync(call: ServerDuplexStream<SyncRequest, SyncResponse | Buffer>) {
      let ended = false;
      const fail = (err: unknown) => {
        if (ended) return;
        ended = true;
        metrics.syncErrors.inc({ code: errorCode(err) });
        call.emit('error', toStatus(err, log));
      };
      const unavailable = (details: string) => {
        if (ended) return;
        ended = true;
        call.emit('error', { code: status.UNAVAILABLE, details });
      };

      writePreFramed(call);
      if (closing) {
        unavailable(SHUTTING_DOWN);
        return;
      }
      let agentId: string;
      let workload: string;
      try {
        // Identity comes from the TLS handshake only, never from message contents: grpc-js
        // shows a certificate only when the handshake verified it against our CA.
        const cert = call.getAuthContext()?.sslPeerCertificate;
        if (!cert?.raw)
          throw new ControlPlaneError('UNAUTHENTICATED', 'client certificate required');
        agentId = agentOfCertificate(cert);
        workload = fleet.agentForSync(agentId).workload;
      } catch (err) {
        fail(err);
        return;
      }

      const stream: AgentStream = {
        agentId,
        workload,
        send: (message) => {
          if (!ended) call.write(message);
        },
        close: (reason, kind) =>
          kind === 'denied'
            ? fail(new ControlPlaneError('UNAUTHENTICATED', reason))
            : unavailable(reason),
      };
      const remove = streams.add(stream);
      const log1 = log.child({ agentId, workload });
      log1.info('agent connected');

      // The agent asked (Hello) to hear when each telemetry batch is stored.
      let telemetryAcks = false;
      call.on('data', (msg: SyncRequest) => {
        if (ended || closing) return;
        try {
          if (msg.hello) {
            const sync = fleet.hello(agentId, msg.hello, stream);
            telemetryAcks = msg.hello.telemetryAcks;
            // Always answer: the agent counts the stream as up only once it hears back.
            call.write({ welcome: { agentId, workloadId: workload, telemetryAcks } });
            for (const m of sync) call.write(m);
          } else if (msg.ack) {
            fleet.ack(agentId, msg.ack);
          } else if (msg.telemetry) {
            // Queued for the bounded ingest, which pauses this stream until it is written.
            noReadAhead(call);
            const { seq } = msg.telemetry;
            fleet.telemetry(agentId, msg.telemetry, call).then((added) => {
              if (!added) log1.debug({ seq }, 'dropped telemetry already counted');
              if (telemetryAcks && !ended) call.write({ telemetryAck: { seq } });
            }, fail);
          }
        } catch (err) {
          fail(err);
        }
      });
      const finish = () => {
        remove();
        if (!ended) {
          ended = true;
          call.end();
        }
        log1.info('agent disconnected');
      };
      call.on('end', finish);
      call.on('cancelled', finish);
      call.on('error', () => remove());
    },
  });

  // TLS is done by our listener (handshake timeout, per-source cap); grpc-js gets the decrypted
  // connection, and still sees the TLS socket for the peer certificate.
  const injector = server.createConnectionInjector(ServerCredentials.createInsecure());
  const { listener } = options;
  listener.serve({
    onSecure: (socket) => {
      readPeerOnce(socket);
      injector.injectConnection(socket);
    },
    onHandshake: (resumed) => metrics.grpcHandshakes.inc({ session: resumed ? 'resumed' : 'full' }),
  });

  return {
    async close({ leaveConnections = false } = {}) {
      closing = true;
      if (leaveConnections) {
        await listener.close({ leaveConnections });
        return;
      }
      streams.closeAll(SHUTTING_DOWN);
      await listener.close();
      await new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        // Open streams would hold tryShutdown forever.
        setTimeout(() => server.forceShutdown(), 2000).unref();
      });
    },
  };
}

import {
  AgentServiceService,
  type EnrollRequest,
  type EnrollResponse,
  type SyncRequest,
  SyncResponse,
} from '@bulkhead/proto';
import {
  experimental,
  Server,
  type ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { ControlPlaneError, type ControlPlaneErrorCode } from './errors.js';
import type { FleetService } from './fleet/service.js';
import type { AgentStream, StreamRegistry } from './fleet/streams.js';
import type { Pki } from './pki.js';

const GRPC_STATUS: Record<ControlPlaneErrorCode, status> = {
  VALIDATION_FAILED: status.INVALID_ARGUMENT,
  NOT_FOUND: status.NOT_FOUND,
  CONFLICT: status.ALREADY_EXISTS,
  IMPACT_CONFIRMATION_REQUIRED: status.FAILED_PRECONDITION,
  UNAUTHENTICATED: status.UNAUTHENTICATED,
  FORBIDDEN: status.PERMISSION_DENIED,
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

/**
 * The service with Sync responses that may come pre-encoded: the publisher encodes a group
 * update once for every agent that gets it, so those bytes go out as they are.
 */
const SERVICE = {
  ...AgentServiceService,
  sync: {
    ...AgentServiceService.sync,
    responseSerialize: (value: SyncResponse | Buffer): Buffer =>
      Buffer.isBuffer(value) ? value : Buffer.from(SyncResponse.encode(value).finish()),
  },
};

export interface GrpcServerOptions {
  fleet: FleetService;
  pki: Pki;
  streams: StreamRegistry;
  log: Logger;
}

export interface AgentGrpcServer {
  /** Binds `host:port` (port 0 = any free port); returns the bound port. */
  listen(address: string): Promise<number>;
  close(): Promise<void>;
}

export function createGrpcServer(options: GrpcServerOptions): AgentGrpcServer {
  const { fleet, pki, streams, log } = options;
  const server = new Server();

  server.addService(SERVICE, {
    enroll(
      call: ServerUnaryCall<EnrollRequest, EnrollResponse>,
      done: sendUnaryData<EnrollResponse>,
    ) {
      fleet.enroll(call.request).then(
        (res) => done(null, res),
        (err: unknown) => done(toStatus(err, log)),
      );
    },

    sync(call: ServerDuplexStream<SyncRequest, SyncResponse | Buffer>) {
      let ended = false;
      const fail = (err: unknown) => {
        if (ended) return;
        ended = true;
        call.emit('error', toStatus(err, log));
      };
      const unavailable = (details: string) => {
        if (ended) return;
        ended = true;
        call.emit('error', { code: status.UNAVAILABLE, details });
      };

      let agentId: string;
      let workload: string;
      try {
        // Identity comes from the TLS handshake only, never from message contents.
        const cert = call.getAuthContext()?.sslPeerCertificate;
        if (!cert?.raw)
          throw new ControlPlaneError('UNAUTHENTICATED', 'client certificate required');
        agentId = pki.verifyClientCert(cert.raw);
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

      call.on('data', (msg: SyncRequest) => {
        if (ended) return;
        try {
          if (msg.hello) {
            const sync = fleet.hello(agentId, msg.hello, stream);
            // Always answer: the agent counts the stream as up only once it hears back.
            call.write({ welcome: { agentId, workloadId: workload } });
            for (const m of sync) call.write(m);
          } else if (msg.ack) {
            fleet.ack(agentId, msg.ack);
          } else if (msg.telemetry) {
            if (!fleet.telemetry(agentId, msg.telemetry)) {
              log1.debug({ seq: msg.telemetry.seq }, 'dropped telemetry already counted');
            }
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

  return {
    listen(address) {
      const creds = serverCredentials(pki);
      return new Promise((resolve, reject) => {
        server.bindAsync(address, creds, (err, port) => (err ? reject(err) : resolve(port)));
      });
    },
    close() {
      streams.closeAll('control plane shutting down');
      return new Promise((resolve) => {
        server.tryShutdown(() => resolve());
        // Open streams would hold tryShutdown forever.
        setTimeout(() => server.forceShutdown(), 2000).unref();
      });
    },
  };
}

/**
 * TLS that requests a client certificate but does not require one: Enroll comes without one,
 * Sync checks it itself (pki.verifyClientCert). `ServerCredentials.createSsl(ca, keys, false)`
 * does not even ask for the certificate in grpc-js 1.14 (requestCert = false), so the
 * certificate-provider credentials (requestCert on, rejectUnauthorized off) are used instead.
 */
function serverCredentials(pki: Pki): ServerCredentials {
  // One static provider serves both roles, which also sidesteps grpc-js 1.14 passing the two
  // providers to the constructor in the opposite order of its declaration. Updates are
  // delivered on the next tick: grpc-js registers its own watcher only after our listeners, and
  // an update delivered before that is never applied to the listening socket.
  const provider: experimental.CertificateProvider = {
    addCaCertificateListener: (l) =>
      setImmediate(() => l({ caCertificate: Buffer.from(pki.caPem) })),
    removeCaCertificateListener: () => {},
    addIdentityCertificateListener: (l) =>
      setImmediate(() =>
        l({
          certificate: Buffer.from(pki.serverCertPem),
          privateKey: Buffer.from(pki.serverKeyPem),
        }),
      ),
    removeIdentityCertificateListener: () => {},
  };
  return experimental.createCertificateProviderServerCredentials(provider, provider, false);
}

// The TCP/TLS listener in front of the agent gRPC server: it owns the socket, the TLS handshake
// (our CA, a client certificate requested but not required), the handshake timeout and the
// connection cap per source address, and hands each finished TLS connection to grpc-js through
// its connection injector. Must not know gRPC services or identities: grpc.ts does.
//
// Why not grpc-js's own listener: in grpc-js 1.14 its TLS server takes neither a handshake
// timeout (Node's default is 120 s, counted from the TCP accept) nor a hook on accepted sockets
// without reaching into its private fields; `Server.createConnectionInjector` is its public way
// to serve connections accepted elsewhere.
import { constants } from 'node:crypto';
import type { Socket } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';

export interface ConnectionLimits {
  /** A connection that has not finished TLS by then is closed (also one that never starts it). */
  handshakeTimeoutMs: number;
  /** Open connections per source address; more are closed at once, before any TLS work. */
  maxConnectionsPerSource: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  handshakeTimeoutMs: 10_000,
  // Agents keep one connection each; a site behind one NAT address shares this.
  maxConnectionsPerSource: 256,
};

/**
 * Connections the kernel queues before they are accepted. After a restart the fleet arrives at
 * once, while the event loop is busy with handshakes; past Node's default (511) the kernel drops
 * SYNs and each such agent waits out a SYN retransmit (1 s, 3 s, 7 s). Linux caps it at
 * net.core.somaxconn (4096 by default).
 */
const LISTEN_BACKLOG = 4096;

export interface TlsIdentity {
  caPem: string;
  certPem: string;
  keyPem: string;
}

export interface TlsListener {
  readonly port: number;
  /**
   * Stops accepting and closes every open connection. `leaveConnections`: only stops accepting;
   * the open connections stay for the kernel to close at the process's exit (tearing each down
   * in JavaScript is ~0.3-0.6 ms of CPU: seconds with a fleet connected).
   */
  close(options?: { leaveConnections?: boolean }): Promise<void>;
}

export function listenTls(options: {
  host: string;
  port: number;
  identity: TlsIdentity;
  limits: ConnectionLimits;
  /** Each connection whose TLS handshake finished. */
  onSecure(socket: TLSSocket): void;
  log: Logger;
}): Promise<TlsListener> {
  const { identity, limits, log } = options;
  const perSource = new Map<string, number>();
  const open = new Set<Socket>();
  const server: Server = createServer({
    ca: identity.caPem,
    cert: identity.certPem,
    key: identity.keyPem,
    // Enroll comes without a client certificate. One that is sent is verified here, against this
    // CA alone; grpc-js shows Sync only a certificate this verification accepted
    // (client-identity.ts).
    requestCert: true,
    rejectUnauthorized: false,
    ALPNProtocols: ['h2'],
    minVersion: 'TLSv1.2',
    // No stateless session tickets: agents never resume (a fresh channel per attempt), so a
    // ticket encrypted for every connection was CPU for nothing: 0.5 ms of the control plane's
    // ~3.4 ms per reconnect (fleet bench, 2 pairs). Without a session cache nothing resumes.
    secureOptions: constants.SSL_OP_NO_TICKET,
    handshakeTimeout: limits.handshakeTimeoutMs,
  });
  // Before tls's own listener, so a connection over the cap costs no TLS state.
  server.prependListener('connection', (socket: Socket) => {
    const source = socket.remoteAddress ?? '';
    const n = perSource.get(source) ?? 0;
    if (n >= limits.maxConnectionsPerSource) {
      log.debug({ source }, 'gRPC connection over the per-source cap closed');
      socket.destroy();
      return;
    }
    perSource.set(source, n + 1);
    open.add(socket);
    socket.once('close', () => {
      open.delete(socket);
      const left = (perSource.get(source) ?? 1) - 1;
      if (left === 0) perSource.delete(source);
      else perSource.set(source, left);
    });
  });
  // Handshake timeouts and garbage end here. With a listener, closing the socket is ours to do
  // (Node destroys it itself only when nobody listens).
  server.on('tlsClientError', (err, socket) => {
    log.debug({ err: err.message, source: socket.remoteAddress }, 'gRPC TLS handshake failed');
    socket.destroy();
  });
  server.on('secureConnection', (socket) => {
    // The certificate verified in this handshake stays the connection's: a renegotiation could
    // present another one that nothing verifies (the socket stays "authorized"). OpenSSL 3
    // refuses a client's renegotiation by default; this holds whatever the build.
    socket.disableRenegotiation();
    socket.on('error', (err) => log.debug({ err: err.message }, 'gRPC connection error'));
    options.onSecure(socket);
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: options.port, host: options.host, backlog: LISTEN_BACKLOG }, () => {
      server.off('error', reject);
      const address = server.address();
      resolve({
        port: typeof address === 'object' && address ? address.port : options.port,
        close: ({ leaveConnections = false } = {}) =>
          new Promise<void>((done) => {
            if (leaveConnections) {
              server.close();
              done();
              return;
            }
            server.close(() => done());
            for (const s of open) s.destroy();
          }),
      });
    });
  });
}

// The TCP/TLS listener in front of the agent gRPC server: it owns the socket, the TLS handshake
// (our CA, a client certificate requested but not required), the handshake timeout, the
// connection cap per source address and the handshake queue, and hands each finished TLS
// connection to grpc-js through its connection injector. Must not know gRPC services or
// identities: grpc.ts does.
//
// Why not grpc-js's own listener: in grpc-js 1.14 its TLS server takes neither a handshake
// timeout (Node's default is 120 s, counted from the TCP accept) nor a hook on accepted sockets
// without reaching into its private fields; `Server.createConnectionInjector` is its public way
// to serve connections accepted elsewhere.
import { createServer as createTcpServer, type Socket } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';

export interface ConnectionLimits {
  /**
   * A connection that has not finished TLS this long after its handshake began (its turn in
   * the queue) is closed, also one that never starts it.
   */
  handshakeTimeoutMs: number;
  /** Open connections per source address; more are closed at once, before any TLS work. */
  maxConnectionsPerSource: number;
  /**
   * TLS handshakes under way at once; later connections wait, accepted and untouched, in
   * arrival order. Without a queue a fleet reconnecting at once shares the CPU
   * among all its handshakes: none finishes until nearly all do, and past the handshake timeout
   * the work is thrown away and done again (a 10,000-agent restart: nobody back for 20 s, 2.5
   * attempts an agent). A handshake holds its place for at most `handshakeLeaseMs`, so
   * connections that stall (a slow link, a client that sends nothing or stops mid-handshake)
   * cannot keep the queue from moving.
   */
  maxHandshakes: number;
  /** How long a handshake holds its place in maxHandshakes; past it, it goes on unqueued. */
  handshakeLeaseMs: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  handshakeTimeoutMs: 10_000,
  // Agents keep one connection each; a site behind one NAT address shares this.
  maxConnectionsPerSource: 256,
  // ~1.5 s of handshake CPU (~3 ms each), far below the timeout. Fewer cost batching: at 64 a
  // 2,000-agent restart on loopback took ~20% more CPU per reconnect (fleet bench, 2 pairs);
  // 512 measured alike to no queue there.
  maxHandshakes: 256,
  handshakeLeaseMs: 1000,
};

/** Why a connection was closed before it was served. */
export const SHED_REASONS = ['per_source_cap', 'tls_failed'] as const;
export type ShedReason = (typeof SHED_REASONS)[number];

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
  /** 48 bytes that encrypt session tickets; the same after a restart (pki.ts). */
  sessionTicketKey: Buffer;
}

/**
 * How long a session ticket can be resumed: TLS 1.3's longest (RFC 8446 4.6.1). Tickets come with
 * full handshakes only (Node's server sends none after a resumed one), so an agent's ticket ages
 * from its last full handshake: once it has expired, the agent's next connection is a full
 * handshake and brings a new one. Connections are renewed daily (grpc.ts, maxConnectionAgeMs),
 * so a ticket is out of date for about a day of every ~8: at a restart, ~7 in 8 agents resume.
 */
const SESSION_LIFETIME_S = 7 * 24 * 3600;

export interface TlsHandlers {
  /** Each connection whose TLS handshake finished. */
  onSecure(socket: TLSSocket): void;
  /** Each TLS handshake that finished: whether it resumed a session. */
  onHandshake?(resumed: boolean): void;
}

export interface TlsListener {
  readonly port: number;
  /**
   * Starts the handshakes. Until then connections are accepted and wait in the queue, unread:
   * the port can open before the server behind it is built (control-plane.ts).
   */
  serve(handlers: TlsHandlers): void;
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
  /** Each connection closed before it was served. */
  onShed?(reason: ShedReason): void;
  log: Logger;
}): Promise<TlsListener> {
  const { identity, limits, log } = options;
  const shed = (socket: Socket, reason: ShedReason) => {
    socket.destroy();
    options.onShed?.(reason);
  };
  const perSource = new Map<string, number>();
  const open = new Set<Socket>();
  // The TLS side listens on nothing: the TCP server below hands it each connection whose turn
  // came (`emit('connection')`, how a Node server is given a socket accepted elsewhere).
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
    // Agents (Node) speak TLS 1.3; its resumption still does a fresh ECDHE (psk_dhe_ke), while a
    // TLS 1.2 resumption's traffic would be readable to anyone holding the ticket key.
    minVersion: 'TLSv1.3',
    // Session tickets under a key that survives restarts: an agent coming back resumes (no
    // certificates sent, parsed or verified on either side; ~0.5 ms less control-plane CPU per
    // reconnect in a storm, fleet bench). A resumed session keeps the client certificate and the
    // verification result of its full handshake (an unverified certificate stays unverified);
    // whether that agent may sync is asked on every stream, as always.
    ticketKeys: identity.sessionTicketKey,
    sessionTimeout: SESSION_LIFETIME_S,
    // Fixed: Node's default is a hash of the command line, so a restart with other flags would
    // refuse every session.
    sessionIdContext: 'bulkhead-agent-grpc',
    handshakeTimeout: limits.handshakeTimeoutMs,
  });

  // The handshake queue: connections in arrival order, and the places of the handshakes under
  // way, by TCP peer (a TLS socket reports the address and port of the socket it wraps).
  let waiting: Socket[] = [];
  let head = 0;
  const underway = new Map<string, () => void>();
  const peer = (s: Socket) => `${s.remoteAddress}:${s.remotePort}`;
  let handlers: TlsHandlers | undefined;
  const admit = () => {
    while (handlers && underway.size < limits.maxHandshakes && head < waiting.length) {
      const socket = waiting[head++]!;
      // Drop what was taken once it is most of the array (a shift each is O(n) past ~16k).
      if (head * 2 >= waiting.length) {
        waiting = waiting.slice(head);
        head = 0;
      }
      if (socket.destroyed) continue;
      const key = peer(socket);
      const release = () => {
        if (underway.get(key) !== release) return;
        underway.delete(key);
        clearTimeout(lease);
        admit();
      };
      const lease = setTimeout(release, limits.handshakeLeaseMs);
      underway.set(key, release);
      socket.once('close', release);
      server.emit('connection', socket);
    }
  };
  const finished = (socket: Socket) => underway.get(peer(socket))?.();

  // Paused: a queued connection is not read at all, so its ClientHello waits in the kernel and
  // tls reads it from the socket as if it had accepted it itself.
  const tcp = createTcpServer({ pauseOnConnect: true }, (socket) => {
    // A reset while queued must not throw (nothing else listens yet).
    socket.on('error', () => socket.destroy());
    const source = socket.remoteAddress ?? '';
    const n = perSource.get(source) ?? 0;
    if (n >= limits.maxConnectionsPerSource) {
      log.debug({ source }, 'gRPC connection over the per-source cap closed');
      shed(socket, 'per_source_cap');
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
    waiting.push(socket);
    admit();
  });
  // Handshake timeouts and garbage end here. With a listener, closing the socket is ours to do
  // (Node destroys it itself only when nobody listens).
  server.on('tlsClientError', (err, socket) => {
    log.debug({ err: err.message, source: socket.remoteAddress }, 'gRPC TLS handshake failed');
    finished(socket);
    shed(socket, 'tls_failed');
  });
  server.on('secureConnection', (socket) => {
    finished(socket);
    handlers?.onHandshake?.(socket.isSessionReused());
    // The certificate verified in this handshake stays the connection's: a renegotiation could
    // present another one that nothing verifies (the socket stays "authorized"). OpenSSL 3
    // refuses a client's renegotiation by default; this holds whatever the build.
    socket.disableRenegotiation();
    socket.on('error', (err) => log.debug({ err: err.message }, 'gRPC connection error'));
    handlers?.onSecure(socket);
  });

  return new Promise((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen({ port: options.port, host: options.host, backlog: LISTEN_BACKLOG }, () => {
      tcp.off('error', reject);
      const address = tcp.address();
      resolve({
        port: typeof address === 'object' && address ? address.port : options.port,
        serve(h) {
          handlers = h;
          admit();
        },
        close: ({ leaveConnections = false } = {}) =>
          new Promise<void>((done) => {
            waiting = [];
            head = 0;
            if (leaveConnections) {
              tcp.close();
              done();
              return;
            }
            tcp.close(() => done());
            for (const s of open) s.destroy();
          }),
      });
    });
  });
}

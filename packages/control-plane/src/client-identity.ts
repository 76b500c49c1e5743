// Which agent a Sync stream's client certificate names. The certificate was verified in the TLS
// handshake, by OpenSSL, against our CA alone (the listener's `ca`; chain, signature, validity,
// client-auth purpose): only a socket that handshake authorized gets an entry here (grpc.test.ts
// fails otherwise: a self-signed certificate naming a real agent), and the listener forbids
// renegotiation, so it cannot change later. It is read once per connection, when its handshake
// finished, from node's X509Certificate (its subject and notAfter only: getPeerCertificate()
// builds a whole object with fingerprints, ~0.1-0.2 ms, per call through grpc-js's
// getAuthContext). Checking it again in JavaScript (X.509 parse and CA signature, ~0.4 ms) was
// the largest JavaScript item of a reconnect in a storm's profile. Left here: its end of validity
// (a connection may outlive it) and its CN. Must not decide whether the agent may sync (revoked,
// unknown): the caller asks the fleet on every stream.
import type { TLSSocket } from 'node:tls';
import { ControlPlaneError } from './errors.js';

/** What the checks below read of a verified certificate (`getPeerCertificate()`'s shape). */
export interface PeerCertificate {
  subject?: { CN?: string | string[] };
  /** notAfter, e.g. `Nov 30 07:00:00 2027 GMT`. */
  valid_to: string;
}

/** The agent id (CN) of a certificate the handshake verified; UNAUTHENTICATED once it expired. */
export function agentOfCertificate(cert: PeerCertificate, nowMs = Date.now()): string {
  // NaN (an unreadable date) fails this too.
  if (!(nowMs <= Date.parse(cert.valid_to))) {
    throw new ControlPlaneError('UNAUTHENTICATED', 'client certificate is not valid now');
  }
  const cn = cert.subject?.CN;
  if (typeof cn !== 'string' || cn === '') {
    throw new ControlPlaneError('UNAUTHENTICATED', 'client certificate has no CN');
  }
  return cn;
}

/**
 * The one CN of a subject as node:crypto's X509Certificate prints it (`CN=<id>`). Our CA issues
 * exactly that name, with a UUID; anything else (more names, escaped or quoted values) is not
 * read as an agent id.
 */
export function commonNameOf(subject: string): string | undefined {
  return /^CN=([0-9A-Za-z._-]+)$/.exec(subject)?.[1];
}

/** The verified certificate of each open connection, by its peer (`ip:port`, as `getPeer()`). */
export interface ConnectionIdentities {
  /** Reads a connection's certificate when its handshake finished; none if it was not verified. */
  add(socket: TLSSocket): void;
  /** The verified certificate of the open connection `peer`, if it has one. */
  certificateOf(peer: string): PeerCertificate | undefined;
}

export function createConnectionIdentities(): ConnectionIdentities {
  // A peer address and port name one open connection of the listener at a time; an entry goes
  // with its connection's close, and a new connection under the same name replaces it.
  const byPeer = new Map<string, { socket: TLSSocket; cert: PeerCertificate }>();
  return {
    add(socket) {
      const peer = `${socket.remoteAddress}:${socket.remotePort}`;
      const x509 = socket.authorized ? socket.getPeerX509Certificate() : undefined;
      if (!x509) {
        byPeer.delete(peer);
        return;
      }
      const cn = commonNameOf(x509.subject);
      byPeer.set(peer, { socket, cert: { subject: cn ? { CN: cn } : {}, valid_to: x509.validTo } });
      socket.once('close', () => {
        if (byPeer.get(peer)?.socket === socket) byPeer.delete(peer);
      });
    },
    certificateOf: (peer) => byPeer.get(peer)?.cert,
  };
}

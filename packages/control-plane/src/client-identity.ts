// Which agent a Sync stream's client certificate names. The certificate was verified in the TLS
// handshake, by OpenSSL, against our CA alone (the listener's `ca`; chain, signature, validity,
// client-auth purpose): grpc-js's getAuthContext() shows a peer certificate only on a socket
// that handshake authorized (1.14; grpc.test.ts fails if that changes: a self-signed certificate
// naming a real agent), and the listener forbids renegotiation, so it cannot change later.
// Checking it again in JavaScript (X.509 parse and CA signature, ~0.4 ms per certificate and
// process) was the largest JavaScript item of a reconnect in a storm's profile. Left here: its
// end of validity (a connection may outlive it) and its CN. Must not decide whether the agent
// may sync (revoked, unknown): the caller asks the fleet on every stream.
import { ControlPlaneError } from './errors.js';

/** The peer certificate as grpc-js gives it (`getPeerCertificate()` of the TLS socket). */
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

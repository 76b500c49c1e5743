// Which agent a Sync stream's client certificate names. The certificate was verified in the TLS
// handshake, by OpenSSL, against our CA alone (the listener's `ca`; chain, signature, validity,
// client-auth purpose): grpc-js's getAuthContext() shows a peer certificate only on a socket
// that handshake authorized (1.14; grpc.test.ts fails if that changes: a self-signed certificate
// naming a real agent), and the listener forbids renegotiation, so it cannot change later.
// Checking it again in JavaScript (X.509 parse and CA signature, ~0.4 ms per certificate and
// process) was the largest JavaScript item of a reconnect in a storm's profile. Left here: its
// end of validity (a connection may outlive it) and its CN. Must not decide whether the agent
// may sync (revoked, unknown): the caller asks the fleet on every stream.
import type { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { ControlPlaneError } from './errors.js';

/**
 * The peer certificate as grpc-js gives it: what the socket's `getPeerCertificate()` returns
 * (`readPeerOnce`).
 */
export interface PeerCertificate {
  /** Each attribute of the subject, by its short name (`CN`, `O`, ...). */
  subject?: { CN?: string | string[]; [name: string]: unknown };
  /** notAfter, e.g. `Nov 30 07:00:00 2027 GMT`. */
  valid_to: string;
}

/**
 * The fields of Node's `getPeerCertificate()` that Sync reads, from the X509Certificate of a
 * resumed session: the CN, its end of validity (the same text), its DER (grpc-js shows none
 * without). There `getPeerCertificate()` costs ~0.1 ms (it decodes all of the certificate, the
 * public key and three fingerprints included) and this ~0.02 ms, for each agent of a reconnect
 * storm; after a full handshake it is the other way round (readPeerOnce). Our CA names an
 * agent by one CN and nothing else (pki.ts): a subject of any other form (more names, a
 * multi-valued name, a value Node's text escapes) names no agent.
 */
export function peerCertificateOf(
  x509: X509Certificate,
): Required<PeerCertificate> & { raw: Buffer } {
  // Node's text of the name: one line per name, `+` between the values of one, `\` escapes.
  const cn = /^CN=([^\\+\n]+)$/.exec(x509.subject)?.[1];
  return { subject: cn === undefined ? {} : { CN: cn }, valid_to: x509.validTo, raw: x509.raw };
}

/**
 * grpc-js reads a verified peer's certificate for each call (getAuthContext, Sync) with the
 * socket's getPeerCertificate(). For a resumed session this serves Sync's fields of it
 * (peerCertificateOf), read once; after a full handshake node's X509Certificate is the dearer
 * reader (~0.25 ms against ~0.1 ms: it copies the certificate, which OpenSSL 3 decodes again), so
 * there node's own stays.
 */
export function readPeerOnce(socket: TLSSocket): void {
  const peer =
    socket.authorized && socket.isSessionReused() ? socket.getPeerX509Certificate() : undefined;
  if (!peer) return;
  let cert: PeerCertificate | undefined;
  (socket as { getPeerCertificate(): PeerCertificate }).getPeerCertificate = () =>
    (cert ??= peerCertificateOf(peer));
}

/** The agent id (CN) of a certificate the handshake verified; UNAUTHENTICATED once it expired. */
export function agentOfCertificate(cert: PeerCertificate, nowMs = Date.now()): string {
  // NaN (an unreadable date) fails this too.
  if (!(nowMs <= Date.parse(cert.valid_to))) {
    throw new ControlPlaneError('UNAUTHENTICATED', 'client certificate is not valid now');
  }
  // Our CA names an agent by one CN and nothing else (pki.ts).
  const subject = cert.subject ?? {};
  const cn = subject.CN;
  if (Object.keys(subject).length !== 1 || typeof cn !== 'string' || cn === '') {
    throw new ControlPlaneError(
      'UNAUTHENTICATED',
      'client certificate names no agent (one CN, nothing else)',
    );
  }
  return cn;
}

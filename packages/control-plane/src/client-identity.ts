// Which agent a Sync stream's client certificate names. The full check (pki.verifyClientCert:
// parse, CA signature, validity, CN) runs once per certificate and process; a reconnect with a
// certificate already verified costs a map lookup by its SHA-256 fingerprint (an X.509 parse
// was the largest share of a reconnect's JavaScript CPU). Must not decide whether the agent may
// sync (revoked, unknown): the caller asks the fleet on every stream.

/** The peer certificate as grpc-js gives it (`getPeerCertificate()` of the TLS socket). */
export interface PeerCertificate {
  raw: Buffer;
  /** SHA-256 of `raw`, colon-separated hex (OpenSSL's). */
  fingerprint256: string;
  /** notAfter, e.g. `Nov 30 07:00:00 2027 GMT`. */
  valid_to: string;
}

export interface ClientIdentities {
  /** The agent id of a certificate; throws what `verify` throws for one that fails it. */
  agentOf(cert: PeerCertificate): string;
}

/** Enough for the largest fleet; past it the oldest entries go (and are verified again). */
const DEFAULT_MAX_ENTRIES = 100_000;

export function createClientIdentities(options: {
  /** The full check: the agent id of a certificate this CA issued and that is valid now. */
  verify(der: Buffer): string;
  maxEntries?: number;
  now?: () => number;
}): ClientIdentities {
  const max = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
  const now = options.now ?? Date.now;
  const verified = new Map<string, { agentId: string; notAfterMs: number }>();
  return {
    agentOf(cert) {
      const hit = verified.get(cert.fingerprint256);
      // Only the end of validity can change for a certificate that passed (it was already valid).
      if (hit && now() <= hit.notAfterMs) return hit.agentId;
      verified.delete(cert.fingerprint256);
      const agentId = options.verify(cert.raw);
      const notAfterMs = Date.parse(cert.valid_to);
      if (Number.isFinite(notAfterMs)) {
        if (verified.size >= max) verified.delete(verified.keys().next().value!);
        verified.set(cert.fingerprint256, { agentId, notAfterMs });
      }
      return agentId;
    },
  };
}

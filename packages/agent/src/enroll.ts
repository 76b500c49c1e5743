import 'reflect-metadata';
import { KeyObject, webcrypto } from 'node:crypto';
import { AgentServiceClient, type EnrollResponse } from '@bulkhead/proto';
import { credentials, Metadata } from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import type { Logger } from 'pino';
import type { Endpoint } from './endpoints.js';
import { AgentError } from './errors.js';
import { describeError, isPermanent } from './retry.js';
import { readFileIfExists, statePath, writeFileAtomic } from './state.js';

// The DOM's Crypto type is not in this project's lib; Node's webcrypto is what x509 needs.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[1]);
type KeyPair = Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'];

/** Name the control plane always puts in its certificate's SANs. */
export const DEFAULT_SERVER_NAME = 'bulkhead-control-plane';

/** What the agent needs for mTLS on the Sync stream; kept in the state dir. */
export interface Identity {
  agentId: string;
  keyPem: string;
  certPem: string;
  caPem: string;
}

export interface EnrollOptions {
  /** The control plane address to enrol with; asked once per attempt (see Endpoints). */
  target: () => Promise<Endpoint>;
  /** PEM of the CA that signed the control plane's server certificate. */
  caPem: string;
  serverName: string;
  bootstrapToken: string | undefined;
  hostname: string;
  addresses: string[];
  labels: Record<string, string>;
  agentVersion: string;
  stateDir: string;
  logger: Logger;
  deadlineMs?: number;
}

/** The identity stored in the state dir, or undefined when any part of it is missing. */
export async function loadIdentity(stateDir: string): Promise<Identity | undefined> {
  const [id, key, cert, ca] = await Promise.all(
    (['agentId', 'key', 'cert', 'ca'] as const).map((f) =>
      readFileIfExists(statePath(stateDir, f)),
    ),
  );
  if (!id || !key || !cert || !ca) return undefined;
  return {
    agentId: id.toString('utf8').trim(),
    keyPem: key.toString('utf8'),
    certPem: cert.toString('utf8'),
    caPem: ca.toString('utf8'),
  };
}

/**
 * Enrol once: with an identity in the state dir this only loads it. Otherwise generate a
 * P-256 key (it never leaves the host), send a CSR with the bootstrap token over
 * server-authenticated TLS, and store what comes back. Throws AgentError ENROLL_REFUSED when
 * the control plane refused the request itself (bad token, hostname or label: retrying the
 * same request cannot help), ENROLL_FAILED for anything that may heal.
 */
export async function ensureIdentity(options: EnrollOptions): Promise<Identity> {
  const existing = await loadIdentity(options.stateDir);
  if (existing) return existing;
  if (!options.bootstrapToken) {
    throw new AgentError(
      'CONFIG_INVALID',
      `no identity in ${options.stateDir} and no bootstrap token to enrol with (--bootstrap-token or --bootstrap-token-file)`,
    );
  }
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ])) as KeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${escapeDn(options.hostname)}`,
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  const keyPem = KeyObject.from(keys.privateKey as webcrypto.CryptoKey)
    .export({ type: 'pkcs8', format: 'pem' })
    .toString();

  const response = await callEnroll(options, (await options.target()).target, csr.toString('pem'));
  if (!response.agentId || !response.certificatePem) {
    throw new AgentError('ENROLL_FAILED', 'control plane answered without agent id or certificate');
  }
  const identity: Identity = {
    agentId: response.agentId,
    keyPem,
    certPem: response.certificatePem,
    caPem: response.caPem || options.caPem,
  };
  // The key first and the agent id last: loadIdentity needs all four, so a crash in
  // between means enrolling again rather than holding a certificate without its key.
  const dir = options.stateDir;
  await writeFileAtomic(statePath(dir, 'key'), identity.keyPem);
  await writeFileAtomic(statePath(dir, 'cert'), identity.certPem);
  await writeFileAtomic(statePath(dir, 'ca'), identity.caPem);
  await writeFileAtomic(statePath(dir, 'agentId'), `${identity.agentId}\n`);
  options.logger.info(
    { agentId: identity.agentId, workloadId: response.workloadId },
    'enrolled with the control plane',
  );
  return identity;
}

function escapeDn(value: string): string {
  return value.replace(/[,+="\\<>;#]/g, (c) => `\\${c}`);
}

function callEnroll(
  options: EnrollOptions,
  target: string,
  csrPem: string,
): Promise<EnrollResponse> {
  const client = new AgentServiceClient(target, credentials.createSsl(Buffer.from(options.caPem)), {
    'grpc.ssl_target_name_override': options.serverName,
  });
  return new Promise<EnrollResponse>((resolve, reject) => {
    client.enroll(
      {
        bootstrapToken: options.bootstrapToken ?? '',
        hostname: options.hostname,
        addresses: options.addresses,
        labels: options.labels,
        csrPem,
        agentVersion: options.agentVersion,
      },
      new Metadata(),
      { deadline: Date.now() + (options.deadlineMs ?? 15_000) },
      (err, res) => {
        client.close();
        if (err) {
          const { code, details } = describeError(err);
          reject(
            isPermanent(err)
              ? new AgentError(
                  'ENROLL_REFUSED',
                  `the control plane refused the enrolment (${code}): ${details}`,
                  { cause: err },
                )
              : new AgentError('ENROLL_FAILED', `enrolment failed (${code}): ${details}`, {
                  cause: err,
                }),
          );
        } else resolve(res);
      },
    );
  });
}

// A stand-in control plane for agent tests: a real grpc-js server with TLS from a test CA on
// 127.0.0.1, that records what agents send and can be told how to answer (Welcome or not,
// refuse Enroll or Sync with a status) and be stopped and started again on the same port.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import type { FakeNft } from '@bulkhead/nftables/testing';
import {
  type AgentServiceServer,
  AgentServiceService,
  type EnrollRequest,
  type SyncRequest,
  type SyncResponse,
} from '@bulkhead/proto';
import {
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServiceError,
  type status,
} from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import type { Logger } from 'pino';
import type { AgentOptions } from './agent.js';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
type Keys = Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0]['keys'];

async function keys(): Promise<Keys> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as Keys;
}

async function pkcs8Pem(key: Keys['privateKey']): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key as webcrypto.CryptoKey);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

/** Polls cond every 20 ms; the failure names what never happened. */
export async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 250; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`gave up waiting for: ${what}`);
}

export interface Refusal {
  code: status;
  details: string;
}

export interface TestControlPlane {
  /** Address start() listens on (127.0.0.1); change it between stop() and start() to move. */
  host: string;
  readonly port: number;
  readonly caPem: string;
  enrolls: EnrollRequest[];
  received: SyncRequest[];
  streams: ServerDuplexStream<SyncRequest, SyncResponse>[];
  /** The messages of one kind received so far, in order. */
  of<K extends keyof SyncRequest>(kind: K): NonNullable<SyncRequest[K]>[];
  /** Answer each Hello with a Welcome (today's control plane); false: one that predates it. */
  welcome: boolean;
  /**
   * Telemetry acks, for an agent whose Hello asks: none (a control plane that predates them),
   * each batch as it arrives, or only those `ackTelemetry` names.
   */
  telemetryAcks: 'none' | 'auto' | 'manual';
  /** Acks a telemetry batch on the newest stream. */
  ackTelemetry(seq: number): void;
  /** Refuse every Enroll with this status. */
  enrollError: Refusal | undefined;
  /** Refuse every Sync stream with this status as soon as it opens. */
  syncError: Refusal | undefined;
  /** Clears what was recorded and restores the default answers. */
  reset(): void;
  /** Stops listening (open streams are cut); start() listens on the same port again. */
  stop(): Promise<void>;
  start(): Promise<void>;
}

export async function startControlPlane(): Promise<TestControlPlane> {
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[1]);
  const now = Date.now();
  const validity = { notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000) };
  const caKeys = await keys();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=test-ca',
    keys: caKeys,
    signingAlgorithm: ALG,
    ...validity,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
  });
  const srvKeys = await keys();
  const srv = await x509.X509CertificateGenerator.create({
    serialNumber: '02',
    subject: 'CN=bulkhead-control-plane',
    issuer: ca.subject,
    publicKey: srvKeys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: ALG,
    ...validity,
    extensions: [
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'bulkhead-control-plane' }]),
    ],
  });
  const srvKeyPem = await pkcs8Pem(srvKeys.privateKey);
  let serial = 10;
  let server: Server | undefined;

  const cp: TestControlPlane = {
    host: '127.0.0.1',
    port: 0,
    caPem: ca.toString('pem'),
    enrolls: [],
    received: [],
    streams: [],
    of: (kind) => cp.received.flatMap((m) => (m[kind] === undefined ? [] : [m[kind]!])),
    welcome: true,
    telemetryAcks: 'none',
    ackTelemetry: (seq) => cp.streams.at(-1)!.write({ telemetryAck: { seq } }),
    enrollError: undefined,
    syncError: undefined,
    reset() {
      cp.enrolls.length = 0;
      cp.received.length = 0;
      cp.streams.length = 0;
      cp.welcome = true;
      cp.telemetryAcks = 'none';
      cp.enrollError = undefined;
      cp.syncError = undefined;
    },
    async start() {
      if (server) return;
      const s = new Server();
      s.addService(AgentServiceService, impl);
      const port = await new Promise<number>((resolve, reject) =>
        s.bindAsync(
          `${cp.host}:${cp.port}`,
          ServerCredentials.createSsl(
            null,
            [{ private_key: Buffer.from(srvKeyPem), cert_chain: Buffer.from(srv.toString('pem')) }],
            false,
          ),
          (err, p) => (err ? reject(err) : resolve(p)),
        ),
      );
      server = s;
      (cp as { port: number }).port = port;
    },
    stop() {
      const s = server;
      server = undefined;
      s?.forceShutdown();
      return Promise.resolve();
    },
  };

  const refusal = (r: Refusal): Partial<ServiceError> => ({ code: r.code, details: r.details });
  const impl: AgentServiceServer = {
    enroll: (call, cb) => {
      cp.enrolls.push(call.request);
      if (cp.enrollError) {
        cb(refusal(cp.enrollError), null);
        return;
      }
      const csr = new x509.Pkcs10CertificateRequest(call.request.csrPem);
      x509.X509CertificateGenerator.create({
        serialNumber: String(serial++),
        subject: csr.subject,
        issuer: ca.subject,
        publicKey: csr.publicKey,
        signingKey: caKeys.privateKey,
        signingAlgorithm: ALG,
        ...validity,
      }).then(
        (cert) =>
          cb(null, {
            agentId: 'agent-1',
            workloadId: 'web-1',
            certificatePem: cert.toString('pem'),
            caPem: cp.caPem,
          }),
        (err) => cb(err, null),
      );
    },
    sync: (call: ServerDuplexStream<SyncRequest, SyncResponse>) => {
      call.on('error', () => undefined);
      if (cp.syncError) {
        call.emit('error', refusal(cp.syncError));
        return;
      }
      cp.streams.push(call);
      call.on('data', (m: SyncRequest) => {
        cp.received.push(m);
        if (m.hello && cp.welcome) {
          const telemetryAcks = m.hello.telemetryAcks && cp.telemetryAcks !== 'none';
          call.write({ welcome: { agentId: 'agent-1', workloadId: 'web-1', telemetryAcks } });
        }
        if (m.telemetry && cp.telemetryAcks === 'auto')
          call.write({ telemetryAck: { seq: m.telemetry.seq } });
      });
    },
  };

  await cp.start();
  return cp;
}

/** Options of an agent that talks to `cp`, on the fake kernel, with short backoff. */
export function testAgentOptions(
  cp: TestControlPlane,
  o: {
    stateDir: string;
    kernel: FakeNft;
    logger: Logger;
    token?: string | null;
  } & Partial<AgentOptions>,
): AgentOptions {
  const { stateDir, kernel, logger, token = 'tok-1', ...rest } = o;
  return {
    controlPlane: `127.0.0.1:${cp.port}`,
    caPem: cp.caPem,
    bootstrapToken: token ?? undefined,
    stateDir,
    hostname: 'web-1.test',
    addresses: ['10.0.0.5'],
    labels: { app: 'web' },
    admin: { cidrs: ['10.8.0.0/16'], port: 22 },
    metricsListen: { host: '127.0.0.1', port: 0 },
    telemetryIntervalMs: 50,
    nftBackend: 'auto',
    serverName: 'bulkhead-control-plane',
    logger,
    driver: kernel,
    backoff: { baseMs: 20, capMs: 100 },
    ...rest,
  };
}
